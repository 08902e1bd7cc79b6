"""``Predictor``: one image encoded once, many prompts decoded in one batch; PyTorch or ONNX backend.

    p = Predictor.load("runs/x/student.pt")      # or the folder written by `samdistill export`
    p.set_image(image)                           # HxW[x3]; the embedding is computed here, once
    masks, iou = p.predict(boxes=[[x0, y0, x1, y1], ...])   # original pixels -> N x H x W bool

A prompt-free student (KnowSAM; a checkpoint or an exported ``model.onnx``) segments in ``set_image``
and ``predict()`` takes no prompt: ``masks`` is ``1 x H x W``, ``iou`` is NaN.

Prompts are in original image pixels; a box or point outside the image is an error, not a clip.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samdistill.errors import UserError
from samdistill.models.preprocess import Preprocess


class Predictor:
    def __init__(self, *, preprocess: Preprocess, encode, decode, name: str, backend: str,
                 prompt_free: bool = False) -> None:
        self.preprocess, self._encode, self._decode = preprocess, encode, decode
        self.name, self.backend, self.prompt_free = name, backend, prompt_free
        self._embedding: np.ndarray | None = None
        self._hw: tuple[int, int] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, model: str | Path, *, checkpoint: str | None = None, threads: int | None = None) -> "Predictor":
        p = Path(str(model))
        if p.is_dir():
            if not (p / "encoder.onnx").exists() and not (p / "model.onnx").exists():
                raise UserError(f"{p} holds no encoder.onnx/decoder.onnx (or model.onnx); export with `samdistill export`")
            return cls.from_onnx(p, threads=threads)
        from samdistill.models.zoo import load_model

        return cls.from_torch(load_model(model, checkpoint=checkpoint), name=p.stem if p.is_file() else str(model))

    @classmethod
    def from_torch(cls, model, name: str = "model") -> "Predictor":
        kind = getattr(model, "kind", None)
        if kind == "promptfree":
            model = model.eval()

            @torch.no_grad()
            def segment(x: np.ndarray) -> np.ndarray:
                return model.foreground_logits(torch.from_numpy(x)).numpy()

            return cls(preprocess=model.preprocess, encode=segment, decode=None, name=name, backend="torch",
                       prompt_free=True)
        if kind != "promptable":
            raise UserError(f"{name} is not a segmentation model")
        model = model.eval()
        from samdistill.deploy.onnx import DecoderGraph

        graph = DecoderGraph(model).eval()  # built once: the same prompt path as the exported decoder

        @torch.no_grad()
        def encode(x: np.ndarray) -> np.ndarray:
            return model.encode(torch.from_numpy(x)).numpy()

        @torch.no_grad()
        def decode(emb: np.ndarray, coords: np.ndarray, labels: np.ndarray):
            low, iou = graph(torch.from_numpy(emb), torch.from_numpy(coords), torch.from_numpy(labels))
            return low.numpy(), iou.numpy()

        return cls(preprocess=model.preprocess, encode=encode, decode=decode, name=name, backend="torch")

    @classmethod
    def from_onnx(cls, folder: str | Path, threads: int | None = None) -> "Predictor":
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError("the ONNX backend needs onnxruntime: pip install 'samdistill[deploy]'") from None
        folder = Path(folder)
        spec = json.loads((folder / "preprocess.json").read_text())
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        if (folder / "model.onnx").exists():  # a prompt-free student
            sess = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
            return cls(preprocess=Preprocess.from_dict(spec["preprocess"]),
                       encode=lambda x: sess.run(["foreground"], {"images": x})[0], decode=None,
                       name=folder.name, backend="onnx", prompt_free=True)
        enc = ort.InferenceSession(str(folder / "encoder.onnx"), opts, providers=["CPUExecutionProvider"])
        dec = ort.InferenceSession(str(folder / "decoder.onnx"), opts, providers=["CPUExecutionProvider"])

        def encode(x: np.ndarray) -> np.ndarray:
            return enc.run(None, {"images": x})[0]

        def decode(emb, coords, labels):
            low, iou = dec.run(None, {"embeddings": emb, "point_coords": coords, "point_labels": labels})
            return low, iou

        return cls(preprocess=Preprocess.from_dict(spec["preprocess"]), encode=encode, decode=decode,
                   name=folder.name, backend="onnx")

    # ------------------------------------------------------------------ use
    def set_image(self, image: np.ndarray) -> None:
        """Preprocess and encode ``image`` once; later ``predict`` calls only run the decoder."""
        arr = np.asarray(image)
        self._hw = (int(arr.shape[0]), int(arr.shape[1]))
        x = self.preprocess.image(arr)[None].numpy()
        self._embedding = self._encode(x)

    def get_state(self) -> tuple[np.ndarray, tuple[int, int]] | None:
        """The encoded image (embedding and size), to keep per image and hand back with ``set_state``."""
        return None if self._embedding is None else (self._embedding, self._hw)

    def set_state(self, state: tuple[np.ndarray, tuple[int, int]]) -> None:
        """Make a state from ``get_state`` current again: ``predict`` then needs no new ``set_image``."""
        self._embedding, self._hw = state

    def predict(self, boxes=None, points=None, labels=None) -> tuple[np.ndarray, np.ndarray]:
        """Boxes ``Nx4`` and/or points ``Nx P x 2`` (+ labels ``NxP``, 1 fg / 0 bg) in original pixels.

        Returns ``(masks NxHxW bool, iou N)``, all prompts decoded in one batch.
        """
        if self._embedding is None:
            raise UserError("call set_image(image) before predict()")
        hw = self._hw
        if self.prompt_free:
            if boxes is not None or points is not None:
                raise UserError(f"{self.name} is a prompt-free model; call predict() without boxes or points")
            logits = self.preprocess.logits_to_original(torch.from_numpy(np.ascontiguousarray(self._embedding)), hw)
            return (logits[:, 0] > 0).numpy(), np.full(1, np.nan)
        parts_c, parts_l = [], []
        if boxes is not None:
            b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            if (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
                raise UserError(f"boxes must be x0, y0, x1, y1 with x1 >= x0 and y1 >= y0: {b.tolist()}")
            check_inside(b.reshape(-1, 2, 2), self._hw, "box")
            parts_c.append(self.preprocess.boxes_to_input(b, hw).reshape(-1, 2, 2))
            parts_l.append(np.tile(np.array([[2, 3]]), (len(b), 1)))
        if points is not None:
            pts = np.asarray(points, dtype=np.float64)
            pts = pts.reshape(-1, 1, 2) if pts.ndim == 2 else pts
            lab = np.ones(pts.shape[:2], np.int64) if labels is None else np.asarray(labels).reshape(pts.shape[:2])
            check_inside(pts, self._hw, "point")
            pts_in = self.preprocess.points_to_input(pts, hw)
            if boxes is not None:  # points refine the boxes: one prompt = box corners + its points
                if len(pts_in) != len(parts_c[0]):
                    raise UserError("with boxes and points together, give one row of points per box")
                parts_c[0] = np.concatenate([parts_c[0], pts_in], 1)
                parts_l[0] = np.concatenate([parts_l[0], lab], 1)
            else:  # segment-anything pads point-only prompts with a (0, 0) point labelled -1
                parts_c.append(np.concatenate([pts_in, np.zeros((len(pts_in), 1, 2))], 1))
                parts_l.append(np.concatenate([lab, -np.ones((len(pts_in), 1), np.int64)], 1))
        if not parts_c:
            raise UserError("give boxes or points")
        coords = parts_c[0].astype(np.float32)
        labs = parts_l[0].astype(np.int64)
        low, iou = self._decode(self._embedding, coords, labs)
        logits = self.preprocess.logits_to_original(torch.from_numpy(np.ascontiguousarray(low)), hw)
        return (logits[:, 0] > 0).numpy(), np.asarray(iou)[:, 0]


def check_inside(xy: np.ndarray, hw: tuple[int, int], what: str) -> None:
    """``UserError`` when any ``(x, y)`` in ``xy`` (``...x2``, original pixels) lies outside an ``h x w`` image."""
    h, w = hw
    xy = np.asarray(xy, dtype=np.float64)
    if (xy[..., 0] < 0).any() or (xy[..., 1] < 0).any() or (xy[..., 0] > w - 1).any() or (xy[..., 1] > h - 1).any():
        raise UserError(f"{what} outside the {w}x{h} image: {xy.reshape(-1, 2).tolist()}")


def read_prompt_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """CSV ``image,x0,y0,x1,y1`` (one box per row) or JSON ``{image: {"boxes": [...], "points": [...]}}``."""
    import csv

    p = Path(path)
    if not p.is_file():
        raise UserError(f"prompt file not found: {p}")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"prompt file {p} is not valid JSON: {exc}") from None
        return {str(k): v for k, v in data.items()}
    out: dict[str, dict[str, Any]] = {}
    with open(p, newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"image", "x0", "y0", "x1", "y1"}
        if not need <= set(reader.fieldnames or []):
            raise UserError(f"prompt CSV {p} needs the columns image,x0,y0,x1,y1 (got {reader.fieldnames})")
        for i, row in enumerate(reader, start=2):
            try:
                box = [float(row[k]) for k in ("x0", "y0", "x1", "y1")]
            except ValueError:
                raise UserError(f"{p} line {i}: box values must be numbers: {row}") from None
            out.setdefault(row["image"], {"boxes": []})["boxes"].append(box)
    return out


def predict_folder(predictor: Predictor, inputs: list[Path], prompts: dict[str, dict], out_dir: str | Path,
                   progress: bool = True) -> list[dict[str, Any]]:
    """Masks (PNG, prompts OR-ed), overlays and ``areas.csv`` for each input image with prompts."""
    import csv

    from PIL import Image
    from tqdm import tqdm

    from samdistill.data.images import read_image
    from samdistill.eval.overlays import overlay

    out = Path(out_dir)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    rows = []
    for path in tqdm(inputs, desc=f"predict ({predictor.backend})", unit="img", disable=not progress):
        pr = {} if predictor.prompt_free else prompts.get(path.name) or prompts.get(path.stem)
        if pr is None:
            raise UserError(f"no prompt for {path.name} in the prompt file (keys are file names or stems)")
        image = read_image(path)
        predictor.set_image(image)
        masks, iou = predictor.predict(boxes=pr.get("boxes"), points=pr.get("points"), labels=pr.get("labels"))
        union = masks.any(0)
        Image.fromarray((union * 255).astype(np.uint8)).save(out / "masks" / f"{path.stem}.png")
        Image.fromarray(overlay(image, [union])).save(out / "overlays" / f"{path.stem}.png")
        rows.append({"image": path.name, "prompts": len(masks), "area_px": int(union.sum()),
                     "mean_iou_pred": float(np.mean(iou))})
    with open(out / "areas.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "prompts", "area_px", "mean_iou_pred"])
        w.writeheader()
        w.writerows(rows)
    return rows
