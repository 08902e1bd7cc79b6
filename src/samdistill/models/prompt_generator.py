"""KnowSAM's learnable prompt generator: image embedding -> prompt tokens, in place of boxes.

For each class, ``tokens_per_class`` learned queries attend over the (projected) image embedding
and come out as sparse prompt embeddings for SAM's mask decoder:
``tokens[c] = q[c] + W_o softmax(q[c] W_q (E W_k)^T / sqrt(d)) (E W_v)``.
``Bx256xgxg -> BxCxKx256``.

:func:`learned_prompt_logits` is how a method segments with SAM through it (KnowSAM, Mean Teacher + SKD).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


def learned_prompt_logits(teacher, prompt_generator: PromptGenerator, embeddings: torch.Tensor,
                          mask_logits: torch.Tensor, *, foreground: bool = False, size: int | None = None
                          ) -> torch.Tensor:
    """SAM's ``BxCxSxS`` class logits with learned prompts: one decode per class, the generator's tokens
    in place of boxes and ``mask_logits`` (``BxCxHxW``, a student's prediction, detached here) as the
    dense mask prompt.

    ``foreground`` (binary tasks): one decode instead of two, SAM's native sigmoid mask as logits ``[0, l]``
    (softmax([0, l]) == sigmoid(l)). ``S`` = ``size``, by default ``mask_logits``'s size."""
    tokens = prompt_generator(embeddings)
    m = teacher.mask_prompt_size
    prompt = F.interpolate(mask_logits.detach(), size=(m, m), mode="bilinear", align_corners=False)
    num_classes = mask_logits.shape[1]
    if foreground and num_classes == 2:
        fg = teacher.decode_tokens(embeddings, tokens[:, 1], prompt[:, 1:2] - prompt[:, :1])
        logits = torch.cat([torch.zeros_like(fg), fg], dim=1)
    else:
        outs = [teacher.decode_tokens(embeddings, tokens[:, c], prompt[:, c : c + 1]) for c in range(num_classes)]
        logits = torch.cat(outs, dim=1)
    s = size or mask_logits.shape[-1]
    if logits.shape[-1] != s:
        logits = F.interpolate(logits, size=(s, s), mode="bilinear", align_corners=False)
    return logits
