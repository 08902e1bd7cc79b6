"""Prompt simulation, in the original image frame: tight, jittered and per-component boxes; points.

Boxes are ``(x0, y0, x1, y1)`` in pixel indices, inclusive (x1 is the last foreground column),
as MedSAM computes them. The model maps them to its input frame.
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy import ndimage


def prompt_rng(seed: int, key: str) -> np.random.Generator:
    """A generator that depends only on (seed, sample id): prompts don't change with order or limit."""
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])


def tight_box(mask: np.ndarray) -> np.ndarray:
    """The smallest box holding all foreground pixels; ``ValueError`` on an empty mask."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise ValueError("no foreground: a box prompt needs a non-empty mask")
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64)


def zoom_window(box: np.ndarray, hw: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` (x1, y1 exclusive) of the square crop around ``box`` (inclusive pixel box, as
    :func:`samdistill.data.prompts.tight_box`): ``margin`` x its longer side (at least the box itself), centred
    on it, clipped to the image."""
    if margin < 1:
        raise ValueError(f"a zoom margin below 1 would cut the box: {margin}")
    bx0, by0, bx1, by1 = (float(v) for v in box)
    side = max(bx1 - bx0 + 1, by1 - by0 + 1) * margin
    cx, cy = (bx0 + bx1 + 1) / 2, (by0 + by1 + 1) / 2
    x0, y0 = max(0, int(np.floor(cx - side / 2))), max(0, int(np.floor(cy - side / 2)))
    x1, y1 = min(hw[1], int(np.ceil(cx + side / 2))), min(hw[0], int(np.ceil(cy + side / 2)))
    return min(x0, int(bx0)), min(y0, int(by0)), max(x1, int(bx1) + 1), max(y1, int(by1) + 1)


def prompts_window(boxes: np.ndarray | None, points: np.ndarray | None, hw: tuple[int, int],
                   margin: float) -> tuple[int, int, int, int]:
    """The crop a zoomed model encodes for these prompts (original pixels): :func:`zoom_window` of the box
    around every box (``Nx4``) and point (``...x2``); the whole image for points alone, which say where but
    not how large."""
    if boxes is None:
        return 0, 0, int(hw[1]), int(hw[0])
    xy = np.asarray(boxes, dtype=np.float64).reshape(-1, 2)
    if points is not None:
        xy = np.concatenate([xy, np.asarray(points, dtype=np.float64).reshape(-1, 2)])
    return zoom_window(np.r_[xy.min(0), xy.max(0)], hw, margin)


def jitter_box(box: np.ndarray, shift: float, rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """Move each side outwards by an independent uniform 0..``shift`` px, clipped to the image."""
    if shift <= 0:
        return np.asarray(box, dtype=np.float64).copy()
    d = rng.uniform(0, shift, size=4)
    x0, y0, x1, y1 = box
    return np.array(
        [max(0.0, x0 - d[0]), max(0.0, y0 - d[1]), min(hw[1] - 1.0, x1 + d[2]), min(hw[0] - 1.0, y1 + d[3])]
    )


def component_boxes(mask: np.ndarray, min_area: int = 1) -> np.ndarray:
    """One tight box per 8-connected component (``Nx4``), largest component first."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros((0, 4))
    slices = ndimage.find_objects(labels)
    areas = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    boxes = [
        (area, [s[1].start, s[0].start, s[1].stop - 1, s[0].stop - 1])
        for s, area in zip(slices, areas)
        if area >= min_area
    ]
    boxes.sort(key=lambda t: -t[0])
    return np.array([b for _, b in boxes], dtype=np.float64).reshape(-1, 4)


def interior_point(mask: np.ndarray, *, border_outside: bool = False) -> tuple[int, int]:
    """The most interior foreground pixel ``(x, y)`` of an ``HxW`` boolean mask: the maximum of the
    Euclidean distance transform (distance to the nearest background pixel); ties go to the first
    pixel in row-major order (``np.argmax``). ``ValueError`` on an empty mask.

    ``border_outside=False`` (the ``--prompt point`` protocol, unchanged): only background pixels count
    as outside, so an object touching the image edge can get its point on the edge. ``True`` (the
    click simulation, :mod:`samdistill.data.clicks`): the mask is padded with background first, so the
    image border counts as outside and the point stays off the edge.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("no foreground: an interior point needs a non-empty mask")
    if border_outside:
        dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    else:
        dist = ndimage.distance_transform_edt(mask)
    cy, cx = np.unravel_index(np.argmax(dist), dist.shape)
    return int(cx), int(cy)


def sample_points(
    mask: np.ndarray, n_pos: int, n_neg: int, rng: np.random.Generator, box: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Positive points inside the foreground, negative ones in the background (inside ``box`` if given).

    The first positive point is the foreground pixel farthest from the boundary (the most
    unambiguous click); the rest are uniform. Returns ``(Px2 xy coords, P labels)`` with 1 = positive.
    """
    coords, labels = [], []
    if n_pos > 0:
        fg = np.argwhere(mask)
        if fg.size == 0:
            raise ValueError("no foreground: positive points need a non-empty mask")
        coords.append(list(interior_point(mask)))
        for y, x in fg[rng.choice(len(fg), size=n_pos - 1, replace=len(fg) < n_pos - 1)] if n_pos > 1 else []:
            coords.append([x, y])
        labels += [1] * n_pos
    if n_neg > 0:
        bg = ~mask
        if box is not None:
            region = np.zeros_like(bg)
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            region[y0 : y1 + 1, x0 : x1 + 1] = True
            bg = bg & region if (bg & region).any() else bg
        pts = np.argwhere(bg)
        if pts.size == 0:
            raise ValueError("no background: negative points need background pixels")
        for y, x in pts[rng.choice(len(pts), size=n_neg, replace=len(pts) < n_neg)]:
            coords.append([x, y])
        labels += [0] * n_neg
    return np.asarray(coords, dtype=np.float64).reshape(-1, 2), np.asarray(labels, dtype=np.int64)


def box_ellipse_mask(box: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Prompt-only baseline: the ellipse inscribed in the box."""
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    rx, ry = max((x1 - x0) / 2, 0.5), max((y1 - y0) / 2, 0.5)
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def box_filled_mask(box: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Prompt-only baseline: the filled box."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    out = np.zeros(hw, dtype=bool)
    out[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = True
    return out
