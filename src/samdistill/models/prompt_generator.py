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
                          mask_logits: torch.Tensor, *, foreground: bool = False, size: int | None = None,
                          grad_rows: torch.Tensor | None = None) -> torch.Tensor:
    """SAM's ``BxCxSxS`` class logits with learned prompts: the generator's tokens in place of boxes and
    ``mask_logits`` (``BxCxHxW``, a student's prediction, detached here) as the dense mask prompt. The
    classes are decoded in one decoder call (stacked along the batch), not one call per class.

    ``foreground`` (binary tasks): one decode instead of two, SAM's native sigmoid mask as logits ``[0, l]``
    (softmax([0, l]) == sigmoid(l)). ``S`` = ``size``, by default ``mask_logits``'s size.

    ``grad_rows`` (``B`` bools): the rows whose logits need a gradient (SAM trains on the labeled images
    only; on the others its output is a detached target). The other rows are decoded under ``no_grad``, so
    their decoder activations are neither kept nor back-propagated: same values, same gradients, less work.
    ``None``: every row keeps its graph."""
    if grad_rows is None or not torch.is_grad_enabled() or bool(grad_rows.all()):
        return _learned_prompt_logits(teacher, prompt_generator, embeddings, mask_logits, foreground, size)
    with_grad, without = grad_rows.nonzero()[:, 0], (~grad_rows).nonzero()[:, 0]
    outs = []
    if len(with_grad):
        outs.append(_learned_prompt_logits(teacher, prompt_generator, embeddings[with_grad], mask_logits[with_grad],
                                           foreground, size))
    with torch.no_grad():
        outs.append(_learned_prompt_logits(teacher, prompt_generator, embeddings[without], mask_logits[without],
                                           foreground, size))
    return torch.cat(outs)[torch.argsort(torch.cat([with_grad, without]))]  # back to the batch's order


def _learned_prompt_logits(teacher, prompt_generator: PromptGenerator, embeddings: torch.Tensor,
                           mask_logits: torch.Tensor, foreground: bool, size: int | None) -> torch.Tensor:
    tokens = prompt_generator(embeddings)  # B x C x K x 256
    m = teacher.mask_prompt_size
    prompt = F.interpolate(mask_logits.detach(), size=(m, m), mode="bilinear", align_corners=False)
    b, num_classes = mask_logits.shape[:2]
    if foreground and num_classes == 2:
        fg = teacher.decode_tokens(embeddings, tokens[:, 1], prompt[:, 1:2] - prompt[:, :1])
        logits = torch.cat([torch.zeros_like(fg), fg], dim=1)
    else:
        # class-major rows (all images for class 0, then class 1, ...): one decoder call for every class
        # (decode_tokens loops over rows itself where the decoder takes one image at a time)
        out = teacher.decode_tokens(torch.cat([embeddings] * num_classes),
                                    tokens.transpose(0, 1).reshape(num_classes * b, *tokens.shape[2:]),
                                    prompt.transpose(0, 1).reshape(num_classes * b, 1, m, m))
        logits = out.reshape(num_classes, b, *out.shape[-2:]).transpose(0, 1)
    s = size or mask_logits.shape[-1]
    if logits.shape[-1] != s:
        logits = F.interpolate(logits, size=(s, s), mode="bilinear", align_corners=False)
    return logits
