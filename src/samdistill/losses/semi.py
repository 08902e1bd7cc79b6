"""Multi-class losses for prompt-free, semi-supervised students (KnowSAM).

Shapes: logits and probabilities ``BxCxHxW``; labels ``BxHxW`` integer class maps. Every loss
returns a scalar.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from samdistill.losses.registry import LOSSES


@LOSSES.register("softmax_kd")
def softmax_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 10.0) -> torch.Tensor:
    """Pixel-wise KL(softmax(t/T) || softmax(s/T)) summed over classes, averaged over pixels, times T².

    The teacher carries no gradient. 0 exactly when the two softened maps agree.
    """
    t = F.log_softmax(teacher_logits.detach().to(student_logits.dtype) / temperature, dim=1)
    s = F.log_softmax(student_logits / temperature, dim=1)
    kl = (t.exp() * (t - s)).sum(1)
    return kl.mean() * temperature**2


@LOSSES.register("consistency_mse")
def consistency_mse(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of two probability maps over **all** classes and pixels; ``q`` is the
    (detached) target. (The public KnowSAM code compared only the last class.)"""
    return F.mse_loss(p, q.detach())


@LOSSES.register("entropy")
def entropy_loss(p: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel entropy of ``p``, normalised by log C into [0, 1] (entropy minimisation)."""
    c = p.shape[1]
    return (-(p * torch.log(p.clamp_min(1e-6))).sum(1) / math.log(c)).mean()


@LOSSES.register("multiclass_dice")
def multiclass_dice(logits: torch.Tensor, labels: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """1 - soft Dice of softmax(logits) against one-hot ``labels``, per class over the batch, averaged
    over classes (the semi-supervised segmentation convention)."""
    p = logits.softmax(1)
    onehot = F.one_hot(labels.long(), p.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
    inter = (p * onehot).sum((0, 2, 3))
    denom = p.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return (1 - (2 * inter + eps) / (denom + eps)).mean()


@LOSSES.register("ce_dice")
def ce_dice(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy + multi-class Dice: KnowSAM's supervised loss."""
    return F.cross_entropy(logits, labels.long()) + multiclass_dice(logits, labels)
