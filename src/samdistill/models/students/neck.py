"""A light multi-scale neck: timm feature maps -> the teacher's embedding grid (256 channels).

FPN-style: each level gets a 1x1 lateral projection, all are resized to the target grid and summed,
then one 3x3 conv fuses them and a 1x1 conv lifts to 256 channels, normalised like SAM's own neck
(LayerNorm over channels), so the output lives where the teacher's embedding does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a ``BxCxHxW`` map (as in SAM's image encoder neck).

    ``(x - mean_c) / sqrt(var_c + eps) * weight + bias``, computed by the fused ``F.layer_norm`` on the
    channels-last view: the same numbers and state dict as SAM's element-wise version, but one kernel
    instead of eight passes over a 256 x 64 x 64 map; forward + backward is about 2.4x faster on CPU,
    which shortens every student's training step (the stage-1 step at 256 px by ~27 ms/image here).
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps
        self.channels = channels  # a constant (not x.shape[1]) so ONNX export sees a static normalised shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (self.channels,), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class FusionNeck(nn.Module):
    """``[B x C_i x H_i x W_i] -> B x out_chans x grid x grid``."""

    def __init__(self, in_channels: list[int], grid: int, width: int = 128, out_chans: int = 256) -> None:
        super().__init__()
        self.grid = grid
        self.laterals = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.GELU(),
            nn.Conv2d(width, out_chans, 1),
            LayerNorm2d(out_chans),
        )

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = (self.grid, self.grid)
        x = None
        for lat, f in zip(self.laterals, feats):
            y = lat(f)
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            x = y if x is None else x + y
        return self.fuse(x)
