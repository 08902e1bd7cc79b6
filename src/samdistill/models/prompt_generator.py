"""KnowSAM's learnable prompt generator: image embedding -> prompt tokens, in place of boxes.

For each class, ``tokens_per_class`` learned queries attend over the (projected) image embedding
and come out as sparse prompt embeddings for SAM's mask decoder:
``tokens[c] = q[c] + W_o softmax(q[c] W_q (E W_k)^T / sqrt(d)) (E W_v)``.
``Bx256xgxg -> BxCxKx256``.
"""

from __future__ import annotations

import torch
from torch import nn


class PromptGenerator(nn.Module):
    def __init__(self, num_classes: int = 2, tokens_per_class: int = 2, dim: int = 256, inner: int = 64) -> None:
        super().__init__()
        self.num_classes, self.k = num_classes, tokens_per_class
        self.queries = nn.Parameter(torch.randn(num_classes * tokens_per_class, dim) * 0.02)
        self.reduce = nn.Sequential(nn.Conv2d(dim, inner, 3, padding=1), nn.GELU())
        self.q, self.kproj, self.v = nn.Linear(dim, inner), nn.Linear(inner, inner), nn.Linear(inner, inner)
        self.out = nn.Linear(inner, dim)
        self.scale = inner ** -0.5

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        b = embeddings.shape[0]
        feats = self.reduce(embeddings).flatten(2).transpose(1, 2)  # B x g*g x inner
        q = self.q(self.queries)  # N x inner
        attn = torch.einsum("nd,bld->bnl", q, self.kproj(feats)) * self.scale
        tokens = self.queries + self.out(torch.einsum("bnl,bld->bnd", attn.softmax(-1), self.v(feats)))
        return tokens.reshape(b, self.num_classes, self.k, -1)
