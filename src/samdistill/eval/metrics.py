"""Per-image segmentation metrics at the original resolution, computed with MONAI.

Each metric is a pure function on two ``HxW`` boolean arrays, and :class:`MetricAccumulator`
collects per-image values and reports their means (mean over images, not over pixels).
:func:`dice` and :func:`batch_dice` are the one Dice of the package, defined in :mod:`samdistill.dice`
(below eval, so that deploy and the methods score masks without importing eval) and part of this
metric set.

Conventions for empty masks (MONAI returns NaN/inf there; we fix the value and say so in summaries):
both empty -> Dice 1, IoU 1, NSD 1, HD95 0; exactly one empty -> Dice 0, IoU 0, NSD 0,
HD95 = the image diagonal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from samdistill.dice import batch_dice, dice  # noqa: F401  (the one Dice, part of eval's metric set)

EMPTY_CONVENTION = (
    "both empty: dice=iou=nsd=1, hd95=0; exactly one empty: dice=iou=nsd=0, hd95=image diagonal (px)"
)
NSD_TOLERANCE_PX = 2.0


def _onehot(mask: np.ndarray) -> torch.Tensor:
    """HxW bool -> 1x1xHxW float (MONAI's BxCxHxW, foreground channel only)."""
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]


def _check(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"pred and gt must be HxW of the same shape, got {pred.shape} and {gt.shape}")
    return pred, gt


def _empty_case(pred: np.ndarray, gt: np.ndarray, both: float, one: float) -> float | None:
    p, g = pred.any(), gt.any()
    if not p and not g:
        return both
    if p != g:
        return one
    return None


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    from monai.metrics import compute_iou

    pred, gt = _check(pred, gt)
    special = _empty_case(pred, gt, 1.0, 0.0)
    if special is not None:
        return special
    return float(compute_iou(_onehot(pred), _onehot(gt), include_background=True)[0, 0])


def nsd(pred: np.ndarray, gt: np.ndarray, tolerance: float = NSD_TOLERANCE_PX) -> float:
    """Normalised surface Dice: fraction of both boundaries within ``tolerance`` px of the other."""
    from monai.metrics import compute_surface_dice

    pred, gt = _check(pred, gt)
    special = _empty_case(pred, gt, 1.0, 0.0)
    if special is not None:
        return special
    return float(
        compute_surface_dice(_onehot(pred), _onehot(gt), class_thresholds=[tolerance], include_background=True)[0, 0]
    )


def hd95(pred: np.ndarray, gt: np.ndarray) -> float:
    """95th-percentile symmetric Hausdorff distance between boundaries, in pixels."""
    from monai.metrics import compute_hausdorff_distance

    pred, gt = _check(pred, gt)
    special = _empty_case(pred, gt, 0.0, math.hypot(*gt.shape))
    if special is not None:
        return special
    return float(compute_hausdorff_distance(_onehot(pred), _onehot(gt), include_background=True, percentile=95)[0, 0])


def image_metrics(pred: np.ndarray, gt: np.ndarray, full: bool = True) -> dict[str, float]:
    """All per-image metrics (``full=False``: only the cheap overlap ones, Dice and IoU)."""
    out = {"dice": dice(pred, gt), "iou": iou(pred, gt)}
    if full:
        out["nsd"] = nsd(pred, gt)
        out["hd95"] = hd95(pred, gt)
    return out


@dataclass
class MetricAccumulator:
    """Collect per-image metric dicts; ``aggregate`` gives the mean over images of each metric."""

    rows: list[dict[str, float]] = field(default_factory=list)

    def add(self, values: dict[str, float]) -> None:
        self.rows.append(dict(values))

    def reset(self) -> None:
        self.rows.clear()

    def __len__(self) -> int:
        return len(self.rows)

    def aggregate(self) -> dict[str, float]:
        if not self.rows:
            return {}
        keys = self.rows[0].keys()
        return {k: float(np.mean([r[k] for r in self.rows])) for k in keys}
