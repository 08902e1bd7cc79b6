"""A prompt-free student that is one UNet (:class:`~samdistill.models.students.unet.UNet2D`): the
network the standard semi-supervised rivals (Mean Teacher, ``--method meanteacher``) train, the same
UNet as KnowSAM's first sub-network.

:class:`UNetStudent` is a ``PromptFreeModel``: ``forward(images) -> logits`` (``BxCxSxS``, input frame),
``predict(image)`` gives a boolean mask in the original frame.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from samdistill.models.preprocess import Preprocess
from samdistill.models.students.fusion import KnowSAMStudent
from samdistill.models.students.unet import UNet2D
from samdistill.models.zoo import MODELS


class UNetStudent(nn.Module):
    kind = "promptfree"

    def __init__(self, *, preprocess: dict | Preprocess, num_classes: int = 2, base: int = 16,
                 family: str = "unet_student") -> None:
        super().__init__()
        self.preprocess = preprocess if isinstance(preprocess, Preprocess) else Preprocess.from_dict(preprocess)
        self.unet = UNet2D(3, num_classes, base)
        self.num_classes = num_classes
        self.family = family
        self.config = {"preprocess": self.preprocess.to_dict(), "num_classes": num_classes, "base": base}

    @property
    def input_size(self) -> int:
        return self.preprocess.input_size

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``Bx3xSxS`` -> ``BxCxSxS`` logits."""
        return self.unet(images)

    # the prompt-free binary view and prediction: one implementation, KnowSAMStudent's (they use only
    # ``self(images)``, ``self.preprocess`` and ``self.device``)
    foreground_logits = KnowSAMStudent.foreground_logits
    predict = KnowSAMStudent.predict

    def parameter_counts(self) -> dict[str, int]:
        u = sum(p.numel() for p in self.unet.parameters())
        return {"unet": u, "vnet": 0, "fusion": 0, "encoder": 0, "decoder": 0, "total": u}


def _builder(name: str, base: int):
    def build(pretrained: Any = None, checkpoint: str | None = None, teacher=None, preprocess: dict | None = None,
              **config: Any) -> UNetStudent:
        from samdistill.errors import UserError

        if checkpoint is not None:
            raise UserError(f"load a trained {name} from its samdistill checkpoint: samdistill.load_model(path)")
        if pretrained:
            raise UserError(f"{name} has no pretrained weights; it is trained from scratch")
        if preprocess is None:
            if teacher is None:
                raise UserError(f"{name} needs a teacher (for its input frame) or a preprocess spec")
            preprocess = teacher.preprocess.to_dict()
        config.setdefault("base", base)
        return UNetStudent(preprocess=preprocess, family=name, **config)

    build.__doc__ = f"Prompt-free UNet student (base width {base}): the semi-supervised rivals' network."
    return build


MODELS.register("unet_student", kind="student", input_size="teacher's", weights="trained", prompt_free=True)(
    _builder("unet_student", 16))
MODELS.register("test_unet_student", kind="student", input_size="teacher's", weights="trained", prompt_free=True,
                tiny=True)(_builder("test_unet_student", 4))
