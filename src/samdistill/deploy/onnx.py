"""ONNX export, verified against PyTorch with onnxruntime: promptable models as two graphs,
prompt-free students (KnowSAM) as one.

``model.onnx`` (prompt-free): ``images Bx3xHxW`` (preprocessed; dynamic batch and size, H and W
multiples of 16) -> ``logits BxCxHxW`` (class logits) and ``foreground Bx1xHxW`` (foreground log-odds).

``encoder.onnx``: ``images Bx3xSxS`` (preprocessed, dynamic batch) -> ``embeddings BxCxgxg`` (C = 256, or
256 + a packed detail map for a student with a detail path: :mod:`samdistill.models.students.detail`).
``decoder.onnx``: ``embeddings 1xCxgxg``, ``point_coords NxPx2``, ``point_labels NxP`` (both dynamic
N prompts of P points) -> ``low_res_logits Nx1x4gx4g``, ``iou NxM``. Labels follow segment-anything's
ONNX convention: 1 foreground point, 0 background point, 2 / 3 box top-left / bottom-right corner,
-1 padding. Coordinates are in the input frame (``preprocess.json`` says how to get there).

Reparameterisable blocks (RepViT and friends) are fused first with timm's ``reparameterize_model``.

An export owns its folder: it is built in a temporary sibling and moved into place only once every graph
is written and verified (a failure leaves the folder as it was); a non-empty folder is refused unless
``force``, which replaces it as a whole. ``manifest.json`` names every file written (role, sha256, bytes),
the kind, opset, source model and versions; :func:`read_export` is how every loader recognises the
folder, and it refuses one whose files no longer match their hashes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from samdistill.dice import dice
from samdistill.errors import UserError

FORMAT = "samdistill-onnx/1"
MANIFEST = "manifest.json"
# roles of the graph files for each kind, in the order they are listed
GRAPH_ROLES = {"promptable": ("encoder", "decoder"), "promptfree": ("model",)}
# a step on the staged folder after the graphs are verified: (folder, report) -> (report, extra manifest fields)
Finish = Callable[[Path, dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]]


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


def export_promptfree(model, out_dir: str | Path, *, opset: int = 17, seed: int = 0, force: bool = False,
                      source: str | None = None) -> dict[str, Any]:
    """Write ``model.onnx``, ``preprocess.json``, ``verification.json`` and ``manifest.json`` for a
    prompt-free student into ``out_dir`` (whole or not at all; non-empty refused unless ``force``).
    ``source``: the model as the user named it, recorded in the manifest. Returns the verification report."""
    return _export("promptfree", _write_promptfree, model, out_dir, opset=opset, seed=seed, force=force,
                   source=source)


def _write_promptfree(model, out: Path, *, opset: int, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
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
                           "dice_agreement": _agreement(ref_fg, got_fg)})
    report = {"checks": checks, "max_abs_diff": max(c["max_abs_diff"] for c in checks),
              "min_dice_agreement": min(c["dice_agreement"] for c in checks)}
    spec = {"family": model.family, "kind": "promptfree", "preprocess": model.preprocess.to_dict(),
            "num_classes": model.num_classes,
            "frames": "input: resize longest side to input_size, normalise, pad bottom/right; outputs in that frame"}
    return report, spec


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


def _agreement(ref: np.ndarray, got: np.ndarray) -> float:
    """Dice of the foregrounds (> 0) of two outputs, pooled over all their masks (flattened to one row)."""
    return dice((ref > 0).reshape(1, -1), (got > 0).reshape(1, -1))


def export_promptable(model, out_dir: str | Path, *, opset: int = 17, seed: int = 0, force: bool = False,
                      source: str | None = None, finish: Finish | None = None) -> dict[str, Any]:
    """Write ``encoder.onnx``, ``decoder.onnx``, ``preprocess.json``, ``verification.json`` and
    ``manifest.json`` into ``out_dir`` (whole or not at all; non-empty refused unless ``force``).
    ``source``: the model as the user named it, recorded in the manifest. ``finish``: a step run on the
    staged folder after the fp32 graphs are verified (e.g. :func:`samdistill.deploy.quantize.int8_step`).
    Returns the verification report."""
    return _export("promptable", _write_promptable, model, out_dir, opset=opset, seed=seed, force=force,
                   source=source, finish=finish)


def export_onnx(model, out_dir: str | Path, *, opset: int = 17, seed: int = 0, force: bool = False,
                source: str | None = None, finish: Finish | None = None) -> dict[str, Any]:
    """Export either kind of model in the graph layout its kind needs (see ``GRAPH_ROLES``): a prompt-free
    model as one graph (:func:`export_promptfree`), a promptable one as encoder + decoder
    (:func:`export_promptable`). ``finish``: see :func:`export_promptable`. Returns the verification report."""
    if getattr(model, "kind", None) == "promptfree":
        if finish is not None:
            raise UserError("--int8 is for promptable students for now; export this prompt-free model without --int8")
        return export_promptfree(model, out_dir, opset=opset, seed=seed, force=force, source=source)
    return export_promptable(model, out_dir, opset=opset, seed=seed, force=force, source=source, finish=finish)


def _write_promptable(model, out: Path, *, opset: int, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
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

        def export_encoder(dynamic: bool) -> None:
            torch.onnx.export(enc, (x,), str(out / "encoder.onnx"), input_names=["images"], output_names=["embeddings"],
                              dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}} if dynamic else None,
                              opset_version=opset, dynamo=False)

        export_encoder(True)
        # an encoder whose code reads the batch size as a Python int (TinyViT's `B = len(x)`, LiteMedSAM's
        # encoder) traces to a graph for batch 1 only: export it as such and let the Predictor loop over images
        encoder_batch = None if _runs_at_batch(out / "encoder.onnx", x) else 1
        if encoder_batch == 1:
            export_encoder(False)
        coords, labels = boxes_to_points(torch.tensor([[s * 0.2, s * 0.25, s * 0.7, s * 0.8]]))
        torch.onnx.export(dec, (emb, coords, labels), str(out / "decoder.onnx"),
                          input_names=["embeddings", "point_coords", "point_labels"],
                          output_names=["low_res_logits", "iou"],
                          dynamic_axes={"point_coords": {0: "prompts", 1: "points"},
                                        "point_labels": {0: "prompts", 1: "points"},
                                        "low_res_logits": {0: "prompts"}, "iou": {0: "prompts"}},
                          opset_version=opset, dynamo=False)
    report = verify_promptable(model, out, seed=seed, encoder_batches=(1,) if encoder_batch == 1 else (1, 2))
    spec = {"family": model.family, "preprocess": model.preprocess.to_dict(), "embedding_grid": g,
            "encoder_batch": encoder_batch,
            "low_res_size": 4 * g, "labels": {"1": "foreground point", "0": "background point",
                                               "2": "box top-left", "3": "box bottom-right", "-1": "padding"},
            "frames": "coords in the input frame: resize longest side to input_size (or stretch), pad bottom/right"}
    return report, spec


def _runs_at_batch(path: Path, x: torch.Tensor, batch: int = 2) -> bool:
    """Whether the graph at ``path`` runs on a batch of ``batch`` copies of ``x`` (a dynamic batch axis that holds)."""
    import onnxruntime as ort

    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # the failure is the answer, not an error to print
    try:
        _session(path).run(None, {"images": x.expand(batch, -1, -1, -1).numpy()}, quiet)
        return True
    except Exception:
        return False


@torch.no_grad()
def verify_promptable(model, out: Path, *, seed: int = 0, encoder_batches: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """Compare onnxruntime with PyTorch on two input shapes for each graph (the encoder at batch 1 only
    when it was exported for batch 1)."""
    enc_s, dec_s = _session(out / "encoder.onnx"), _session(out / "decoder.onnx")
    s = model.input_size
    gen = torch.Generator().manual_seed(seed + 1)
    checks = []
    for batch in encoder_batches:
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
                       "max_abs_diff": float(np.abs(ref - got).max()), "dice_agreement": _agreement(ref, got)})
    return {"checks": checks, "max_abs_diff": max(c["max_abs_diff"] for c in checks),
            "min_dice_agreement": min(c.get("dice_agreement", 1.0) for c in checks)}


# ---------------------------------------------------------------------------------------- the folder
_ROLE_OF = {"encoder.onnx": "encoder", "decoder.onnx": "decoder", "model.onnx": "model",
            "preprocess.json": "preprocess", "verification.json": "verification"}
_ROLE_ORDER = ("encoder", "decoder", "model", "preprocess", "verification")


def _export(kind: str, write: Callable[..., tuple[dict[str, Any], dict[str, Any]]], model, out_dir: str | Path, *,
            opset: int, seed: int, force: bool, source: str | None, finish: Finish | None = None) -> dict[str, Any]:
    """Write one export into a staged sibling of ``out_dir``; it replaces ``out_dir`` only when the graphs,
    their verification, the specs and the manifest are all written. ``finish(folder, report)`` may then
    rewrite the graphs in the staged folder and returns (the report to store, extra manifest fields)."""
    from samdistill.atomic import staged_dir

    out = Path(out_dir)
    with staged_dir(out, force=force, owned_by="samdistill export", keep=[source], sub="onnx") as tmp:
        report, spec = write(model, tmp, opset=opset, seed=seed)
        extra: dict[str, Any] = {}
        if finish is not None:
            report, extra = finish(tmp, report)
        (tmp / "preprocess.json").write_text(json.dumps(spec, indent=2))
        (tmp / "verification.json").write_text(json.dumps(report, indent=2))
        manifest = _manifest(tmp, kind, family=getattr(model, "family", None), opset=opset, source=source,
                             report=report) | extra
        zoom = (getattr(model, "provenance", None) or {}).get("zoom")
        if zoom:  # distilled on crops (data.zoom): the Predictor zooms the same by default
            manifest["zoom"] = zoom
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return report


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _portable_source(source: str | None) -> str | None:
    """The source as the user gave it; an absolute path is made relative to the current folder when it lies
    under it, else cut to its file name, so a manifest does not carry this machine's folders."""
    if source is None:
        return None
    p = Path(source)
    if not p.is_absolute():
        return str(source)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return p.name


def _manifest(folder: Path, kind: str, *, family: str | None, opset: int, source: str | None,
              report: dict[str, Any]) -> dict[str, Any]:
    import torch as _torch

    from samdistill import __version__

    # every file in the folder, so external weight files of a >2 GB graph are hashed too
    names = sorted((p.name for p in folder.iterdir() if p.is_file()),
                   key=lambda n: (_ROLE_ORDER.index(_ROLE_OF[n]) if n in _ROLE_OF else len(_ROLE_ORDER), n))
    files = [{"name": n, "role": _ROLE_OF.get(n, "external_data"), "sha256": _sha256(folder / n),
              "bytes": (folder / n).stat().st_size} for n in names]
    return {"format": FORMAT, "kind": kind, "family": family, "source": _portable_source(source), "opset": opset,
            "files": files, "preprocess": "preprocess.json",
            "verification": {"file": "verification.json", "max_abs_diff": report["max_abs_diff"],
                             "min_dice_agreement": report["min_dice_agreement"]},
            "samdistill_version": __version__, "torch_version": _torch.__version__}


@dataclass(frozen=True)
class ExportFolder:
    """A folder written by ``samdistill export``, as :func:`read_export` found it."""

    folder: Path
    kind: str                       # "promptable" | "promptfree"
    graphs: dict[str, Path]         # role ("encoder", "decoder" or "model") -> graph file
    preprocess: dict[str, Any]      # preprocess.json
    files: list[str] = field(default_factory=list)  # what the export wrote, manifest.json last
    manifest: dict[str, Any] | None = None          # None: an older export without one


def _reexport(folder: Path, source: str | None = None) -> str:
    return f"re-export: samdistill export {source or 'MODEL'} --out {folder} --force"


def read_export(folder: str | Path, *, check: bool = True) -> ExportFolder:
    """Recognise an export folder by its ``manifest.json`` (``check``: every file it names present with its
    sha256). A folder without one (an older samdistill) is read only when unambiguous: ``model.onnx``
    alone, or ``encoder.onnx`` + ``decoder.onnx`` alone. Anything else is a one-line ``UserError``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder written by `samdistill export`")
    if (folder / MANIFEST).exists():
        return _read_manifest(folder, check)
    have = sorted(n for n in ("model.onnx", "encoder.onnx", "decoder.onnx") if (folder / n).is_file())
    if not have:
        raise UserError(f"{folder} holds no encoder.onnx/decoder.onnx (or model.onnx); export with `samdistill export`")
    if have == ["model.onnx"]:
        kind, graphs = "promptfree", {"model": folder / "model.onnx"}
    elif have == ["decoder.onnx", "encoder.onnx"]:
        kind, graphs = "promptable", {"encoder": folder / "encoder.onnx", "decoder": folder / "decoder.onnx"}
    else:
        raise UserError(f"{folder} holds {', '.join(have)} and no {MANIFEST} (written by an older samdistill, "
                        f"perhaps over another export), so which model it is is unclear; {_reexport(folder)}")
    if not (folder / "preprocess.json").is_file():
        raise UserError(f"{folder} has {', '.join(have)} but no preprocess.json; {_reexport(folder)}")
    spec = _read_json(folder / "preprocess.json", folder, None)
    files = [n for n in (*[g.name for g in graphs.values()], "preprocess.json", "verification.json")
             if (folder / n).is_file()]
    return ExportFolder(folder=folder, kind=kind, graphs=graphs, preprocess=spec, files=files)


def _read_json(path: Path, folder: Path, source: str | None) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); {_reexport(folder, source)}") from None


def _read_manifest(folder: Path, check: bool) -> ExportFolder:
    m = _read_json(folder / MANIFEST, folder, None)
    fmt = m.get("format") if isinstance(m, dict) else None
    if not isinstance(fmt, str) or not fmt.startswith("samdistill-onnx/"):
        raise UserError(f"{folder / MANIFEST} is not a samdistill export manifest (no format "
                        f"'{FORMAT}'); {_reexport(folder)}")
    if fmt != FORMAT:
        raise UserError(f"{folder / MANIFEST} is format {fmt}, which this samdistill does not read (it reads "
                        f"{FORMAT}); upgrade samdistill or {_reexport(folder)}")
    source = m.get("source") if isinstance(m.get("source"), str) else None
    kind, files = m.get("kind"), m.get("files")
    bad = None
    if kind not in GRAPH_ROLES:
        bad = f"kind {kind!r} is not promptable or promptfree"
    elif not isinstance(files, list) or not all(
            isinstance(f, dict) and isinstance(f.get("name"), str) and isinstance(f.get("sha256"), str)
            for f in files):
        bad = "'files' is not a list of {name, role, sha256}"
    elif any(Path(f["name"]).name != f["name"] or f["name"] in ("", ".", "..") for f in files):
        bad = "a file name points outside the folder"  # never open what a manifest names elsewhere
    if bad is None:
        roles = [f.get("role") for f in files]
        missing = [r for r in (*GRAPH_ROLES[kind], "preprocess") if roles.count(r) != 1]
        if missing:
            bad = f"it names no single {'/'.join(missing)} file for a {kind} export"
    if bad:
        raise UserError(f"{folder / MANIFEST} is damaged: {bad}; {_reexport(folder, source)}")
    if check:
        for f in files:
            p = folder / f["name"]
            if not p.is_file():
                raise UserError(f"{p} is missing (named in {MANIFEST}); {_reexport(folder, source)}")
            if ("bytes" in f and p.stat().st_size != f["bytes"]) or _sha256(p) != f["sha256"]:
                raise UserError(f"{p} has changed since it was exported (sha256 differs from {MANIFEST}); "
                                f"{_reexport(folder, source)}")
    by_role = {f.get("role"): folder / f["name"] for f in files}
    pre = by_role["preprocess"]
    if not pre.is_file():
        raise UserError(f"{pre} is missing (named in {MANIFEST}); {_reexport(folder, source)}")
    return ExportFolder(folder=folder, kind=kind, graphs={r: by_role[r] for r in GRAPH_ROLES[kind]},
                        preprocess=_read_json(pre, folder, source), files=[f["name"] for f in files] + [MANIFEST],
                        manifest=m)
