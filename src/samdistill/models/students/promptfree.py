"""What every prompt-free student shares: its input frame, the binary foreground view, ``predict`` in
the original frame, and the registry builder (KnowSAM's UNet + VNet in ``fusion.py``, the semi-supervised
rivals' UNet in ``unet_student.py``).

A subclass sets ``self.preprocess`` and implements ``forward(images) -> BxCxSxS logits``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from samdistill.models.zoo import MODELS


class PromptFreeStudent(nn.Module):
    kind = "promptfree"

    @property
    def input_size(self) -> int:
        return self.preprocess.input_size

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def foreground_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Binary view: ``Bx1xSxS`` logit of "any foreground class" (log-odds against background)."""
        logits = self(images)
        fg = torch.logsumexp(logits[:, 1:], dim=1, keepdim=True)
        return fg - logits[:, :1]

    @torch.no_grad()
    def predict(self, image: np.ndarray, boxes: np.ndarray | None = None) -> np.ndarray:
        """Image (HxW[x3]) -> boolean foreground mask ``1xHxW`` in the original frame (no prompt)."""
        hw = tuple(np.asarray(image).shape[:2])
        x = self.preprocess.image(image)[None].to(self.device)
        logits = self.foreground_logits(x)
        return (self.preprocess.logits_to_original(logits, hw)[:, 0] > 0).cpu().numpy()


def register_prompt_free(cls: Callable[..., PromptFreeStudent], name: str, base: int, doc: str, *,
                         trained_by: str = "", tiny: bool = False) -> None:
    """Register ``name`` as a builder of ``cls`` with base width ``base``; its input frame comes from the
    teacher (``teacher=``) or a checkpoint's ``preprocess`` spec."""

    def build(pretrained: Any = None, checkpoint: str | None = None, teacher=None, preprocess: dict | None = None,
              **config: Any) -> PromptFreeStudent:
        from samdistill.errors import UserError

        if checkpoint is not None:
            raise UserError(f"load a trained {name} from its samdistill checkpoint: samdistill.load_model(path)")
        if pretrained:
            raise UserError(f"{name} has no pretrained weights; it is trained from scratch{trained_by}")
        if preprocess is None:
            if teacher is None:
                raise UserError(f"{name} needs a teacher (for its input frame) or a preprocess spec")
            preprocess = teacher.preprocess.to_dict()
        config.setdefault("base", base)
        return cls(preprocess=preprocess, family=name, **config)

    build.__doc__ = doc
    meta = {"tiny": True} if tiny else {}
    MODELS.register(name, kind="student", input_size="teacher's", weights="trained", prompt_free=True, **meta)(build)
