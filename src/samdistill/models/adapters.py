"""Bottleneck adapters inserted into a frozen image encoder (KnowSAM's trainable SAM encoder part).

:func:`add_adapters` wraps every block of the encoder's ``blocks`` lists (SAM ViT, TinyViT and
MobileSAM all keep their blocks there) as ``y = block(x); y + up(act(down(y)))``. ``up`` starts at
zero, so an adapted encoder first computes exactly what the frozen one did. Token blocks
(``...xC`` layout, any block holding an ``nn.Linear``) get a Linear bottleneck on the last axis;
conv blocks (``BxCxHxW``) a 1x1-conv bottleneck. An encoder with no ``blocks`` list (the tiny test
teacher) gets conv adapters after each inner conv.

:func:`add_decoder_adapters` adapts SAM's mask decoder the way the KnowSAM authors' code does: in
every two-way attention block one "space" adapter (with skip) after each of the three attentions and
one "MLP" adapter (no skip, scale 0.5) in parallel to the MLP, and a space adapter after the final
token-to-image attention and after the final norm. These work with a frozen, cached image encoder,
so SAM can adapt to the task on a CPU. Unlike the reference code, every ``up`` starts at zero: the
adapted decoder first computes exactly what the teacher's did.
"""

from __future__ import annotations

import torch
from torch import nn


class Adapter(nn.Module):
    """``x + up(act(down(x)))``; with ``skip=False`` only the bottleneck ``up(act(down(x)))``."""

    def __init__(self, dim: int, ratio: float = 0.25, channels_last: bool = True, skip: bool = True) -> None:
        super().__init__()
        hidden = max(4, int(dim * ratio))
        self.channels_last, self.skip = channels_last, skip
        if channels_last:
            self.down, self.up = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        else:
            self.down, self.up = nn.Conv2d(dim, hidden, 1), nn.Conv2d(hidden, dim, 1)
        self.act = nn.GELU()
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.up(self.act(self.down(x)))
        return x + d if self.skip else d


class ParallelAdapter(nn.Module):
    """``y = module(x) + scale * adapter(x)`` with a skip-less adapter (the reference code's MLP adapter)."""

    def __init__(self, module: nn.Module, adapter: Adapter, scale: float = 0.5) -> None:
        super().__init__()
        self.module, self.adapter, self.scale = module, adapter, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x) + self.scale * self.adapter(x)


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


def add_decoder_adapters(mask_decoder: nn.Module, ratio: float = 0.25) -> nn.ModuleList:
    """Insert adapters in SAM's mask decoder (segment-anything's ``TwoWayTransformer`` layout) in place;
    returns them. Raises ``ValueError`` for a decoder without that layout."""
    tr = getattr(mask_decoder, "transformer", None)
    if tr is None or not hasattr(tr, "layers") or not hasattr(tr, "final_attn_token_to_image"):
        raise ValueError(f"{type(mask_decoder).__name__} has no two-way transformer to adapt")
    dim = tr.norm_final_attn.normalized_shape[0]
    adapters = nn.ModuleList()
    for block in tr.layers:
        space, mlp = Adapter(dim, ratio), Adapter(dim, ratio, skip=False)
        for name in ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token"):
            setattr(block, name, Adapted(getattr(block, name), space))
        block.mlp = ParallelAdapter(block.mlp, mlp)
        adapters.extend([space, mlp])
    final = Adapter(dim, ratio)
    tr.final_attn_token_to_image = Adapted(tr.final_attn_token_to_image, final)
    tr.norm_final_attn = Adapted(tr.norm_final_attn, final)
    adapters.append(final)
    dev = next(mask_decoder.parameters()).device
    return adapters.to(dev)
