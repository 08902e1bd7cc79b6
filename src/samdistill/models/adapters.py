"""Bottleneck adapters inserted into a frozen image encoder (KnowSAM's trainable SAM encoder part).

:func:`add_adapters` wraps every block of the encoder's ``blocks`` lists (SAM ViT, TinyViT and
MobileSAM all keep their blocks there) as ``y = block(x); y + up(act(down(y)))``. ``up`` starts at
zero, so an adapted encoder first computes exactly what the frozen one did. Token blocks
(``...xC`` layout, any block holding an ``nn.Linear``) get a Linear bottleneck on the last axis;
conv blocks (``BxCxHxW``) a 1x1-conv bottleneck. An encoder with no ``blocks`` list (the tiny test
teacher) gets conv adapters after each inner conv.
"""

from __future__ import annotations

import torch
from torch import nn


class Adapter(nn.Module):
    def __init__(self, dim: int, ratio: float = 0.25, channels_last: bool = True) -> None:
        super().__init__()
        hidden = max(4, int(dim * ratio))
        self.channels_last = channels_last
        if channels_last:
            self.down, self.up = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        else:
            self.down, self.up = nn.Conv2d(dim, hidden, 1), nn.Conv2d(hidden, dim, 1)
        self.act = nn.GELU()
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.act(self.down(x)))


class Adapted(nn.Module):
    """A frozen module followed by its adapter; attribute access falls through to the module."""

    def __init__(self, module: nn.Module, adapter: Adapter) -> None:
        super().__init__()
        self.module, self.adapter = module, adapter

    def forward(self, *args, **kwargs):
        return self.adapter(self.module(*args, **kwargs))


def _block_adapter(block: nn.Module, ratio: float) -> Adapter | None:
    linears = [m for m in block.modules() if isinstance(m, nn.Linear)]
    if linears:
        return Adapter(linears[0].in_features, ratio, channels_last=True)
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return Adapter(convs[-1].out_channels, ratio, channels_last=False) if convs else None


def add_adapters(encoder: nn.Module, ratio: float = 0.25) -> nn.ModuleList:
    """Insert adapters in place; returns them (their parameters are the only ones to train)."""
    adapters = nn.ModuleList()
    lists = [m for name, m in encoder.named_modules() if name.split(".")[-1] == "blocks" and isinstance(m, nn.ModuleList)]
    if lists:
        for blocks in lists:
            for i, block in enumerate(list(blocks)):
                a = _block_adapter(block, ratio)
                if a is not None:
                    blocks[i] = Adapted(block, a)
                    adapters.append(a)
    else:
        for parent in list(encoder.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Conv2d) and child.in_channels > 3:
                    a = Adapter(child.out_channels, ratio, channels_last=False)
                    setattr(parent, name, Adapted(child, a))
                    adapters.append(a)
    if not len(adapters):
        raise ValueError(f"found no place for adapters in {type(encoder).__name__}")
    dev = next(encoder.parameters()).device
    return adapters.to(dev)
