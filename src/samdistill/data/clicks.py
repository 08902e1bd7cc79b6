"""The simulated user of the interactive protocol: the next corrective click, from the error region.

Convention (the usual click simulation, in the original image frame, on ``HxW`` boolean masks):

- the errors are the false negatives ``gt & ~pred`` and the false positives ``pred & ~gt``, each split
  into 8-connected components (as :func:`samdistill.data.prompts.component_boxes`);
- the largest component of either kind (by area in pixels) is corrected: a false-negative one gets a
  positive click, a false-positive one a negative click; on an equal area the false negative wins, and
  among components of one kind of equal area the first in row-major order (lowest label) wins;
- the click goes on the most interior pixel of that component
  (:func:`samdistill.data.prompts.interior_point` with ``border_outside=True``: the maximum of the
  Euclidean distance transform of the component, the image border counted as outside, ties to the first
  pixel in row-major order);
- no click (``None``) when ``pred == gt``.

The click depends only on ``(pred, gt)``: no random numbers, so two models evaluated on the same image
face the same simulated user (each gets the click that user would give for its own mistakes).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage

from samdistill.data.prompts import interior_point

_EIGHT = np.ones((3, 3), bool)


class Click(NamedTuple):
    """One click in original pixels: column ``x``, row ``y``; ``positive`` adds to the object."""

    x: int
    y: int
    positive: bool


def _largest_component(region: np.ndarray) -> np.ndarray | None:
    """The largest 8-connected component of ``region`` (first label on a tie), or ``None`` if empty."""
    labels, n = ndimage.label(region, structure=_EIGHT)
    if n == 0:
        return None
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return labels == int(np.argmax(areas)) + 1


def next_click(pred: np.ndarray, gt: np.ndarray) -> Click | None:
    """The click that corrects the largest error of ``pred`` against ``gt`` (``HxW`` boolean), or ``None``
    when they agree; see the module docstring for the convention."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"pred and gt must be HxW of the same shape, got {pred.shape} and {gt.shape}")
    fn = _largest_component(gt & ~pred)
    fp = _largest_component(pred & ~gt)
    if fn is None and fp is None:
        return None
    positive = fp is None or (fn is not None and fn.sum() >= fp.sum())
    x, y = interior_point(fn if positive else fp, border_outside=True)
    return Click(x, y, positive)
