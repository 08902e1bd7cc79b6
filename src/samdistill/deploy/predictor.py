"""``Predictor``: one image encoded once, many prompts decoded in one batch; PyTorch or ONNX backend.

    p = Predictor.load("runs/x/student.pt")      # or the folder written by `samdistill export`
    p.set_image(image)                           # HxW[x3]; the embedding is computed here, once
    masks, iou = p.predict(boxes=[[x0, y0, x1, y1], ...])   # original pixels -> N x H x W bool

A prompt-free student (KnowSAM; a checkpoint or an exported ``model.onnx``) segments in ``set_image``
and ``predict()`` takes no prompt: ``masks`` is ``1 x H x W``, ``iou`` is NaN.

``zoom=M`` (promptable models): a box is segmented on the square crop of M x its longer side around it
(:func:`samdistill.data.prompts.zoom_window`) instead of the whole image, so a small structure covers more of
the embedding grid; the mask comes back at the original size (nothing outside the crop). ``set_image`` then
only keeps the image; the first ``predict`` encodes the crop, and later prompts reuse that embedding while
they lie inside the crop at a similar scale (a next click, a corrective point), else the crop is encoded anew.
Point-only prompts have no scale: their crop is the whole image. A student distilled on such crops (the recipe
key ``data.zoom``) says so in its checkpoint and its export's manifest, and ``zoom="auto"`` (the default of
``load``, ``from_torch`` and ``from_onnx``) takes that value; ``zoom=None`` (or 0) segments the whole image.

Prompts are in original image pixels; a box or point outside the image is an error, not a clip.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samdistill.errors import UserError, listing
from samdistill.models.preprocess import Preprocess, image_shape_problem
from samdistill.models.segmenter import segmenter


def check_zoom(value: float | None, *, prompt_free: bool, name: str) -> float | None:
    """A zoom margin as given (None or 0: the whole image) -> the margin, or None; a one-line error for a
    margin below 1 or not a number, and for any margin on a prompt-free model (no box to crop around)."""
    if value is None or value == 0:  # 0: the CLI's --zoom 0, the whole image whatever the model was trained with
        return None
    if prompt_free:
        raise UserError(f"{name} is a prompt-free model: zoom needs a box to crop around")
    if not np.isfinite(value) or value < 1:
        raise UserError(f"zoom must be a number >= 1 (the crop's side over the box's longer side), got {value}")
    return float(value)


def resolve_zoom(zoom: float | None | str, recorded: float | None, *, prompt_free: bool, name: str) -> float | None:
    """The zoom a model is used with: ``"auto"`` the margin it records (``recorded``: a student distilled on
    crops, ``data.zoom``, carries it in its checkpoint or export manifest; never for a prompt-free model), else
    ``zoom`` checked by :func:`check_zoom`."""
    if zoom == "auto":
        return None if prompt_free else recorded
    return check_zoom(zoom, prompt_free=prompt_free, name=name)


def model_zoom(model, zoom: float | None | str, name: str) -> float | None:
    """:func:`resolve_zoom` for a PyTorch ``model`` (its recorded zoom is in its checkpoint's provenance)."""
    seg = segmenter(model)
    return resolve_zoom(zoom, (getattr(model, "provenance", None) or {}).get("zoom"),
                        prompt_free=seg is not None and seg.prompt_free, name=name)


class Predictor:
    def __init__(self, *, preprocess: Preprocess, encode, decode, name: str, backend: str,
                 prompt_free: bool = False, zoom: float | None = None) -> None:
        self.preprocess, self._encode, self._decode = preprocess, encode, decode
        self.name, self.backend, self.prompt_free = name, backend, prompt_free
        self._embedding: np.ndarray | None = None
        self._hw: tuple[int, int] | None = None
        self._image: np.ndarray | None = None  # zoom: the image, kept until a prompt says where to crop
        self._window: tuple[int, int, int, int] | None = None  # zoom: the crop the embedding is of
        #: ms the last ``set_image`` or ``predict`` spent preprocessing + encoding (0: it reused an embedding)
        self.last_encode_ms = 0.0
        self.zoom = zoom

    @property
    def zoom(self) -> float | None:
        """The zoom margin (None: the whole image is encoded, the default)."""
        return self._zoom

    @zoom.setter
    def zoom(self, value: float | None) -> None:
        self._zoom = check_zoom(value, prompt_free=self.prompt_free, name=self.name)
        self._embedding = self._image = self._window = None  # an embedding of the other kind is not reused
        self._hw = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, model: str | Path, *, checkpoint: str | None = None, threads: int | None = None,
             zoom: float | None | str = "auto") -> "Predictor":
        """A model name, checkpoint or export folder. ``zoom``: ``"auto"`` the zoom the model was distilled
        with (none for most), ``None``/0 the whole image, a number >= 1 that zoom."""
        p = Path(str(model))
        if p.is_dir():  # an export folder: from_onnx reads its manifest (and refuses one that is not)
            return cls.from_onnx(p, threads=threads, zoom=zoom)
        from samdistill.models.zoo import load_model

        return cls.from_torch(load_model(model, checkpoint=checkpoint), name=p.stem if p.is_file() else str(model),
                              zoom=zoom)

    @classmethod
    def from_torch(cls, model, name: str = "model", zoom: float | None | str = "auto") -> "Predictor":
        seg = segmenter(model)
        if seg is None:
            raise UserError(f"{name} is not a segmentation model")
        model.eval()

        @torch.no_grad()
        def encode(x: np.ndarray) -> np.ndarray:  # a prompt-free model segments here: its logits are the state
            return seg.encode(torch.from_numpy(x)).numpy()

        decode = None
        if not seg.prompt_free:
            from samdistill.deploy.onnx import DecoderGraph

            graph = DecoderGraph(model).eval()  # built once: the same prompt path as the exported decoder

            @torch.no_grad()
            def decode(emb: np.ndarray, coords: np.ndarray, labels: np.ndarray):
                low, iou = graph(torch.from_numpy(emb), torch.from_numpy(coords), torch.from_numpy(labels))
                return low.numpy(), iou.numpy()

        return cls(preprocess=model.preprocess, encode=encode, decode=decode, name=name, backend="torch",
                   prompt_free=seg.prompt_free, zoom=model_zoom(model, zoom, name))

    @classmethod
    def from_onnx(cls, folder: str | Path, threads: int | None = None, zoom: float | None | str = "auto") -> "Predictor":
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError("the ONNX backend needs onnxruntime: pip install 'samdistill[deploy]'") from None
        from samdistill.deploy.onnx import read_export

        folder = Path(folder)
        # the manifest says which graphs make the model (and their hashes): never a stale file beside them
        export = read_export(folder)
        spec = export.preprocess
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        # onnxruntime's worker threads otherwise spin for a while after each run, on the cores the mask's
        # postprocess (torch) needs next: a next click measured 3x slower with spinning on
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")

        def session(path: Path):
            try:
                return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            except Exception as exc:  # a damaged graph in a folder without a manifest to catch it first
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise UserError(f"{path} cannot be loaded by onnxruntime ({first}); re-export it with "
                                f"`samdistill export MODEL --out {folder} --force`") from None

        # the export of a student distilled on crops carries its zoom in the manifest
        zoom = resolve_zoom(zoom, (export.manifest or {}).get("zoom"), prompt_free=export.kind == "promptfree",
                            name=folder.name)
        if export.kind == "promptfree":
            sess = session(export.graphs["model"])
            return cls(preprocess=Preprocess.from_dict(spec["preprocess"]),
                       encode=lambda x: sess.run(["foreground"], {"images": x})[0], decode=None,
                       name=folder.name, backend="onnx", prompt_free=True, zoom=zoom)
        enc, dec = session(export.graphs["encoder"]), session(export.graphs["decoder"])

        def encode(x: np.ndarray) -> np.ndarray:
            if spec.get("encoder_batch") == 1:  # a graph traced for one image: one run per image
                return np.concatenate([enc.run(None, {"images": x[i : i + 1]})[0] for i in range(x.shape[0])])
            return enc.run(None, {"images": x})[0]

        def decode(emb, coords, labels):
            low, iou = dec.run(None, {"embeddings": emb, "point_coords": coords, "point_labels": labels})
            return low, iou

        # an int8 export (samdistill export --int8) says so in its manifest
        int8 = (export.manifest or {}).get("precision") == "int8"
        return cls(preprocess=Preprocess.from_dict(spec["preprocess"]), encode=encode, decode=decode,
                   name=folder.name, backend="onnx-int8" if int8 else "onnx", zoom=zoom)

    # ------------------------------------------------------------------ use
    def set_image(self, image: np.ndarray) -> None:
        """Preprocess and encode ``image`` once; later ``predict`` calls only run the decoder. With ``zoom``
        the image is kept and the first ``predict`` encodes the crop its prompt asks for."""
        arr = np.asarray(image)
        if (bad := image_shape_problem(arr)) is not None:  # zoom keeps it unencoded: fail here, not in predict
            raise UserError(bad)
        self._hw = (int(arr.shape[0]), int(arr.shape[1]))
        self._embedding = self._window = None
        self.last_encode_ms = 0.0
        if self._zoom is not None:
            self._image = arr
            return
        self._embed(arr)

    def _embed(self, arr: np.ndarray) -> None:
        t = time.perf_counter()
        self._embedding = self._encode(self.preprocess.image(arr)[None].numpy())
        self.last_encode_ms = (time.perf_counter() - t) * 1e3

    def get_state(self) -> tuple | None:
        """The encoded image (embedding, size; with zoom also the image and the crop), to keep per image and
        hand back with ``set_state``."""
        if self._hw is None:
            return None
        return (self._embedding, self._hw) if self._zoom is None else (self._embedding, self._hw, self._image,
                                                                       self._window, self._zoom)

    def set_state(self, state: tuple) -> None:
        """Make a state from ``get_state`` current again: ``predict`` then needs no new ``set_image``."""
        if len(state) != (2 if self._zoom is None else 5) or (self._zoom is not None and state[4] != self._zoom):
            raise UserError("this state was taken with another zoom setting; call set_image(image) again")
        if self._zoom is None:
            self._embedding, self._hw = state
        else:
            self._embedding, self._hw, self._image, self._window, _ = state

    def _zoomed(self, boxes: np.ndarray | None, points: np.ndarray | None) -> tuple[int, int, int, int]:
        """Make ``self._embedding`` the embedding of a crop fit for these prompts (original pixels); its window.

        The crop is :func:`~samdistill.data.prompts.prompts_window` (the zoom window of the box around every box
        and point; the whole image for points alone). The current crop is kept when every prompt lies inside it and its side is at
        most twice the new crop's (the same object at about the same scale: a next click, a corrective point)."""
        from samdistill.data.prompts import prompts_window

        want = prompts_window(boxes, points, self._hw, self._zoom)
        have = self._window
        if have is not None and self._embedding is not None:
            xy = [b.reshape(-1, 2) for b in (boxes, points) if b is not None]
            pts = np.concatenate(xy)
            inside = ((pts >= [have[0], have[1]]) & (pts <= [have[2] - 1, have[3] - 1])).all()
            scale = max(have[2] - have[0], have[3] - have[1]) <= 2 * max(want[2] - want[0], want[3] - want[1])
            if inside and scale:
                return have
        x0, y0, x1, y1 = want
        self._embed(np.ascontiguousarray(self._image[y0:y1, x0:x1]))
        self._window = want
        return want

    def predict(self, boxes=None, points=None, labels=None) -> tuple[np.ndarray, np.ndarray]:
        """Boxes ``Nx4`` and/or points ``Nx P x 2`` (+ labels ``NxP``, 1 fg / 0 bg) in original pixels.

        Returns ``(masks NxHxW bool, iou N)``, all prompts decoded in one batch.
        """
        if self._embedding is None and (self._zoom is None or self._image is None):
            raise UserError("call set_image(image) before predict()")
        self.last_encode_ms = 0.0  # set again below if this call encodes (a zoom crop)
        hw = self._hw
        if self.prompt_free:
            if boxes is not None or points is not None:
                raise UserError(f"{self.name} is a prompt-free model; call predict() without boxes or points")
            logits = self.preprocess.logits_to_original(torch.from_numpy(np.ascontiguousarray(self._embedding)), hw)
            return (logits[:, 0] > 0).numpy(), np.full(1, np.nan)
        b = pts = None
        if boxes is not None:
            b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            if (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
                raise UserError(f"boxes must be x0, y0, x1, y1 with x1 >= x0 and y1 >= y0: {b.tolist()}")
            check_inside(b.reshape(-1, 2, 2), self._hw, "box")
        if points is not None:
            pts = np.asarray(points, dtype=np.float64)
            pts = pts.reshape(-1, 1, 2) if pts.ndim == 2 else pts
            check_inside(pts, self._hw, "point")
        if b is None and pts is None:
            raise UserError("give boxes or points")
        if b is not None and pts is not None and len(pts) != len(b):
            raise UserError("with boxes and points together, give one row of points per box")
        if self._zoom is not None and b is not None and len(b) > 1:
            return self._predict_each(b, pts, labels)
        window = None
        if self._zoom is not None:  # decode on the crop: prompts in its frame, the mask pasted back below
            window = self._zoomed(b, pts)
            hw = (window[3] - window[1], window[2] - window[0])
            if b is not None:
                b = b - [window[0], window[1], window[0], window[1]]
            if pts is not None:
                pts = pts - [window[0], window[1]]
        parts_c, parts_l = [], []
        if b is not None:
            parts_c.append(self.preprocess.boxes_to_input(b, hw).reshape(-1, 2, 2))
            parts_l.append(np.tile(np.array([[2, 3]]), (len(b), 1)))
        if pts is not None:
            lab = np.ones(pts.shape[:2], np.int64) if labels is None else np.asarray(labels).reshape(pts.shape[:2])
            pts_in = self.preprocess.points_to_input(pts, hw)
            if boxes is not None:  # points refine the boxes: one prompt = box corners + its points
                parts_c[0] = np.concatenate([parts_c[0], pts_in], 1)
                parts_l[0] = np.concatenate([parts_l[0], lab], 1)
            else:  # segment-anything pads point-only prompts with a (0, 0) point labelled -1
                parts_c.append(np.concatenate([pts_in, np.zeros((len(pts_in), 1, 2))], 1))
                parts_l.append(np.concatenate([lab, -np.ones((len(pts_in), 1), np.int64)], 1))
        coords = parts_c[0].astype(np.float32)
        labs = parts_l[0].astype(np.int64)
        low, iou = self._decode(self._embedding, coords, labs)
        logits = self.preprocess.logits_to_original(torch.from_numpy(np.ascontiguousarray(low)), hw)
        masks = (logits[:, 0] > 0).numpy()
        if window is not None:
            full = np.zeros((len(masks),) + self._hw, dtype=bool)
            full[:, window[1]:window[3], window[0]:window[2]] = masks
            masks = full
        return masks, np.asarray(iou)[:, 0]

    def _predict_each(self, b: np.ndarray, pts: np.ndarray | None, labels) -> tuple[np.ndarray, np.ndarray]:
        """Zoom with several boxes: each box (with its row of points) on its own crop, as the student was
        distilled; a shared crop around boxes far apart would show each object small again. One encoder
        pass per crop (``last_encode_ms``: their sum); the last crop stays encoded."""
        lab = None if labels is None or pts is None else np.asarray(labels).reshape(pts.shape[:2])
        masks, ious, encode_ms = [], [], 0.0
        for i in range(len(b)):
            m, q = self.predict(b[i:i + 1], None if pts is None else pts[i:i + 1],
                                None if lab is None else lab[i:i + 1])
            masks.append(m)
            ious.append(q)
            encode_ms += self.last_encode_ms
        self.last_encode_ms = encode_ms
        return np.concatenate(masks), np.concatenate(ious)


def check_inside(xy: np.ndarray, hw: tuple[int, int], what: str) -> None:
    """``UserError`` when any ``(x, y)`` in ``xy`` (``...x2``, original pixels) lies outside an ``h x w`` image."""
    h, w = hw
    xy = np.asarray(xy, dtype=np.float64)
    if not np.isfinite(xy).all():  # NaN compares False with everything, so it would pass the bounds below
        raise UserError(f"{what} not a finite number: {xy.reshape(-1, 2).tolist()}")
    if (xy[..., 0] < 0).any() or (xy[..., 1] < 0).any() or (xy[..., 0] > w - 1).any() or (xy[..., 1] > h - 1).any():
        raise UserError(f"{what} outside the {w}x{h} image: {xy.reshape(-1, 2).tolist()}")


#: The keys of one image's prompts in a JSON prompt file.
PROMPT_KEYS = ("boxes", "points", "labels")
_ENTRY_SHAPE = '{"boxes": [[x0, y0, x1, y1], ...], "points": [[x, y], ...], "labels": [1, 0, ...]}'
_JSON_SHAPE = '{"image.png": ' + _ENTRY_SHAPE + "}"


def _short(value: Any, n: int = 80) -> str:
    s = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return s if len(s) <= n else s[: n - 3] + "..."


def _numbers(value: Any, what: str, where: str) -> np.ndarray:
    """Nested lists of finite numbers -> float64 array. Strings and booleans are refused, not coerced
    (``np.asarray(["2"], float)`` would silently read a string)."""

    def walk(v: Any) -> None:
        if isinstance(v, np.ndarray):
            if v.dtype.kind not in "iuf":
                raise UserError(f"{where}: {what} must be numbers, got an array of {v.dtype}")
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        elif isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise UserError(f"{where}: {what} must be numbers, got {_short(v)} in {_short(value)}")

    walk(value)
    try:
        arr = np.array(value, dtype=np.float64)
    except ValueError:  # ragged lists
        raise UserError(f"{where}: the rows of {what} differ in length: {_short(value)}") from None
    if not np.isfinite(arr).all():
        raise UserError(f"{where}: {what} holds a value that is not a finite number (NaN or inf): {_short(value)}")
    return arr


def check_prompt(entry: Any, where: str) -> dict[str, np.ndarray]:
    """One image's prompts ``{"boxes": Nx4, "points": Px2 or NxPx2, "labels": like points}`` checked
    (shape, finite numbers, x1 >= x0 and y1 >= y0, labels 0/1 matching the points) and returned as arrays.

    A ``Px2`` list of points is P prompts of one point each (as ``Predictor.predict``); with boxes, one
    point (or one list of points) per box refines that box. ``where`` starts each error message.
    """
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected an object like {_ENTRY_SHAPE}, got {_short(entry)}")
    unknown = sorted(set(map(str, entry)) - set(PROMPT_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; the keys are {', '.join(PROMPT_KEYS)}")
    out: dict[str, np.ndarray] = {}
    if entry.get("boxes") is not None:
        b = _numbers(entry["boxes"], "boxes", where)
        if b.ndim != 2 or b.shape[1] != 4 or len(b) == 0:
            raise UserError(f"{where}: boxes must be a non-empty list of [x0, y0, x1, y1], got {_short(entry['boxes'])}")
        if (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
            raise UserError(f"{where}: a box must be x0, y0, x1, y1 with x1 >= x0 and y1 >= y0: {_short(b)}")
        out["boxes"] = b
    if entry.get("points") is not None:
        p = _numbers(entry["points"], "points", where)
        if p.ndim not in (2, 3) or p.shape[-1] != 2 or p.size == 0:
            raise UserError(f"{where}: points must be a non-empty list of [x, y] pairs (or one list of pairs per "
                            f"prompt), got {_short(entry['points'])}")
        if entry.get("labels") is None:
            lab = np.ones(p.shape[:-1], np.int64)
        else:
            lab_f = _numbers(entry["labels"], "labels", where)
            if lab_f.shape != p.shape[:-1]:
                raise UserError(f"{where}: labels must give one 0/1 per point (shape {list(p.shape[:-1])}), "
                                f"got {_short(entry['labels'])}")
            if not np.isin(lab_f, (0, 1)).all():
                raise UserError(f"{where}: labels are 1 (object) or 0 (background), got {_short(entry['labels'])}")
            lab = lab_f.astype(np.int64)
        if "boxes" in out and len(p) != len(out["boxes"]):
            raise UserError(f"{where}: with boxes and points together give one point (or one list of points) per "
                            f"box: {len(out['boxes'])} boxes, {len(p)} points")
        out["points"], out["labels"] = p, lab
    elif entry.get("labels") is not None:
        raise UserError(f"{where}: labels without points")
    if not out:
        raise UserError(f"{where}: gives no boxes or points")
    return out


def read_prompt_file(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """CSV ``image,x0,y0,x1,y1`` (one box per row; Windows line endings and an Excel UTF-8 BOM are fine)
    or JSON ``{image: {"boxes": [...], "points": [...], "labels": [...]}}``; keys are file names or stems.

    Every value is checked here (see :func:`check_prompt`), before any image is read: a bad row or entry is
    a ``UserError`` naming the CSV line or the JSON key. Whether a box lies inside its image is checked
    by :func:`plan_predictions`, from the image headers.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"prompt file not found: {p}")
    try:
        text = p.read_bytes().decode("utf-8-sig")  # -sig: Excel's "CSV UTF-8" starts with a byte order mark
    except UnicodeDecodeError as exc:
        raise UserError(f"prompt file {p} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as "
                        "UTF-8 (Excel: 'CSV UTF-8')") from None
    if p.suffix.lower() == ".json":
        return _read_prompt_json(p, text)
    return _read_prompt_csv(p, text)


def _read_prompt_json(p: Path, text: str) -> dict[str, dict[str, np.ndarray]]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for k, v in pairs:
            if k in seen:
                raise UserError(f"prompt file {p}: key {k!r} appears twice")
            seen[k] = v
        return seen

    try:
        data = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise UserError(f"prompt file {p} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"prompt file {p} must be a JSON object {_JSON_SHAPE}, got a {type(data).__name__}")
    if not data:
        raise UserError(f"prompt file {p} holds no prompts")
    return {str(k): check_prompt(v, f"{p} [{k!r}]") for k, v in data.items()}


def _read_prompt_csv(p: Path, text: str) -> dict[str, dict[str, np.ndarray]]:
    import csv
    import io

    need = ("image", "x0", "y0", "x1", "y1")
    reader = csv.reader(io.StringIO(text, newline=""))  # newline="": the csv module reads \r\n itself
    header: list[str] | None = None
    boxes: dict[str, list[np.ndarray]] = {}
    try:
        for row in reader:
            cells = [c.strip() for c in row]
            if not any(cells):  # blank line, or Excel's ",,,," row
                continue
            if header is None:
                header = cells
                if not set(need) <= set(header):
                    raise UserError(f"prompt CSV {p} needs the columns {','.join(need)} (got {','.join(header)})")
                col = {k: header.index(k) for k in need}
                continue
            where = f"{p} line {reader.line_num}"
            if len(cells) < len(header):
                raise UserError(f"{where}: {len(cells)} values, the header has {len(header)} ({','.join(header)})")
            if len(cells) > len(header) and any(cells[len(header):]):
                raise UserError(f"{where}: {len(cells)} values, the header has {len(header)} ({','.join(header)})")
            name = cells[col["image"]]
            if not name:
                raise UserError(f"{where}: the image column is empty")
            try:
                box = [float(cells[col[k]]) for k in need[1:]]
            except ValueError:
                raise UserError(f"{where}: box values must be numbers: {','.join(row)}") from None
            boxes.setdefault(name, []).append(check_prompt({"boxes": [box]}, where)["boxes"][0])
    except csv.Error as exc:
        raise UserError(f"prompt CSV {p} line {reader.line_num}: {exc}") from None
    if header is None or not boxes:
        raise UserError(f"prompt CSV {p} holds no prompts (header {','.join(need)}, then one box per row)")
    return {k: {"boxes": np.stack(v)} for k, v in boxes.items()}


def list_images(input: str | Path) -> list[Path]:
    """The images of a folder (sorted; suffixes ``IMAGE_EXTS``), or ``[input]`` for one file."""
    from samdistill.data.images import IMAGE_EXTS

    p = Path(input)
    if not p.exists():
        raise UserError(f"input not found: {p}")
    if not p.is_dir():
        if p.suffix.lower() not in IMAGE_EXTS:
            raise UserError(f"{p} is not an image ({', '.join(IMAGE_EXTS)}; volumes: .nii, .nii.gz, a DICOM folder)")
        return [p]
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS and f.is_file())
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_EXTS)}) in {p}")
    return files


def check_output_names(inputs: list[Path]) -> None:
    """``UserError`` listing the inputs that would write the same ``masks/<stem>.png`` (``a.png``, ``a.jpg``).

    Stems are compared case-folded: ``A.png`` and ``a.jpg`` collide on macOS/Windows file systems."""
    groups: dict[str, list[Path]] = {}
    for f in inputs:
        groups.setdefault(Path(f).stem.casefold(), []).append(Path(f))
    clashes = [g for g in groups.values() if len(g) > 1]
    if clashes:
        listed = "; ".join(" and ".join(f.name for f in g) for g in clashes)
        raise UserError(f"inputs with the same name would write the same masks/<name>.png: {listed}; rename them "
                        "or predict them into separate --out folders")


def image_size(path: str | Path) -> tuple[int, int]:
    """``(h, w)`` of an image from its header, without decoding the pixels; ``DataError`` when unreadable
    or over the pixel limit (the one check in :func:`samdistill.data.images.open_image`)."""
    from samdistill.data.images import open_image
    from samdistill.errors import DataError

    p = Path(path)
    if not p.is_file():
        raise DataError(f"image not found: {p}", str(p))
    if p.stat().st_size == 0:
        raise DataError(f"image is an empty file: {p}", str(p))
    with open_image(p, f"image {p}", decode=False) as im:
        w, h = im.size
    return int(h), int(w)


_SKIP_HINT = "; pass --on-error skip to skip such images and segment the rest"  # on_error="skip" in Python


@dataclass
class PredictionPlan:
    """What :func:`plan_predictions` found: the images to segment with their checked prompts, the ones
    skipped (file name, reason), and prompt keys that match no input."""

    inputs: list[Path] = field(default_factory=list)
    jobs: list[tuple[Path, dict[str, np.ndarray]]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unused_prompts: list[str] = field(default_factory=list)


def _input_order(plan: PredictionPlan, name: str) -> int:
    names = [f.name for f in plan.inputs]
    return names.index(name) if name in names else len(names)


def plan_predictions(inputs: list[Path], prompts: dict[str, dict] | None, *, prompt_free: bool,
                     on_error: str = "raise", source: str = "the prompt file") -> PredictionPlan:
    """Everything checked before any model runs: output names, one prompt per input (keys are file names
    or stems), prompt values, each image's header and each box/point inside it.

    A missing prompt or an unreadable image is a ``UserError`` (``on_error="raise"``) or a counted skip
    (``"skip"``); a bad prompt value is always an error. Prompt keys that match no input are returned in
    ``unused_prompts`` (the CLI warns), since one prompt file may cover more images than one call segments.
    """
    from samdistill.errors import DataError

    if on_error not in ("raise", "skip"):
        raise UserError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    inputs = [Path(f) for f in inputs]
    check_output_names(inputs)
    table = {str(k): check_prompt(v, f"{source} [{k!r}]") for k, v in (prompts or {}).items()}
    if prompt_free and table:
        raise UserError("a prompt-free model takes no prompts; drop them (--prompts)")
    plan = PredictionPlan(inputs=inputs)
    used: set[str] = set()
    matched: list[tuple[Path, dict[str, np.ndarray]]] = []
    missing: list[Path] = []
    for f in inputs:
        if prompt_free:
            matched.append((f, {}))
            continue
        keys = [k for k in dict.fromkeys((f.name, f.stem)) if k in table]
        if len(keys) > 1:
            raise UserError(f"{source} has prompts for {f.name} under both {keys[0]!r} and {keys[1]!r}; keep one")
        if not keys:
            missing.append(f)
            continue
        used.add(keys[0])
        matched.append((f, table[keys[0]]))
    plan.unused_prompts = [k for k in table if k not in used]
    if missing:
        if on_error == "raise":
            raise UserError(f"no prompt in {source} for {len(missing)} of {len(inputs)} images: "
                            f"{listing([f.name for f in missing])} (keys are file names or stems){_SKIP_HINT}")
        plan.skipped += [(f.name, f"no prompt in {source}") for f in missing]
    for f, pr in matched:
        try:
            hw = image_size(f)
        except DataError as exc:
            if on_error == "raise":
                raise DataError(f"{exc}{_SKIP_HINT}", exc.path) from None
            plan.skipped.append((f.name, str(exc)))
            continue
        if "boxes" in pr:
            check_inside(pr["boxes"].reshape(-1, 2, 2), hw, f"{source}: a box for {f.name} lies")
        if "points" in pr:
            check_inside(pr["points"], hw, f"{source}: a point for {f.name} lies")
        plan.jobs.append((f, pr))
    plan.skipped.sort(key=lambda s: _input_order(plan, s[0]))
    if not plan.jobs:
        raise UserError(f"no image could be segmented: all {len(inputs)} skipped ({listing([s[0] for s in plan.skipped])})")
    return plan


def _predict_into(predictor: Predictor, plan: PredictionPlan, out: Path, *, on_error: str,
                  progress: bool) -> dict[str, Any]:
    """Segment ``plan.jobs`` into the (empty, staged) folder ``out``; images that fail to decode are
    skipped or raise as ``on_error`` says."""
    import csv

    from PIL import Image
    from tqdm import tqdm

    from samdistill.data.images import read_image
    from samdistill.errors import DataError
    from samdistill.viz.overlays import overlay

    (out / "masks").mkdir(parents=True, exist_ok=True)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    skipped = list(plan.skipped)
    for path, pr in tqdm(plan.jobs, desc=f"predict ({predictor.backend})", unit="img", disable=not progress):
        try:
            image = read_image(path)  # the header read fine; the pixels may still be truncated
        except DataError as exc:
            if on_error == "raise":
                raise DataError(f"{exc}{_SKIP_HINT}", exc.path) from None
            skipped.append((path.name, str(exc)))
            continue
        predictor.set_image(image)
        masks, iou = predictor.predict(boxes=pr.get("boxes"), points=pr.get("points"), labels=pr.get("labels"))
        union = masks.any(0)
        Image.fromarray((union * 255).astype(np.uint8)).save(out / "masks" / f"{path.stem}.png")
        Image.fromarray(overlay(image, [union])).save(out / "overlays" / f"{path.stem}.png")
        rows.append({"image": path.name, "prompts": len(masks), "area_px": int(union.sum()),
                     "mean_iou_pred": float(np.mean(iou))})
    if not rows:
        raise UserError(f"no image could be segmented: all {len(skipped)} skipped ({listing([s[0] for s in skipped])})")
    with open(out / "areas.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "prompts", "area_px", "mean_iou_pred"])
        w.writeheader()
        w.writerows(rows)
    if on_error == "skip":  # always written under skip, so a script can read it without checking it exists
        skipped.sort(key=lambda s: _input_order(plan, s[0]))
        with open(out / "skipped.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["file", "reason"])
            w.writerows(skipped)
    return {"images": rows, "skipped": skipped, "unused_prompts": list(plan.unused_prompts),
            "model": predictor.name, "backend": predictor.backend}


def predict_folder(predictor: Predictor, inputs: list[Path], prompts: dict[str, dict] | None, out_dir: str | Path,
                   progress: bool = True, *, on_error: str = "raise", force: bool = False) -> dict[str, Any]:
    """Masks (PNG, a file's prompts OR-ed), overlays and ``areas.csv`` for each input image; with
    ``on_error="skip"`` also ``skipped.csv`` (file, reason).

    Everything is checked first (:func:`plan_predictions`); the folder is built in a temporary sibling and
    moved into place whole (``staged_dir``): a failure leaves ``out_dir`` as it was, and a non-empty
    ``out_dir`` is refused unless ``force``. Returns ``{"images": rows, "skipped": [(file, reason)],
    "unused_prompts": [...], "model", "backend", "out"}``.
    """
    from samdistill.atomic import staged_dir

    plan = plan_predictions(inputs, prompts, prompt_free=predictor.prompt_free, on_error=on_error)
    with staged_dir(out_dir, force=force, owned_by="samdistill predict", keep=inputs, sub="predictions") as tmp:
        result = _predict_into(predictor, plan, tmp, on_error=on_error, progress=progress)
    return {**result, "out": str(out_dir)}


def predict_images(model: str | Path, input: str | Path, prompts: str | Path | None, out_dir: str | Path, *,
                   checkpoint: str | Path | None = None, threads: int | None = None, on_error: str = "raise",
                   force: bool = False, progress: bool = True, zoom: float | None | str = "auto") -> dict[str, Any]:
    """``samdistill predict`` on an image or a folder of images: list the inputs, read and check the prompt
    file, check every image header and prompt, and only then load the model and segment, into a staged
    ``out_dir`` (see :func:`predict_folder`). Without ``prompts`` the model must be prompt-free."""
    from samdistill.atomic import staged_dir
    from samdistill.machine import num_threads

    files = list_images(input)
    check_output_names(files)  # before the prompt file is even read
    table = read_prompt_file(prompts) if prompts is not None else None
    source = str(prompts) if prompts is not None else "the prompt file"
    plan = plan_predictions(files, table, prompt_free=table is None, on_error=on_error, source=source)
    # --force never replaces a folder holding the images, the prompt file or the model being run
    with staged_dir(out_dir, force=force, owned_by="samdistill predict", keep=[input, prompts, model, checkpoint],
                    sub="predictions") as tmp:
        with num_threads(threads):
            pred = Predictor.load(model, checkpoint=str(checkpoint) if checkpoint else None, threads=threads, zoom=zoom)
            if pred.prompt_free and table is not None:
                raise UserError(f"{pred.name} is a prompt-free model; drop --prompts")
            if not pred.prompt_free and table is None:
                raise UserError("images need --prompts (a CSV image,x0,y0,x1,y1 or a JSON file)")
            result = _predict_into(pred, plan, tmp, on_error=on_error, progress=progress)
    return {**result, "out": str(out_dir)}
