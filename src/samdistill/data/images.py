"""Read images and masks into plain arrays, with one clear error per bad file.

Images come back as ``HxWx3 uint8`` whatever their mode (grey, RGB, RGBA, palette, 16-bit, float).
Masks come back as ``HxW bool`` under one of three declared kinds:

* ``binary``: values must lie in {0, 1, 255}; anything else is an error (a grey-level label map
  or a resampled mask would otherwise be silently thresholded).
* ``noisy``: binary with compression noise (JPEG masks); foreground is ``value >= threshold``.
* ``outline``: a closed (or border-cut) contour, e.g. HC18 ellipses; filled.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

from samdistill.errors import DataError, UserError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LOSSY_EXTS = (".jpg", ".jpeg")
MaskKind = Literal["binary", "noisy", "outline"]

#: Largest image we decode, in pixels: 2**26 = 67.1 MP (8192 x 8192). The largest 2D medical images we
#: target are well under it (mammograms ~4000 x 5000 = 20 MP, dermoscopy ~6000 x 4000 = 24 MP; whole-slide
#: pathology is out of scope), while decoding costs ~40 bytes per pixel through eval (a 12000 x 12000 PNG,
#: 144 MP, took 6 GB), so the default caps that at ~2.7 GB. It is below PIL's own warning threshold
#: (89.5 MP), so PIL never warns about an image we accepted. ``SAMDISTILL_MAX_PIXELS`` overrides it.
MAX_PIXELS = 2**26
PIXELS_ENV = "SAMDISTILL_MAX_PIXELS"

# PIL's limit is a process-wide global: the header read below runs with it off (under this lock) so that our
# check, which names the file and its size, is the one that fires, and decoding runs with it at least ours.
_PIL_LIMIT_LOCK = threading.Lock()


def env_limit(var: str, default: int) -> int:
    """A size limit from environment variable ``var`` (a positive whole number: ``100000000``, ``1e8`` or
    ``100_000_000``), else ``default``. A value that is not one is a one-line :class:`UserError`."""
    raw = os.environ.get(var, "").strip()
    if not raw:
        return default
    text = raw.replace("_", "")
    try:
        value = int(text)
    except ValueError:
        try:
            f = float(text)
        except ValueError:
            f = math.nan
        value = int(f) if math.isfinite(f) and f == int(f) else 0
    if value < 1:
        raise UserError(f"environment variable {var}={raw!r} is not a positive whole number; set it like "
                        f"{var}={default} (the default) or unset it")
    return value


def max_pixels() -> int:
    """The image pixel limit in force: ``SAMDISTILL_MAX_PIXELS`` if set, else :data:`MAX_PIXELS`."""
    return env_limit(PIXELS_ENV, MAX_PIXELS)


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP"


def open_image(source: str | Path | bytes, label: str, limit: int | None = None, *,
               decode: bool = True) -> Image.Image:
    """Open an image (a path, or an upload's bytes) and check its size from the header, before any pixel is
    decoded; then decode the pixels (``im.load()``) unless ``decode=False`` (the header alone: ``im.size``).
    ``label`` names it in errors ("image x.png").

    Every image samdistill reads comes through here: a file over ``limit`` (default :func:`max_pixels`) is
    a :class:`DataError` naming it, its size and the limit, and PIL's DecompressionBombWarning/Error never
    reaches the user."""
    import io

    limit = max_pixels() if limit is None else int(limit)
    name = str(source) if isinstance(source, (str, Path)) else label
    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    with _PIL_LIMIT_LOCK:
        pil_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # header only: our check below replaces PIL's
        try:
            im = Image.open(fp)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"cannot read {label}: not an image file that can be read ({exc})", name) from None
        finally:
            # Decoding then runs with PIL's limit at least ours, so PIL never warns about an image we accepted.
            Image.MAX_IMAGE_PIXELS = None if pil_limit is None else max(int(pil_limit), limit)
    w, h = im.size
    if w * h > limit:
        im.close()
        raise DataError(f"{label} is {w}x{h} = {_mp(w * h)}, over the limit of {_mp(limit)} (set {PIXELS_ENV} "
                        "to change it)", name)
    if not decode:
        return im
    try:
        im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        im.close()
        raise DataError(f"cannot read {label}: truncated or corrupt ({exc})", name) from None
    return im


def _open(path: Path, what: str) -> Image.Image:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{what} not found: {p}", str(p))
    if p.stat().st_size == 0:
        raise DataError(f"{what} is an empty file: {p}", str(p))
    return open_image(p, f"{what} {p}")


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    a = arr.astype(np.float64)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.round((a - lo) / (hi - lo) * 255.0).astype(np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """Any readable image -> ``HxWx3 uint8``. 16-bit and float images are min-max scaled to 0..255."""
    return _as_rgb8(_open(Path(path), "image"))


def decode_image(data: bytes, name: str = "upload", max_pixels: int | None = None) -> np.ndarray:
    """Image file bytes (an upload) -> ``HxWx3 uint8``, as :func:`read_image`; ``max_pixels`` (default
    :func:`max_pixels`) is checked from the header, before the pixels are decoded."""
    if not data:
        raise DataError(f"{name} is an empty file", name)
    return _as_rgb8(open_image(data, name, max_pixels))


def _as_rgb8(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("RGB", "L"):
        arr = np.asarray(im)
    elif mode in ("RGBA", "LA", "P", "PA", "CMYK", "YCbCr", "1", "LAB", "HSV"):
        arr = np.asarray(im.convert("RGB"))
    else:  # I;16, I;16B, I, F: high bit depth greyscale
        arr = _to_uint8(np.asarray(im))
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr)


def read_mask(path: str | Path, kind: MaskKind = "binary", threshold: int = 128,
              labels: list[int] | tuple[int, ...] | None = None) -> np.ndarray:
    """A mask file -> ``HxW bool`` (see the module docstring for ``kind``).

    ``labels``: the mask is a label map and the foreground is every pixel whose value is one of
    ``labels`` (palette PNGs: the palette index); 0 and any other value are background, so
    ``labels=[2]`` on a {0, 1, 2} map keeps class 2 only. It replaces ``threshold`` (an outline is
    still filled). Without ``labels`` a label map (few small integers beyond {0, 1}) is an error that
    names its labels, instead of the binary-mask advice.
    """
    p = Path(path)
    im = _open(p, "mask")
    if labels is not None:
        return _label_foreground(im, p, kind, labels)
    index = np.asarray(im) if im.mode == "P" else None  # a palette label map's values are its indices
    if im.mode in ("P", "PA"):
        im = im.convert("L")
    arr = np.asarray(im)
    if arr.ndim == 3:
        chans = arr[:, :, :3] if arr.shape[2] >= 3 else arr[:, :, :1]
        if kind == "binary" and not (chans == chans[:, :, :1]).all():
            raise DataError(f"mask {p} is a colour image with differing channels; expected a binary mask", str(p))
        arr = chans.max(axis=2) if kind == "binary" else np.asarray(im.convert("L"))
    if kind == "noisy":
        fg = _to_uint8(arr) >= threshold if arr.dtype != np.uint8 else arr >= threshold
        # A lossless label map declared noisy (following the old advice) would come back empty: say what it is.
        if not fg.any() and p.suffix.lower() not in LOSSY_EXTS:
            found = _label_map_values(np.unique(index if index is not None else arr))
            if found:
                raise DataError(_label_map_message(p, found, f"--mask-threshold {threshold} leaves it empty; "), str(p))
        return fg
    if kind == "outline":
        return fill_outline(arr >= threshold if arr.dtype == np.uint8 else arr > 0)
    values = np.unique(arr)
    if not set(values.tolist()) <= {0, 1, 255}:
        found = _label_map_values(values) or (_label_map_values(np.unique(index)) if index is not None else None)
        if found:
            raise DataError(_label_map_message(p, found), str(p))
        shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
        raise DataError(
            f"mask {p} is not binary (values {shown}); expected {{0,1}} or {{0,255}}. "
            "If these are compression noise, declare it with --mask-threshold 128",
            str(p),
        )
    return arr > 0


#: A mask whose values are few small integers beyond {0, 1} is taken for a label map (class ids), not noise.
LABEL_MAP_MAX = 32


def _label_map_values(values: np.ndarray) -> list[int] | None:
    """The non-zero labels of a label map (sorted unique ``values``), or None if it does not look like one."""
    if values.size == 0 or not np.all(np.mod(values, 1) == 0):
        return None
    v = [int(x) for x in values.tolist()]
    if v[0] < 0 or v[-1] >= LABEL_MAP_MAX or set(v) <= {0, 1}:
        return None
    return [x for x in v if x != 0]


def _label_map_message(p: Path, found: list[int], why: str = "") -> str:
    names = ", ".join(map(str, found))
    if len(found) == 1:
        return (f"mask {p} is a label map (label {names}), not a binary mask; {why}choose the foreground with "
                f"--labels {names} (recipe: data.labels=[{names}])")
    all_ = ",".join(map(str, found))
    return (f"mask {p} is a multi-class label map (labels {names}); {why}choose the foreground with --labels {all_} "
            f"(or --labels {found[-1]}; recipe: data.labels=[{all_}])")


def _label_foreground(im: Image.Image, p: Path, kind: MaskKind, labels: list[int] | tuple[int, ...]) -> np.ndarray:
    """Foreground = value in ``labels`` (palette images: the index; colour images must be grey)."""
    arr = np.asarray(im)
    if arr.ndim == 3:
        if im.mode in ("PA", "LA"):
            arr = arr[:, :, 0]
        else:
            chans = arr[:, :, :3]
            if not (chans == chans[:, :, :1]).all():
                raise DataError(f"mask {p} is a colour image with differing channels; a label map (--labels) "
                                "needs one value per pixel", str(p))
            arr = chans[:, :, 0]
    fg = np.isin(arr, np.asarray(labels))
    return fill_outline(fg) if kind == "outline" else fg


def fill_outline(outline: np.ndarray) -> np.ndarray:
    """Fill a closed contour; a contour cut by the image border is filled by its convex hull."""
    filled = ndimage.binary_fill_holes(outline)
    if filled.sum() > 1.5 * outline.sum() or outline.sum() < 3:
        return filled
    return convex_hull_fill(outline)


def convex_hull_fill(mask: np.ndarray) -> np.ndarray:
    """The filled convex hull of the foreground pixels (right for ellipses cut by the border)."""
    from scipy.spatial import Delaunay, QhullError

    ys, xs = np.nonzero(mask)
    pts = np.stack([xs, ys], axis=1).astype(np.float64)
    try:
        tri = Delaunay(pts)
    except QhullError:  # collinear points: nothing to fill
        return mask.copy()
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    gy, gx = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
    inside = tri.find_simplex(np.stack([gx.ravel(), gy.ravel()], axis=1)) >= 0
    out = mask.copy()
    out[y0 : y1 + 1, x0 : x1 + 1] |= inside.reshape(gy.shape)
    return out
