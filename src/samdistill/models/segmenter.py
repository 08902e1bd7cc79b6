"""One call sequence for both kinds of segmentation model, so callers do not branch on the kind.

A ``PromptableModel`` (teachers, kdsam / nas students) encodes an image once and decodes each prompt;
a ``PromptFreeModel`` (KnowSAM students) segments the image outright. :func:`segmenter` wraps either
in the same four steps, each in the input frame until ``postprocess``:

    seg = segmenter(model)                       # None when the model is no segmentation model
    state = seg.encode(x)                        # Bx3xSxS -> embedding (promptable) or logits (prompt-free)
    low, iou = seg.decode(state, prompts, hw)    # prompts in original pixels; prompt-free: none, (state, None)
    full = seg.postprocess(low, hw)              # NxMxHxW logits in the original frame
    score = seg.score(full, iou)                 # predicted IoU (promptable) or mean confidence (prompt-free)

Only what truly differs stays with the kind: whether prompts exist (``prompt_free``), and the score.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class PromptableSegmenter:
    prompt_free = False

    def __init__(self, model: Any) -> None:
        self.model, self.preprocess = model, model.preprocess

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode(images)

    def decode(self, emb: torch.Tensor, prompts: dict[str, np.ndarray], hw: tuple[int, int]):
        """``prompts``: ``{"boxes": Nx4}`` or ``{"points": NxPx2, "labels": NxP}`` in original pixels, one
        image's embedding ``1xCxgxg`` -> (low-res logits ``Nx1xhxw``, predicted IoU ``Nx1``)."""
        pp, dev = self.preprocess, emb.device
        if "boxes" in prompts:
            boxes = torch.as_tensor(pp.boxes_to_input(prompts["boxes"], hw), dtype=torch.float32, device=dev)
            return self.model.decode(emb.expand(boxes.shape[0], -1, -1, -1), boxes=boxes)
        pts = torch.as_tensor(pp.points_to_input(prompts["points"], hw), dtype=torch.float32, device=dev)
        lab = torch.as_tensor(prompts["labels"], dtype=torch.int64, device=dev)
        return self.model.decode(emb.expand(pts.shape[0], -1, -1, -1), points=(pts, lab))

    def postprocess(self, low_res_logits: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        return self.model.postprocess(low_res_logits, hw)

    def score(self, full: torch.Tensor, iou: torch.Tensor) -> float:
        return float(iou.float().mean())


class PromptFreeSegmenter:
    prompt_free = True

    def __init__(self, model: Any) -> None:
        self.model, self.preprocess = model, model.preprocess

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``Bx3xSxS`` -> ``Bx1xSxS`` foreground logits: the whole prediction, so decoding has nothing to do."""
        return self.model.foreground_logits(images)

    def decode(self, logits: torch.Tensor, prompts: dict[str, np.ndarray] | None = None,
               hw: tuple[int, int] | None = None) -> tuple[torch.Tensor, None]:
        if prompts:
            raise ValueError("a prompt-free model takes no prompts")
        return logits, None

    def postprocess(self, logits: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        return self.preprocess.logits_to_original(logits, hw)

    def score(self, full: torch.Tensor, iou: None = None) -> float:
        """Mean probability over the predicted foreground (0 when there is none)."""
        return float(torch.sigmoid(full)[full > 0].mean()) if (full > 0).any() else 0.0


SEGMENTERS = {"promptable": PromptableSegmenter, "promptfree": PromptFreeSegmenter}


def segmenter(model: Any) -> PromptableSegmenter | PromptFreeSegmenter | None:
    """``model`` behind the common steps, by its ``kind``; None when it is no segmentation model."""
    cls = SEGMENTERS.get(getattr(model, "kind", None))
    return None if cls is None else cls(model)
