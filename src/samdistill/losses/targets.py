"""Mask targets brought to the resolution of the logits they supervise (shared by the losses' callers
and the per-epoch validation, so both compare against the same target)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def target_like(mask: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``BxSxS`` input-frame mask -> ``Bx1xhxw`` float {0, 1} at the logits' resolution (area-averaged
    and thresholded at 0.5 when the sizes differ, so a target pixel is foreground when most of it is)."""
    m = mask[:, None].float()
    if m.shape[-2:] != logits.shape[-2:]:
        m = (F.interpolate(m, size=logits.shape[-2:], mode="area") > 0.5).float()
    return m
