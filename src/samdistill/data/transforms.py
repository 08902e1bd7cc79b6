"""Batch augmentations on tensors in the model's input frame (the semi-supervised methods; KD SAM's
student-only photometric jitter).

Weak: per-sample horizontal/vertical flips (their own inverse, so a prediction made on the unflipped
image can be brought into the flipped frame and back). Strong: weak + brightness/contrast jitter and
Gaussian noise. Uncertainty-guided mixing: the ``top_k`` most confident cells of a ``grid x grid``
partition are pasted from one image (and its label) into another.
All randomness comes from torch's global RNG, which the trainer seeds and checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_flips(n: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Two bool vectors of length ``n`` (horizontal, vertical), each True with probability 1/2."""
    r = torch.rand(n, 2)
    return (r[:, 0] < 0.5).to(device), (r[:, 1] < 0.5).to(device)


def apply_flips(t: torch.Tensor, hflip: torch.Tensor, vflip: torch.Tensor) -> torch.Tensor:
    """Flip each sample of ``t`` (``Bx...xHxW``) where its flag is set; applying twice is the identity."""
    shape = (-1,) + (1,) * (t.dim() - 1)
    t = torch.where(hflip.view(shape), t.flip(-1), t)
    return torch.where(vflip.view(shape), t.flip(-2), t)


def to_frame(images: torch.Tensor, masks: torch.Tensor | None = None, size: int | None = None
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images ``Bx3xSxS`` (and masks ``BxSxS``) in one input frame -> the same frame at ``size`` px.

    Every model's frame is the same resize-longest-side + pad, so shrinking a padded frame gives the
    smaller model's frame (images antialiased, like ``Preprocess.image``; masks nearest, dtype kept)."""
    if size is None or images.shape[-1] == size:
        return images, masks
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    if masks is not None:
        masks = F.interpolate(masks[:, None].float(), size=(size, size), mode="nearest")[:, 0].to(masks.dtype)
    return images, masks


def clipped_noise(x: torch.Tensor, std: float = 0.1, clip: float = 0.2) -> torch.Tensor:
    """``x`` + Gaussian noise (``std``) clipped to ±``clip``: the Mean Teacher's input perturbation
    (as in the SSL4MIS code: std 0.1, clip 0.2)."""
    return x + (torch.randn(x.shape) * std).clamp(-clip, clip).to(x)


def photometric(x: torch.Tensor, strength: float = 0.2) -> torch.Tensor:
    """Per-sample brightness shift and contrast scale (uniform ±strength, in normalised units) plus
    Gaussian noise (std strength/2). ``Bx3xHxW``."""
    b = x.shape[0]
    shift = (torch.rand(b, 1, 1, 1) * 2 - 1).to(x) * strength
    scale = 1 + (torch.rand(b, 1, 1, 1) * 2 - 1).to(x) * strength
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * scale + mean + shift + torch.randn_like(x) * (strength / 2)


def confident_regions(uncertainty: torch.Tensor, grid: int = 4, top_k: int = 5) -> torch.Tensor:
    """``BxHxW`` uncertainty -> ``BxHxW`` {0,1} mask of the ``top_k`` cells (of ``grid x grid``) with
    the lowest mean uncertainty. H and W must be divisible by ``grid``."""
    b, h, w = uncertainty.shape
    cells = F.adaptive_avg_pool2d(uncertainty[:, None], grid).flatten(1)  # B x grid²
    idx = cells.topk(min(top_k, grid * grid), dim=1, largest=False).indices
    chosen = torch.zeros_like(cells).scatter_(1, idx, 1.0).view(b, 1, grid, grid)
    return F.interpolate(chosen, size=(h, w), mode="nearest")[:, 0]


def paste(dst_img: torch.Tensor, dst_lab: torch.Tensor, src_img: torch.Tensor, src_lab: torch.Tensor,
          region: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inside ``region`` (``BxHxW`` in {0,1}) take image and label from ``src``, elsewhere from ``dst``.
    Images ``BxCxHxW``, labels ``BxHxW``: the label of every pixel stays the label of its image pixel."""
    r = region.to(dst_img.dtype)
    img = dst_img * (1 - r[:, None]) + src_img * r[:, None]
    lab = torch.where(region.bool(), src_lab, dst_lab)
    return img, lab
