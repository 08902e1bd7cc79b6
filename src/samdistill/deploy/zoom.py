"""A zoomed second look at a box: crop the image around the box (with a margin), segment the crop, paste back.

A small structure covers few of a student's 16x16 embedding tokens; segmenting a crop around its box makes it
cover many. ``zoom_window`` is the crop (a square of ``margin`` x the box's longer side, centred on the box,
clipped to the image); ``predict_zoomed`` runs any ``predict(image, boxes) -> masks`` on it (a promptable model)
and returns the mask at the original size (nothing outside the crop). ``benchmarks/zoom.py`` measures it on the
validation split.
"""

from __future__ import annotations

import numpy as np


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


def predict_zoomed(model, image: np.ndarray, box: np.ndarray, margin: float) -> np.ndarray:
    """``model.predict`` on the zoom window of ``box``; the ``HxW`` bool mask of the whole image."""
    hw = image.shape[:2]
    x0, y0, x1, y1 = zoom_window(box, hw, margin)
    inner = np.asarray(box, dtype=np.float64) - [x0, y0, x0, y0]
    mask = np.zeros(hw, dtype=bool)
    mask[y0:y1, x0:x1] = model.predict(image[y0:y1, x0:x1], inner[None])[0]
    return mask
