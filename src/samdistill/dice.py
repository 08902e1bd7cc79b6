"""The one Dice of the package, for every caller: eval and bench (through :mod:`samdistill.eval.metrics`),
the per-epoch validation of every method, the ONNX export's verification, the demo's agreement figures.

It lives below eval, deploy and the methods so that none of them imports another to score two masks.
Empty masks: both empty -> 1, exactly one empty -> 0 (DESIGN.md section 8).
"""

from __future__ import annotations

import numpy as np
import torch


def batch_dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice per item of two boolean (or {0, 1}) batches ``Bx...`` of the same shape -> ``B`` float32.

    ``2 |P & T| / (|P| + |T|)`` from the overlap counts in float32 (exactly MONAI ``compute_dice``'s
    arithmetic for masks under 2**24 pixels). Empty masks: both empty -> 1, exactly one empty -> 0.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    p, t = pred.bool().flatten(1), target.bool().flatten(1)
    inter = (p & t).sum(1).float()
    denom = (p.sum(1) + t.sum(1)).float()
    return torch.where(denom > 0, 2 * inter / denom.clamp(min=1), torch.ones_like(denom))


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two ``HxW`` boolean masks (:func:`batch_dice` of one image): both empty -> 1, exactly one
    empty -> 0."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"pred and gt must be HxW of the same shape, got {pred.shape} and {gt.shape}")
    pred, gt = np.ascontiguousarray(pred), np.ascontiguousarray(gt)  # torch takes no negative strides
    return float(batch_dice(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None])[0])
