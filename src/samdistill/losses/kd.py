"""Mask-logit knowledge distillation: match the teacher's soft mask under the same prompt."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from samdistill.losses.registry import LOSSES


@LOSSES.register("logit_kd")
def logit_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Binary KD per pixel: cross-entropy of sigmoid(s/T) against the target sigmoid(t/T), times T².

    Minus the teacher's own entropy, so that the loss is 0 exactly when the student matches the
    teacher (a KL divergence between two Bernoulli maps). ``BxMxHxW`` each; scalar out.
    """
    t = teacher_logits.detach().to(student_logits.dtype) / temperature
    s = student_logits / temperature
    target = torch.sigmoid(t)
    ce = F.binary_cross_entropy_with_logits(s, target)
    ent = F.binary_cross_entropy_with_logits(t, target)
    return (ce - ent) * temperature**2
