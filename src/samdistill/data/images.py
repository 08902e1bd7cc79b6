"""Read images and masks into plain arrays, with one clear error per bad file.

Images come back as ``HxWx3 uint8`` whatever their mode (grey, RGB, RGBA, palette, 16-bit, float).
Masks come back as ``HxW bool`` under one of three declared kinds:

* ``binary``: values must lie in {0, 1, 255}; anything else is an error (a grey-level label map
  or a resampled mask would otherwise be silently thresholded).
* ``noisy``: binary with compression noise (JPEG masks); foreground is ``value >= threshold``.
* ``outline``: a closed (or border-cut) contour, e.g. HC18 ellipses; filled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

from samdistill.errors import DataError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LOSSY_EXTS = (".jpg", ".jpeg")
MaskKind = Literal["binary", "noisy", "outline"]

#: Largest image we agree to decode (pixels); PIL's own bomb guard is similar.
MAX_PIXELS = 178_956_970


def _open(path: Path, what: str) -> Image.Image:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{what} not found: {p}", str(p))
    if p.stat().st_size == 0:
        raise DataError(f"{what} is an empty file: {p}", str(p))
    try:
        im = Image.open(p)
        im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read {what} {p}: {exc}", str(p)) from None
    if im.width * im.height > MAX_PIXELS:
        raise DataError(f"{what} {p} is too large ({im.width}x{im.height})", str(p))
    return im


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


def decode_image(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Image file bytes (an upload) -> ``HxWx3 uint8``, as :func:`read_image`; ``max_pixels`` is checked
    from the header, before the pixels are decoded."""
    import io

    if not data:
        raise DataError(f"{name} is an empty file", name)
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise DataError(f"{name} is too large: {exc}", name) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{name} is not an image that can be read ({exc})", name) from None
    if im.width * im.height > max_pixels:
        raise DataError(f"{name} is {im.width}x{im.height} = {im.width * im.height / 1e6:.1f} MP; the limit is "
                        f"{max_pixels / 1e6:.0f} MP", name)
    try:
        im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{name} is truncated or corrupt ({exc})", name) from None
    return _as_rgb8(im)


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
