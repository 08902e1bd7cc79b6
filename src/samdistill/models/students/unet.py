"""A 2D UNet for prompt-free students (KnowSAM's first sub-network).

Five levels, channels ``base * (1, 2, 4, 8, 16)`` (16..256 by default: ~1.8 M parameters), two
3x3 conv + BatchNorm + LeakyReLU per level, max-pool down, transposed-conv up, skip concatenation.
``Bx3xSxS -> BxCxSxS`` logits; S must be divisible by 16.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_block(cin: int, cout: int, dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.01, inplace=True),
        nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.01, inplace=True),
    )


class UNet2D(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 2, base: int = 16,
                 dropout: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5)) -> None:
        super().__init__()
        ch = [base * m for m in (1, 2, 4, 8, 16)]
        self.down = nn.ModuleList([conv_block(in_channels, ch[0], dropout[0])] +
                                  [conv_block(ch[i - 1], ch[i], dropout[i]) for i in range(1, 5)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.ConvTranspose2d(ch[i], ch[i - 1], 2, stride=2) for i in range(4, 0, -1)])
        self.fuse = nn.ModuleList([conv_block(2 * ch[i - 1], ch[i - 1]) for i in range(4, 0, -1)])
        self.head = nn.Conv2d(ch[0], num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, fuse in zip(self.up, self.fuse):
            x = fuse(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)
