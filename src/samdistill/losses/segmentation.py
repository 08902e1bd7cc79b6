"""Supervised mask losses on logits: soft Dice, binary cross-entropy, and the IoU-head regression."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from samdistill.losses.registry import LOSSES


@LOSSES.register("dice")
def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per mask, averaged. ``logits``, ``target``: ``Bx1xHxW`` (target in {0, 1}).

    ``eps`` smooths both numerator and denominator so that empty-vs-empty scores 0 loss.
    """
    p = torch.sigmoid(logits).flatten(1)
    t = target.to(p.dtype).flatten(1)
    inter = (p * t).sum(1)
    return (1 - (2 * inter + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


@LOSSES.register("bce")
def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel-mean binary cross-entropy with logits. ``Bx1xHxW``."""
    return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))


@LOSSES.register("iou_head_mse")
def iou_head_mse(iou_pred: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE between the decoder's predicted IoU (``BxM``) and the true IoU of its masks (``BxMxHxW``
    thresholded at 0) with ``target`` (``Bx1xHxW``). The true IoU carries no gradient."""
    with torch.no_grad():
        pred = (logits > 0).flatten(2).float()
        t = target.flatten(2).float()
        inter = (pred * t).sum(-1)
        union = pred.sum(-1) + t.sum(-1) - inter
        true_iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    return F.mse_loss(iou_pred, true_iou.to(iou_pred.dtype))
