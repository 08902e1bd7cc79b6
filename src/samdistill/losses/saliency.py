"""Saliency distillation (EfficientMedSAM): match where teacher and student put their activation energy.

A saliency map is the channel-pooled squared activation of a feature map, normalised per sample to
unit L2 norm over positions: ``S = norm(mean_c f_c^2)`` (``BxCxHxW -> BxHxW``). Input-gradient
saliency (``|d score / d image|``, channel max, normalised) is the alternative where the teacher's
encoder can be differentiated. The loss is the mean squared difference of the two normalised maps
(maps resized to the student's size first), 0 exactly when they agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from samdistill.losses.registry import LOSSES


def _normalise(m: torch.Tensor) -> torch.Tensor:
    flat = m.flatten(1)
    return (flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-8)).view_as(m)


def activation_saliency(features: torch.Tensor) -> torch.Tensor:
    """``BxCxHxW`` -> ``BxHxW`` unit-norm map of channel-mean squared activations."""
    return _normalise(features.float().pow(2).mean(1))


def input_gradient_saliency(score: torch.Tensor, images: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """``|d score.sum() / d images|`` max over colour channels, unit-norm per sample (``BxHxW``).
    ``images`` must require grad and ``score`` depend on it."""
    (grad,) = torch.autograd.grad(score.sum(), images, create_graph=create_graph)
    return _normalise(grad.abs().amax(1))


@LOSSES.register("saliency")
def saliency_loss(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """MSE between normalised saliency maps (``BxHxW`` each; the teacher's is detached and resized to
    the student's size and re-normalised if they differ)."""
    t = teacher_map.detach()
    if t.shape[-2:] != student_map.shape[-2:]:
        t = _normalise(F.interpolate(t[:, None], size=student_map.shape[-2:], mode="bilinear", align_corners=False)[:, 0])
    return (student_map - t).pow(2).sum((1, 2)).mean()
