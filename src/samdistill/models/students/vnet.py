"""A 2D VNet-style network for prompt-free students (KnowSAM's second sub-network).

Residual-free V-Net layout as used by semi-supervised segmentation codebases, in 2D: stages of
1-3 convs (3x3, BatchNorm, ReLU) with ``base * (1, 2, 4, 8, 16)`` channels, strided 2x2 convs
down, transposed convs up, skips added (not concatenated). ~3.3 M parameters at ``base=16``.
``Bx3xSxS -> BxCxSxS`` logits; S must be divisible by 16.
"""

from __future__ import annotations

import torch
from torch import nn


def _stage(n: int, cin: int, cout: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _resample(cin: int, cout: int, up: bool) -> nn.Sequential:
    conv = nn.ConvTranspose2d(cin, cout, 2, stride=2) if up else nn.Conv2d(cin, cout, 2, stride=2)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class VNet2D(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 2, base: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        ch = [base * m for m in (1, 2, 4, 8, 16)]
        depth = (1, 2, 3, 3, 3)
        self.enc = nn.ModuleList([_stage(depth[0], in_channels, ch[0])] + [_stage(depth[i], ch[i], ch[i]) for i in range(1, 5)])
        self.down = nn.ModuleList([_resample(ch[i], ch[i + 1], up=False) for i in range(4)])
        self.dec = nn.ModuleList([_stage(d, ch[i], ch[i]) for i, d in zip((3, 2, 1, 0), (3, 3, 2, 1))])
        self.up = nn.ModuleList([_resample(ch[i + 1], ch[i], up=True) for i in (3, 2, 1, 0)])
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Conv2d(ch[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, stage in enumerate(self.enc):
            x = stage(x)
            if i < 4:
                skips.append(x)
                x = self.down[i](x)
        for up, dec in zip(self.up, self.dec):
            x = dec(up(x) + skips.pop())
        return self.head(self.dropout(x))
