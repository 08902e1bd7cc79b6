"""Corrective clicks: the simulated user of the interactive protocol (:func:`next_click`, deterministic,
against the ground truth) and the training-time click of prompt-in-the-loop distillation
(:func:`disagreement_points`, random, against the teacher).

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
import torch
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


def disagreement_points(student_fg: torch.Tensor, teacher_fg: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training-time corrective click of prompt-in-the-loop distillation (KD SAM stage 2).

    One point per row, drawn uniformly at random (torch's global RNG: seeded and checkpointed) from the
    pixels where the student's and the teacher's masks disagree (``BxHxW`` boolean, same size), labelled
    as the teacher would correct the student: 1 (add) where the teacher says foreground, 0 (remove) where
    it says background. A row where the two agree everywhere gets SAM's padding point (label -1, which the
    prompt encoder ignores). Returns ``(Bx1x2 coords (x, y) in the input frame of side size, Bx1 labels)``.
    """
    if student_fg.shape != teacher_fg.shape or student_fg.ndim != 3:
        raise ValueError(f"masks must be BxHxW of one shape, got {tuple(student_fg.shape)} and {tuple(teacher_fg.shape)}")
    b, h, w = student_fg.shape
    region = (student_fg != teacher_fg).flatten(1)
    score = torch.rand(region.shape, device=region.device).masked_fill(~region, -1.0)
    idx = score.argmax(1)
    found = region.any(1)
    x = ((idx % w).float() + 0.5) * (size / w)
    y = (torch.div(idx, w, rounding_mode="floor").float() + 0.5) * (size / h)
    labels = teacher_fg.flatten(1).gather(1, idx[:, None]).long()
    labels = torch.where(found[:, None], labels, torch.full_like(labels, -1))
    coords = torch.stack([x, y], dim=1)[:, None] * found[:, None, None]
    return coords, labels
