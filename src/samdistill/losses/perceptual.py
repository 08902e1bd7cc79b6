"""Perceptual loss: compare student and teacher through a frozen feature network.

Default (works offline): the teacher's own mask decoder. Both embeddings go through the teacher's
frozen two-way transformer under the same box prompts; the loss is the MSE of its outputs (the
prompt tokens and the prompt-conditioned image tokens; the output upscaling is left out because it
costs more than the rest and adds only a learned upsampling), i.e. i.e. "does the teacher's decoder *see* the same thing in both embeddings".
Option: torchvision VGG16 features of the decoded mask probabilities, when a local VGG16 weights
file is given (it is never downloaded).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from samdistill.errors import CheckpointError
from samdistill.losses.embedding import pooled_embedding, teacher_channels
from samdistill.losses.registry import LOSSES


@LOSSES.register("perceptual_decoder")
def decoder_activations(prompt_encoder, mask_decoder, emb: torch.Tensor, boxes: torch.Tensor):
    """A SAM mask decoder's two-way transformer outputs for one box per embedding:
    ``(hs BxTx256 prompt tokens, keys Bx(g*g)x256 attention-refined image tokens)``."""
    sparse, dense = prompt_encoder(points=None, boxes=boxes, masks=None)
    tokens = torch.cat([mask_decoder.iou_token.weight, mask_decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat([tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
    pos = torch.repeat_interleave(prompt_encoder.get_dense_pe(), tokens.shape[0], dim=0)
    return mask_decoder.transformer(emb + dense, pos, tokens)


class capture_decoder_tokens:
    """Context manager: records what a SAM mask decoder's two-way transformer produces during ``decode``
    calls, so a loss can use them without a second pass: the image tokens (``keys``, ``Bx(g*g)x256``)
    and the output tokens (``BxTx256``: the IoU token, the mask tokens, then the prompt tokens); with
    ``features=True`` also the mask features the hypernetworks read (``BxCx4gx4g``: the upscaled
    embedding, plus the detail map in a detail student's decoder)."""

    def __init__(self, mask_decoder, features: bool = False) -> None:
        self.transformer, self.keys, self.queries = mask_decoder.transformer, [], []
        self.n_output_tokens = 1 + mask_decoder.num_mask_tokens
        self.features: list[torch.Tensor] = []
        self._feature_module = getattr(mask_decoder, "mask_features", mask_decoder.output_upscaling) if features else None

    def __enter__(self) -> "capture_decoder_tokens":
        def hook(m, i, o):
            self.queries.append(o[0])
            self.keys.append(o[1])

        self._hooks = [self.transformer.register_forward_hook(hook)]
        if self._feature_module is not None:
            self._hooks.append(self._feature_module.register_forward_hook(lambda m, i, o: self.features.append(o)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._hooks:
            h.remove()

    @property
    def mask_features(self) -> torch.Tensor:
        """The mask features of every call recorded (``features=True``)."""
        return torch.cat(self.features)

    @property
    def image_tokens(self) -> torch.Tensor:
        return torch.cat(self.keys)

    @property
    def output_tokens(self) -> torch.Tensor:
        """``Bx(1+M)x256``: the IoU token and the M mask tokens after the transformer (what the IoU head
        and the hypernetworks read), from every call recorded."""
        return torch.cat([q[:, : self.n_output_tokens] for q in self.queries])


class DecoderPerceptual(nn.Module):
    """Activations of the teacher's (frozen) mask decoder as the feature network.

    ``forward(student_emb BxCxgxg, teacher_emb Bx256xGxG, boxes Bx4 input frame) -> scalar`` (a student's
    channels past the teacher's, a packed detail map, are not compared). A student
    on a coarser grid (``grid``) is compared with the teacher's embedding pooled to its grid
    (:func:`samdistill.losses.embedding.pooled_embedding`), both read by the teacher's decoder with the
    positional encoding of that grid.
    """

    def __init__(self, teacher, grid: int | None = None) -> None:
        super().__init__()
        self.prompt_encoder = copy.deepcopy(teacher.prompt_encoder).eval()
        if grid is not None:
            self.prompt_encoder.image_embedding_size = (int(grid), int(grid))
        self.mask_decoder = copy.deepcopy(teacher.mask_decoder).eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def features(self, emb: torch.Tensor, boxes: torch.Tensor) -> list[torch.Tensor]:
        return list(decoder_activations(self.prompt_encoder, self.mask_decoder, emb, boxes))

    def forward(self, student_emb: torch.Tensor, teacher_emb: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        fs = self.features(teacher_channels(student_emb, teacher_emb), boxes)
        with torch.no_grad():
            ft = self.features(pooled_embedding(teacher_emb, student_emb.shape[-1]).to(student_emb.dtype), boxes)
        return sum(F.mse_loss(a, b) for a, b in zip(fs, ft)) / len(fs)


@LOSSES.register("perceptual_vgg16")
class VGGPerceptual(nn.Module):
    """VGG16 (conv1_2 .. conv3_3) features of mask probabilities ``Bx1xHxW`` (student vs teacher)."""

    def __init__(self, weights_path: str) -> None:
        super().__init__()
        from torchvision.models import vgg16

        net = vgg16()
        try:
            net.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
        except FileNotFoundError:
            raise CheckpointError(f"VGG16 weights not found: {weights_path} (torchvision vgg16 state dict)") from None
        except Exception as exc:
            raise CheckpointError(f"cannot load VGG16 weights from {weights_path}: {type(exc).__name__}") from None
        self.features = net.features[:16].eval()
        for p in self.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, student_prob: torch.Tensor, teacher_prob: torch.Tensor) -> torch.Tensor:
        def f(x):
            return self.features((x.expand(-1, 3, -1, -1) - self.mean) / self.std)

        with torch.no_grad():
            ft = f(teacher_prob)
        return F.mse_loss(f(student_prob), ft)
