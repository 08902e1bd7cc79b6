"""The demo's request handlers, free of any web framework: image in, prompt in -> masks, timings, Dice.

    svc = DemoService({"litemedsam": Predictor.load("litemedsam"),
                       "student": Predictor.load("runs/x/student.pt")}, dataset=open_dataset("kvasir_seg"))
    info = svc.add_upload(open("polyp.png", "rb").read(), "polyp.png")
    out = svc.segment(info["image_id"], box=[40, 30, 200, 180])
    out["models"][1]["area_px"], out["models"][1]["next_click_ms"], out["dice_between"]

Each image is encoded once per model and its embedding kept for the session (``max_images`` most recent
images), so a new box only re-runs the decoders. Each model's row carries the two latencies a user feels
(DESIGN.md section 8b): ``next_click_ms``, this request's decoder + postprocess to the original size (None
for a prompt-free model: it takes no prompt), and, on the first request of an image for that model,
``first_click_ms`` = reading the file + preprocess + encoder + this request's decoder + postprocess. Every bad input raises :class:`DemoError` with the
message the page shows; the server answers it with HTTP 400 and stays up.
"""

from __future__ import annotations

import base64
import gzip
import io
import itertools
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from samdistill.errors import UserError
from samdistill.eval.metrics import dice

#: Stated limits: an upload larger than these is refused with a message, not decoded. Pixels and voxels are
#: checked on the decoded size, from the file's header before decoding; the demo's defaults are lower than
#: the CLI's (a shared server keeps 16 images and 2 volumes): 40 MP images, 2**27 = 134 M voxel volumes
#: (512 x 512 x 512; ~10 bytes per voxel, ~1.3 GB, at the peak of opening one). SAMDISTILL_MAX_PIXELS and
#: SAMDISTILL_MAX_VOXELS (pixels, voxels) override them, as they do the CLI's; the constructor's arguments
#: override both.
MAX_UPLOAD_MB = 64
MAX_IMAGE_MP = 40
MAX_VOLUME_MB = 512
MAX_VOLUME_VOXELS = 2**27


class DemoError(UserError):
    """Bad input to the demo; its message is shown on the page."""


@dataclass
class _Image:
    id: str
    name: str
    image: np.ndarray  # HxWx3 uint8
    gt: np.ndarray | None = None
    states: dict[str, tuple[Any, float]] = field(default_factory=dict)  # model -> (encoded state, encoder ms)
    read_ms: float = 0.0  # decoding the uploaded file (or reading the dataset item): part of the first click


@dataclass
class _Volume:
    id: str
    name: str
    data: np.ndarray  # X x Y x Z (as stored); slices along axis 2
    vol8: np.ndarray  # the same, windowed to uint8 once
    affine: np.ndarray
    header: Any
    mask: np.ndarray | None = None
    slice_images: dict[int, str] = field(default_factory=dict)  # slice -> image id (its embeddings stay cached)
    job: dict[str, Any] = field(default_factory=lambda: {"state": "idle", "done": 0, "total": 0, "message": ""})


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


class DemoService:
    """Holds the loaded models (``Predictor``s, teacher first), the session's images, volumes and their
    cached embeddings."""

    def __init__(self, predictors: dict[str, Any], *, dataset=None, split: str = "test", max_images: int = 16,
                 max_upload_mb: float = MAX_UPLOAD_MB, max_image_mp: float | None = None,
                 max_volume_mb: float = MAX_VOLUME_MB, max_volume_voxels: int | None = None) -> None:
        from samdistill.data.images import PIXELS_ENV, env_limit
        from samdistill.deploy.volumes import VOXELS_ENV

        if not predictors:
            raise UserError("the demo needs at least one model")
        self.predictors = dict(predictors)
        self.dataset = dataset
        self.dataset_ids = dataset.ids(split) if dataset is not None else []
        if dataset is not None and not self.dataset_ids:
            self.dataset_ids = dataset.ids("all")
        self.max_images = max_images
        self.max_upload = int(max_upload_mb * 2**20)
        self.max_pixels = (env_limit(PIXELS_ENV, int(MAX_IMAGE_MP * 1e6)) if max_image_mp is None
                           else int(max_image_mp * 1e6))
        self.max_volume = int(max_volume_mb * 2**20)
        self.max_voxels = (env_limit(VOXELS_ENV, MAX_VOLUME_VOXELS) if max_volume_voxels is None
                           else int(max_volume_voxels))
        self.images: OrderedDict[str, _Image] = OrderedDict()
        self.volumes: OrderedDict[str, _Volume] = OrderedDict()
        self._ids = itertools.count(1)
        self._lock = threading.RLock()  # the predictors hold one image each: one user of them at a time

    # ------------------------------------------------------------------ what is loaded
    def describe(self) -> dict[str, Any]:
        return {
            "models": [{"name": n, "prompt_free": bool(p.prompt_free), "backend": p.backend}
                       for n, p in self.predictors.items()],
            "dataset": None if self.dataset is None else {"name": self.dataset.name, "items": self.dataset_ids},
            "limits": {"upload_mb": self.max_upload / 2**20, "image_mp": self.max_pixels / 1e6,
                       "volume_mb": self.max_volume / 2**20, "volume_mvoxels": self.max_voxels / 1e6},
        }

    # ------------------------------------------------------------------ images
    def _remember(self, entry: _Image) -> dict[str, Any]:
        with self._lock:
            self.images[entry.id] = entry
            self.images.move_to_end(entry.id)  # most recent last
            while len(self.images) > self.max_images:
                self.images.popitem(last=False)
        h, w = entry.image.shape[:2]
        return {"image_id": entry.id, "name": entry.name, "width": w, "height": h, "has_gt": entry.gt is not None}

    def add_upload(self, data: bytes, filename: str) -> dict[str, Any]:
        """An uploaded image file (PNG/JPG/TIFF/BMP; grey, RGB, RGBA, 16-bit)."""
        from samdistill.data.images import decode_image

        name = Path(filename or "upload").name
        if name.lower().endswith((".nii", ".nii.gz")):
            raise DemoError(f"{name} is a volume: open it with the volume (NIfTI) input")
        if len(data) > self.max_upload:
            raise DemoError(f"{name} is {len(data) / 2**20:.1f} MB; the demo accepts images up to "
                            f"{self.max_upload / 2**20:.0f} MB")
        t = time.perf_counter()
        try:
            image = decode_image(data, name, max_pixels=self.max_pixels)
        except UserError as exc:
            raise DemoError(str(exc)) from None
        read_ms = (time.perf_counter() - t) * 1e3
        return self._remember(_Image(f"img{next(self._ids)}", name, image, read_ms=read_ms))

    def add_from_dataset(self, index: int) -> dict[str, Any]:
        if self.dataset is None:
            raise DemoError("no dataset was given to the demo (start it with --data PATH)")
        if not 0 <= index < len(self.dataset_ids):
            raise DemoError(f"dataset item {index} does not exist (0..{len(self.dataset_ids) - 1})")
        sid = self.dataset_ids[index]
        t = time.perf_counter()
        try:
            sample = self.dataset.load(sid)
        except UserError as exc:
            raise DemoError(str(exc)) from None
        read_ms = (time.perf_counter() - t) * 1e3
        return self._remember(_Image(f"img{next(self._ids)}", sid, sample.image, sample.mask, read_ms=read_ms))

    def _get_image(self, image_id: str) -> _Image:
        entry = self.images.get(image_id)
        if entry is None:
            raise DemoError(f"image {image_id!r} is no longer loaded (the server keeps the {self.max_images} most "
                            "recent images, and none after a restart); open it again")
        return entry

    def image_png(self, image_id: str) -> bytes:
        return png_bytes(self._get_image(image_id).image)

    # ------------------------------------------------------------------ prompts
    @staticmethod
    def _parse_prompt(hw: tuple[int, int], box, points, labels):
        """Checked before any model runs, so a bad prompt costs no encoder pass."""
        from samdistill.deploy.predictor import check_inside

        b = None
        if box is not None:
            try:
                b = np.asarray(box, dtype=np.float64).reshape(4)
            except (TypeError, ValueError):
                raise DemoError(f"a box is four numbers x0, y0, x1, y1; got {box!r}") from None
            if not np.isfinite(b).all():
                raise DemoError(f"the box has a value that is not a number: {box!r}")
            b = np.array([min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])])
            if b[2] - b[0] < 1 or b[3] - b[1] < 1:
                raise DemoError("the box is empty: drag the mouse to draw a box with some width and height")
            try:
                check_inside(b.reshape(2, 2), hw, f"the box {[round(v, 1) for v in b.tolist()]} is")
            except UserError as exc:
                raise DemoError(str(exc).split(":")[0]) from None
        p = lab = None
        if points:
            try:
                p = np.asarray(points, dtype=np.float64).reshape(1, -1, 2)
                lab = (np.ones(p.shape[1], np.int64) if labels is None
                       else np.asarray(labels, dtype=np.int64).reshape(p.shape[1]))[None]
            except (TypeError, ValueError):
                raise DemoError("points are [[x, y], ...] with one label (1 = object, 0 = background) each") from None
            if not set(lab.ravel().tolist()) <= {0, 1}:
                raise DemoError("point labels are 1 (object) or 0 (background)")
            try:
                check_inside(p, hw, "a point is")
            except UserError as exc:
                raise DemoError(str(exc)) from None
        return b, p, lab

    # ------------------------------------------------------------------ segment
    def segment(self, image_id: str, box=None, points=None, labels=None) -> dict[str, Any]:
        """Every model on the image: mask, overlay, encoder time (measured when the image was first encoded
        by that model; ``encoder_cached`` says whether this request reused it), decoder time of this request
        (``decoder_ms``: decoder + postprocess to the original size, which is what a next click costs:
        ``next_click_ms``, None for a prompt-free model), ``first_click_ms`` on the image's first request for
        that model (read + encoder + this decoder pass; None once the embedding is cached), Dice between
        models and against the ground truth."""
        from samdistill.viz.overlays import COLOURS, overlay

        entry = self._get_image(image_id)
        b, p, lab = self._parse_prompt(entry.image.shape[:2], box, points, labels)
        prompted = b is not None or p is not None
        if not prompted and not all(pr.prompt_free for pr in self.predictors.values()):
            raise DemoError("draw a box (or click points) on the image first")
        rows, masks = [], {}
        with self._lock:
            for i, (name, pred) in enumerate(self.predictors.items()):
                cached = name in entry.states
                if cached:
                    state, enc_ms = entry.states[name]
                    pred.set_state(state)
                else:
                    t = time.perf_counter()
                    pred.set_image(entry.image)
                    enc_ms = (time.perf_counter() - t) * 1e3
                    entry.states[name] = (pred.get_state(), enc_ms)
                t = time.perf_counter()
                try:
                    if pred.prompt_free:
                        m, iou = pred.predict()
                    else:
                        if not prompted:
                            raise DemoError("draw a box (or click points) on the image first")
                        m, iou = pred.predict(boxes=None if b is None else b[None], points=p, labels=lab)
                except DemoError:
                    raise
                except UserError as exc:
                    raise DemoError(f"{name}: {exc}") from None
                dec_ms = (time.perf_counter() - t) * 1e3
                encoded = getattr(pred, "last_encode_ms", 0.0)  # a zooming predictor encodes the box's crop here
                if encoded:  # encoder time, not next-click time; its embedding is kept for the next click
                    dec_ms -= encoded
                    enc_ms, cached = encoded, False
                    entry.states[name] = (pred.get_state(), enc_ms)
                mask = m.any(0)
                masks[name] = mask
                colour = COLOURS[i % len(COLOURS)]
                rows.append({
                    "name": name, "prompt_free": bool(pred.prompt_free), "backend": pred.backend,
                    "colour": "#%02x%02x%02x" % colour, "area_px": int(mask.sum()),
                    "encoder_ms": round(enc_ms, 2), "encoder_cached": cached, "decoder_ms": round(dec_ms, 2),
                    "next_click_ms": None if pred.prompt_free else round(dec_ms, 2),
                    "first_click_ms": None if cached else round(entry.read_ms + enc_ms + dec_ms, 2),
                    "iou_pred": None if np.isnan(iou).all() else round(float(np.nanmean(iou)), 4),
                    "dice_gt": None if entry.gt is None else round(dice(mask, entry.gt), 4),
                    "mask_png": data_url(png_bytes((mask * 255).astype(np.uint8))),
                    "overlay_png": data_url(png_bytes(overlay(entry.image, [mask], colours=[colour]))),
                })
        names = list(masks)
        between = [{"a": a, "b": c, "dice": round(dice(masks[a], masks[c]), 4)}
                   for j, a in enumerate(names) for c in names[j + 1:]]
        h, w = entry.image.shape[:2]
        return {
            "image": {"id": entry.id, "name": entry.name, "width": w, "height": h, "has_gt": entry.gt is not None},
            "prompt": {"box": None if b is None else [round(v, 2) for v in b.tolist()],
                       "points": None if p is None else p[0].round(2).tolist(),
                       "labels": None if lab is None else lab[0].tolist()},
            "models": rows,
            "dice_between": between,
            "gt_png": None if entry.gt is None else data_url(png_bytes((entry.gt * 255).astype(np.uint8))),
        }

    # ------------------------------------------------------------------ volumes
    def add_volume(self, data: bytes, filename: str) -> dict[str, Any]:
        """An uploaded NIfTI volume (``.nii`` or ``.nii.gz``); slices along its third axis. Its shape is checked
        against ``max_volume_voxels`` from the header, before anything is decompressed beyond it."""
        from samdistill.deploy.volumes import load_volume, to_uint8

        name = Path(filename or "volume.nii.gz").name
        if not name.lower().endswith((".nii", ".nii.gz")):
            raise DemoError(f"{name} is not a NIfTI volume (.nii or .nii.gz)")
        if len(data) > self.max_volume:
            raise DemoError(f"{name} is {len(data) / 2**20:.0f} MB; the demo accepts volumes up to "
                            f"{self.max_volume / 2**20:.0f} MB")
        suffix = ".nii"
        if name.lower().endswith(".gz"):
            # Not decompressed here (a 1 MB .nii.gz can hold 256 MB): nibabel reads the header through the
            # gzip stream, the shape is checked, and only then are the voxels decompressed, into their array.
            try:
                with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
                    gz.read(348)  # a NIfTI-1 header: a file that is not gzip fails here
            except (OSError, EOFError) as exc:
                raise DemoError(f"{name} is not a readable .gz file ({exc})") from None
            suffix = ".nii.gz"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"upload{suffix}"
            path.write_bytes(data)
            try:
                img, arr = load_volume(path, max_voxels=self.max_voxels)
                if suffix == ".nii":
                    arr = np.array(arr)  # may map the file: read it all before the file goes
            except UserError as exc:
                raise DemoError(str(exc).replace(f"volume {path}", name).replace(str(path), name)) from None
        if not np.issubdtype(arr.dtype, np.number):
            raise DemoError(f"{name} holds {arr.dtype} voxels, not numbers")
        vid = f"vol{next(self._ids)}"
        vol = _Volume(vid, name, arr, to_uint8(arr), np.asarray(img.affine), img.header)
        with self._lock:
            self.volumes[vid] = vol
            while len(self.volumes) > 2:
                self.volumes.popitem(last=False)
        return {"volume_id": vid, "name": name, "shape": list(arr.shape), "slices": int(arr.shape[2]),
                "width": int(arr.shape[1]), "height": int(arr.shape[0])}

    def _get_volume(self, vid: str) -> _Volume:
        vol = self.volumes.get(vid)
        if vol is None:
            raise DemoError(f"volume {vid!r} is no longer loaded; open it again")
        return vol

    def _slice_index(self, vol: _Volume, z: int) -> int:
        if not 0 <= int(z) < vol.data.shape[2]:
            raise DemoError(f"slice {z} is outside the volume (0..{vol.data.shape[2] - 1})")
        return int(z)

    def volume_slice(self, vid: str, z: int) -> dict[str, Any]:
        """Slice ``z`` as an image the page can prompt (same flow as an uploaded image), with the
        propagated mask's overlay once there is one."""
        from samdistill.viz.overlays import overlay

        vol = self._get_volume(vid)
        z = self._slice_index(vol, z)
        entry = self.images.get(vol.slice_images.get(z, ""))
        if entry is None:  # first visit (or evicted): a new image; a revisit keeps its embeddings
            rgb = np.repeat(vol.vol8[:, :, z][:, :, None], 3, axis=2)
            entry = _Image(f"img{next(self._ids)}", f"{vol.name} slice {z}", rgb)
            vol.slice_images[z] = entry.id
        rgb = entry.image
        info = self._remember(entry)
        info["slice"] = z
        info["mask_overlay_png"] = None
        if vol.mask is not None and vol.mask[:, :, z].any():
            info["mask_overlay_png"] = data_url(png_bytes(overlay(rgb, [vol.mask[:, :, z]])))
        return info

    def start_propagation(self, vid: str, model: str, box, z: int) -> dict[str, Any]:
        """Segment slice ``z`` from ``box`` with ``model`` and propagate up and down, in a background thread;
        poll :meth:`volume_status`."""
        from samdistill.deploy.volumes import segment_volume

        vol = self._get_volume(vid)
        z = self._slice_index(vol, z)
        pred = self.predictors.get(model)
        if pred is None:
            raise DemoError(f"unknown model {model!r}; loaded: {', '.join(self.predictors)}")
        if pred.prompt_free:
            raise DemoError(f"{model} is prompt-free; propagation from a box needs a promptable model")
        b, _, _ = self._parse_prompt(vol.data.shape[:2], box, None, None)
        if b is None:
            raise DemoError("draw a box on the slice first")
        if vol.job["state"] == "running":
            raise DemoError("a propagation is already running on this volume")
        vol.job = {"state": "running", "done": 0, "total": int(vol.data.shape[2]), "message": "", "model": model}

        def progress(done: int, total: int) -> None:
            vol.job.update(done=done, total=total)

        def work() -> None:
            try:
                with self._lock:
                    mask = segment_volume(pred, vol.data, b, z, axis=2, progress=False, on_slice=progress)
                vol.mask = mask
                slices = int(mask.reshape(-1, mask.shape[2]).any(0).sum())
                vol.job.update(state="done", voxels=int(mask.sum()), slices=slices,
                               message=f"{int(mask.sum())} voxels over {slices} slices")
            except Exception as exc:  # the page shows it; the server stays up
                vol.job.update(state="error", message=f"{type(exc).__name__}: {exc}" if not isinstance(exc, UserError)
                               else str(exc))

        started = dict(vol.job)  # as it was when the job started (a small volume may be done before we return)
        threading.Thread(target=work, daemon=True, name=f"propagate-{vid}").start()
        return started

    def volume_status(self, vid: str) -> dict[str, Any]:
        return dict(self._get_volume(vid).job)

    def volume_mask_nifti(self, vid: str) -> tuple[bytes, str]:
        """``(bytes of <name>_mask.nii.gz, file name)`` with the input's affine and header."""
        from samdistill.deploy.volumes import mask_image

        vol = self._get_volume(vid)
        if vol.mask is None:
            raise DemoError("no mask yet: draw a box on a slice and propagate first")
        img = mask_image(vol.mask, vol.affine, vol.header)
        stem = vol.name.replace(".nii.gz", "").replace(".nii", "")
        return gzip.compress(img.to_bytes(), compresslevel=6), f"{stem}_mask.nii.gz"

