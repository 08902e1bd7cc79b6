"""Box prompts from batched input-frame masks (training-time prompt simulation, on tensors)."""

from __future__ import annotations

import torch


def tight_boxes(masks: torch.Tensor) -> torch.Tensor:
    """``BxHxW`` {0,1} masks -> ``Bx4`` tight boxes (x0, y0, x1, y1), inclusive; empty masks give the
    whole frame (callers drop empty masks before prompting)."""
    b, h, w = masks.shape
    fg = masks > 0.5
    rows, cols = fg.any(2), fg.any(1)
    ar_h = torch.arange(h, device=masks.device).expand(b, h)
    ar_w = torch.arange(w, device=masks.device).expand(b, w)
    big = torch.full_like(ar_h, h), torch.full_like(ar_w, w)
    y0 = torch.where(rows, ar_h, big[0]).min(1).values
    y1 = torch.where(rows, ar_h, -1).max(1).values
    x0 = torch.where(cols, ar_w, big[1]).min(1).values
    x1 = torch.where(cols, ar_w, -1).max(1).values
    empty = ~rows.any(1)
    boxes = torch.stack([x0, y0, x1, y1], 1).float()
    boxes[empty] = torch.tensor([0.0, 0.0, w - 1.0, h - 1.0], device=masks.device)
    return boxes


def jitter(boxes: torch.Tensor, shift: float, size: int) -> torch.Tensor:
    """Move each side out by uniform 0..``shift`` px (torch's global RNG: seeded and checkpointed)."""
    if shift <= 0:
        return boxes
    d = torch.rand(boxes.shape, device=boxes.device) * shift
    out = boxes + d * torch.tensor([-1.0, -1.0, 1.0, 1.0], device=boxes.device)
    return out.clamp(0, size - 1)
