"""Candidate operations of the search space, each ``C -> C`` at stride 1, with exact MACs.

Every op returns a tensor of its input's shape. ``macs(c, h, w)`` is the number of multiply-adds that
``torch.utils.flop_counter`` counts for one ``1 x c x h x w`` input (convolutions and matmuls;
normalisation and activations are not counted), so the search's resource term and the measured MACs
of the final network agree.

Candidates: MBConv (3x3 / 5x5 depthwise, expansion 3 / 6), fused-MBConv (3x3, expansion 3),
depthwise-separable conv, a RepViT-style block (depthwise token mixer + 1x1 channel mixer), ReLU
linear attention (EfficientViT-style, attention without softmax), and skip. ``zero`` (no connection)
is offered only where a path can vanish without breaking the graph: the neck's lateral inputs.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn


def _bn_act(c: int, act: bool = True) -> list[nn.Module]:
    return [nn.BatchNorm2d(c)] + ([nn.ReLU(inplace=True)] if act else [])


class MBConv(nn.Module):
    def __init__(self, c: int, k: int = 3, e: int = 6) -> None:
        super().__init__()
        h = c * e
        self.k, self.e = k, e
        self.body = nn.Sequential(
            nn.Conv2d(c, h, 1, bias=False), *_bn_act(h),
            nn.Conv2d(h, h, k, padding=k // 2, groups=h, bias=False), *_bn_act(h),
            nn.Conv2d(h, c, 1, bias=False), *_bn_act(c, act=False),
        )

    def forward(self, x):
        return x + self.body(x)

    def macs(self, c, h, w):
        hid = c * self.e
        return h * w * (c * hid + hid * self.k * self.k + hid * c)


class FusedMBConv(nn.Module):
    def __init__(self, c: int, k: int = 3, e: int = 3) -> None:
        super().__init__()
        hid = c * e
        self.k, self.e = k, e
        self.body = nn.Sequential(nn.Conv2d(c, hid, k, padding=k // 2, bias=False), *_bn_act(hid),
                                  nn.Conv2d(hid, c, 1, bias=False), *_bn_act(c, act=False))

    def forward(self, x):
        return x + self.body(x)

    def macs(self, c, h, w):
        hid = c * self.e
        return h * w * (c * hid * self.k * self.k + hid * c)


class DWSep(nn.Module):
    def __init__(self, c: int, k: int = 3) -> None:
        super().__init__()
        self.k = k
        self.body = nn.Sequential(nn.Conv2d(c, c, k, padding=k // 2, groups=c, bias=False), *_bn_act(c),
                                  nn.Conv2d(c, c, 1, bias=False), *_bn_act(c, act=False))

    def forward(self, x):
        return x + self.body(x)

    def macs(self, c, h, w):
        return h * w * (c * self.k * self.k + c * c)


class RepViTBlock(nn.Module):
    """Token mixer (3x3 depthwise + BN, residual) then channel mixer (1x1 -> 2c -> c, residual)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.token = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), nn.BatchNorm2d(c))
        self.channel = nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.BatchNorm2d(2 * c), nn.GELU(),
                                     nn.Conv2d(2 * c, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        x = x + self.token(x)
        return x + self.channel(x)

    def macs(self, c, h, w):
        return h * w * (9 * c + 2 * c * c + 2 * c * c)


class LinearAttention(nn.Module):
    """ReLU linear attention: ``out = (phi(q) (phi(k)^T v)) / (phi(q) sum(phi(k)))``, phi = ReLU, heads
    of ``head_dim`` channels; 1x1 qkv and output projections; residual."""

    def __init__(self, c: int, head_dim: int = 8) -> None:
        super().__init__()
        self.d = min(head_dim, c)
        self.heads = c // self.d
        self.qkv = nn.Conv2d(c, 3 * c, 1, bias=False)
        self.proj = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).reshape(b, 3, self.heads, self.d, h * w).unbind(1)  # B x heads x d x N
        q, k = torch.relu(q).transpose(-1, -2), torch.relu(k)  # q: B x heads x N x d
        kv = torch.matmul(k, v.transpose(-1, -2))  # B x heads x d x d
        num = torch.matmul(q, kv)  # B x heads x N x d
        den = torch.matmul(q, k.sum(-1, keepdim=True))  # B x heads x N x 1
        out = (num / (den + 1e-6)).transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)

    def macs(self, c, h, w):
        n = h * w
        return n * 3 * c * c + n * c * self.d + n * c * self.d + n * c + n * c * c


class Skip(nn.Module):
    def forward(self, x):
        return x

    def macs(self, c, h, w):
        return 0


#: name -> builder(c) ; the order is the order of the architecture weights
OPS: dict[str, Callable[[int], nn.Module]] = {
    "mbconv_k3_e3": lambda c: MBConv(c, 3, 3),
    "mbconv_k3_e6": lambda c: MBConv(c, 3, 6),
    "mbconv_k5_e3": lambda c: MBConv(c, 5, 3),
    "mbconv_k5_e6": lambda c: MBConv(c, 5, 6),
    "fused_mbconv_k3_e3": lambda c: FusedMBConv(c, 3, 3),
    "dwsep_k3": lambda c: DWSep(c, 3),
    "repvit": lambda c: RepViTBlock(c),
    "linear_attention": lambda c: LinearAttention(c),
    "skip": lambda c: Skip(),
}


@functools.lru_cache(maxsize=None)
def op_macs(name: str, c: int, h: int, w: int) -> int:
    """MACs of candidate ``name`` at ``c`` channels and ``h x w``.

    Builds the op, whose initialisation would draw from torch's global RNG the first time a size is asked
    for (then cached): forked, so a search that resumes draws the same random numbers as one that did not stop."""
    with torch.random.fork_rng(devices=[]):
        return int(OPS[name](c).macs(c, h, w))
