"""ONNX export, verified against PyTorch with onnxruntime: promptable models as two graphs,
prompt-free students (KnowSAM) as one.

``model.onnx`` (prompt-free): ``images Bx3xHxW`` (preprocessed; dynamic batch and size, H and W
multiples of 16) -> ``logits BxCxHxW`` (class logits) and ``foreground Bx1xHxW`` (foreground log-odds).

``encoder.onnx``: ``images Bx3xSxS`` (preprocessed, dynamic batch) -> ``embeddings Bx256xgxg``.
``decoder.onnx``: ``embeddings 1x256xgxg``, ``point_coords NxPx2``, ``point_labels NxP`` (both dynamic
N prompts of P points) -> ``low_res_logits Nx1x4gx4g``, ``iou NxM``. Labels follow segment-anything's
ONNX convention: 1 foreground point, 0 background point, 2 / 3 box top-left / bottom-right corner,
-1 padding. Coordinates are in the input frame (``preprocess.json`` says how to get there).

Reparameterisable blocks (RepViT and friends) are fused first with timm's ``reparameterize_model``.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from samdistill.errors import UserError


class EncoderGraph(nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.image_encoder = model.image_encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(images)


class DecoderGraph(nn.Module):
    """Prompt encoder + mask decoder with points/boxes as labelled points (export-only wrapper)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.input_size = float(model.input_size)

    def _sparse(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pe = self.prompt_encoder
        emb = pe.pe_layer._pe_encoding((coords + 0.5) / self.input_size)
        lab = labels.unsqueeze(-1).to(emb.dtype)
        emb = emb * (lab != -1).to(emb.dtype) + pe.not_a_point_embed.weight * (lab == -1).to(emb.dtype)
        for i in range(pe.num_point_embeddings):
            emb = emb + pe.point_embeddings[i].weight * (lab == i).to(emb.dtype)
        return emb

    def forward(self, embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor):
        sparse = self._sparse(point_coords, point_labels)
        n = point_coords.shape[0]
        g = embeddings.shape[-1]
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(n, -1, g, g)
        masks, iou = self.mask_decoder.predict_masks(
            image_embeddings=embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )
        return masks[:, :1], iou


class PromptFreeGraph(nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        logits = self.model(images)
        fg = torch.logsumexp(logits[:, 1:], dim=1, keepdim=True) - logits[:, :1]
        return logits, fg


def export_promptfree(model, out_dir: str | Path, *, opset: int = 17, seed: int = 0) -> dict[str, Any]:
    """Write ``model.onnx``, ``preprocess.json`` and ``verification.json`` for a prompt-free student."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).eval().cpu()
    graph = PromptFreeGraph(model).eval()
    s = model.input_size
    x = torch.rand(1, 3, s, s, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (x,), str(out / "model.onnx"), input_names=["images"],
                          output_names=["logits", "foreground"],
                          dynamic_axes={n: {0: "batch", 2: "height", 3: "width"} for n in ("images", "logits", "foreground")},
                          opset_version=opset, dynamo=False)
    sess = _session(out / "model.onnx")
    gen = torch.Generator().manual_seed(seed + 1)
    checks = []
    with torch.no_grad():
        for shape in ((1, 3, s, s), (2, 3, s // 2, s)):
            x = torch.rand(*shape, generator=gen)
            ref_logits, ref_fg = (t.numpy() for t in graph(x))
            got_logits, got_fg = sess.run(None, {"images": x.numpy()})
            checks.append({"graph": "model", "shape": list(shape),
                           "max_abs_diff": float(max(np.abs(ref_logits - got_logits).max(), np.abs(ref_fg - got_fg).max())),
                           "dice_agreement": _dice(ref_fg > 0, got_fg > 0)})
    report = {"checks": checks, "max_abs_diff": max(c["max_abs_diff"] for c in checks),
              "min_dice_agreement": min(c["dice_agreement"] for c in checks)}
    spec = {"family": model.family, "kind": "promptfree", "preprocess": model.preprocess.to_dict(),
            "num_classes": model.num_classes,
            "frames": "input: resize longest side to input_size, normalise, pad bottom/right; outputs in that frame"}
    (out / "preprocess.json").write_text(json.dumps(spec, indent=2))
    (out / "verification.json").write_text(json.dumps(report, indent=2))
    return report


def boxes_to_points(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Nx4`` boxes -> (``Nx2x2`` corner coords, ``Nx2`` labels 2, 3)."""
    coords = boxes.reshape(-1, 2, 2)
    labels = torch.tensor([[2, 3]], dtype=torch.int64).expand(coords.shape[0], -1)
    return coords, labels


def _session(path: Path):
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("onnxruntime is needed to verify the export: pip install 'samdistill[deploy]'") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)


def export_promptable(model, out_dir: str | Path, *, opset: int = 17, seed: int = 0) -> dict[str, Any]:
    """Write ``encoder.onnx``, ``decoder.onnx``, ``preprocess.json`` and ``verification.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).eval().cpu()
    backbone = getattr(model.image_encoder, "backbone", None)
    if backbone is not None:  # a timm student: fuse RepVGG-style branches and conv+BN pairs
        from timm.utils import reparameterize_model

        model.image_encoder.backbone = reparameterize_model(backbone)
    s, g = model.input_size, model.embedding_grid
    enc, dec = EncoderGraph(model).eval(), DecoderGraph(model).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, s, s, generator=gen)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        emb = enc(x)
        torch.onnx.export(enc, (x,), str(out / "encoder.onnx"), input_names=["images"], output_names=["embeddings"],
                          dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}}, opset_version=opset,
                          dynamo=False)
        coords, labels = boxes_to_points(torch.tensor([[s * 0.2, s * 0.25, s * 0.7, s * 0.8]]))
        torch.onnx.export(dec, (emb, coords, labels), str(out / "decoder.onnx"),
                          input_names=["embeddings", "point_coords", "point_labels"],
                          output_names=["low_res_logits", "iou"],
                          dynamic_axes={"point_coords": {0: "prompts", 1: "points"},
                                        "point_labels": {0: "prompts", 1: "points"},
                                        "low_res_logits": {0: "prompts"}, "iou": {0: "prompts"}},
                          opset_version=opset, dynamo=False)
    report = verify_promptable(model, out, seed=seed)
    spec = {"family": model.family, "preprocess": model.preprocess.to_dict(), "embedding_grid": g,
            "low_res_size": 4 * g, "labels": {"1": "foreground point", "0": "background point",
                                               "2": "box top-left", "3": "box bottom-right", "-1": "padding"},
            "frames": "coords in the input frame: resize longest side to input_size (or stretch), pad bottom/right"}
    (out / "preprocess.json").write_text(json.dumps(spec, indent=2))
    (out / "verification.json").write_text(json.dumps(report, indent=2))
    return report


@torch.no_grad()
def verify_promptable(model, out: Path, *, seed: int = 0) -> dict[str, Any]:
    """Compare onnxruntime with PyTorch on two input shapes for each graph."""
    enc_s, dec_s = _session(out / "encoder.onnx"), _session(out / "decoder.onnx")
    s = model.input_size
    gen = torch.Generator().manual_seed(seed + 1)
    checks = []
    for batch in (1, 2):
        x = torch.rand(batch, 3, s, s, generator=gen)
        ref = model.encode(x).numpy()
        got = enc_s.run(None, {"images": x.numpy()})[0]
        checks.append({"graph": "encoder", "shape": list(x.shape), "max_abs_diff": float(np.abs(ref - got).max())})
    emb = model.encode(torch.rand(1, 3, s, s, generator=gen))
    boxes = torch.tensor([[s * 0.1, s * 0.1, s * 0.6, s * 0.5], [s * 0.3, s * 0.2, s * 0.9, s * 0.95],
                          [s * 0.05, s * 0.4, s * 0.5, s * 0.9]])
    pts = (torch.tensor([[[s * 0.5, s * 0.5], [s * 0.1, s * 0.9]]]), torch.tensor([[1, 0]]))
    cases = [("1 box", boxes[:1], None), ("3 boxes", boxes, None), ("points", None, pts)]
    for name, b, p in cases:
        if b is not None:
            coords, labels = boxes_to_points(b)
            ref, _ = model.decode(emb.expand(b.shape[0], -1, -1, -1), boxes=b)
        else:
            coords, labels = p
            # segment-anything pads point-only prompts with one (0, 0) point of label -1
            coords = torch.cat([coords, torch.zeros(1, 1, 2)], 1)
            labels = torch.cat([labels, -torch.ones(1, 1, dtype=torch.int64)], 1)
            ref, _ = model.decode(emb, points=p)
        got = dec_s.run(None, {"embeddings": emb.numpy(), "point_coords": coords.numpy().astype(np.float32),
                               "point_labels": labels.numpy().astype(np.int64)})[0]
        ref = ref.numpy()
        checks.append({"graph": "decoder", "case": name, "shape": list(got.shape),
                       "max_abs_diff": float(np.abs(ref - got).max()), "dice_agreement": _dice(ref > 0, got > 0)})
    return {"checks": checks, "max_abs_diff": max(c["max_abs_diff"] for c in checks),
            "min_dice_agreement": min(c.get("dice_agreement", 1.0) for c in checks)}
