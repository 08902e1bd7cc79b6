"""A zoomed second look at a box: crop the image around the box (with a margin), segment the crop, paste back.

A small structure covers few of a student's 16x16 embedding tokens; segmenting a crop around its box makes it
cover many. ``zoom_window`` is the crop (a square of ``margin`` x the box's longer side, centred on the box,
clipped to the image); ``predict_zoomed`` runs any ``predict(image, boxes) -> masks`` on it (a promptable model)
and returns the mask at the original size (nothing outside the crop). ``benchmarks/zoom.py`` measures it on the
validation split.
"""

from __future__ import annotations

import numpy as np

from samdistill.data.prompts import zoom_window  # noqa: F401  (the crop; re-exported here)


def predict_zoomed(model, image: np.ndarray, box: np.ndarray, margin: float) -> np.ndarray:
    """``model.predict`` on the zoom window of ``box``; the ``HxW`` bool mask of the whole image."""
    hw = image.shape[:2]
    x0, y0, x1, y1 = zoom_window(box, hw, margin)
    inner = np.asarray(box, dtype=np.float64) - [x0, y0, x0, y0]
    mask = np.zeros(hw, dtype=bool)
    mask[y0:y1, x0:x1] = model.predict(image[y0:y1, x0:x1], inner[None])[0]
    return mask
