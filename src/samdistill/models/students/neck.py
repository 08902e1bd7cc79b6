"""A light multi-scale neck: timm feature maps -> the teacher's embedding grid (256 channels).

FPN-style: each level gets a 1x1 lateral projection, all are resized to the target grid and summed,
then one 3x3 conv fuses them and a 1x1 conv lifts to 256 channels, normalised like SAM's own neck
(LayerNorm over channels), so the output lives where the teacher's embedding does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from samdistill.models.layernorm import LayerNorm2d


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
