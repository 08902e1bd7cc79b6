"""A prompt-free student that is one UNet (:class:`~samdistill.models.students.unet.UNet2D`): the
network the standard semi-supervised rivals (Mean Teacher, ``--method meanteacher``) train, the same
UNet as KnowSAM's first sub-network.

:class:`UNetStudent` is a ``PromptFreeModel``: ``forward(images) -> logits`` (``BxCxSxS``, input frame),
``predict(image)`` gives a boolean mask in the original frame.
"""

from __future__ import annotations

import torch

from samdistill.models.preprocess import Preprocess
from samdistill.models.students.promptfree import PromptFreeStudent, register_prompt_free
from samdistill.models.students.unet import UNet2D


class UNetStudent(PromptFreeStudent):
    def __init__(self, *, preprocess: dict | Preprocess, num_classes: int = 2, base: int = 16,
                 family: str = "unet_student") -> None:
        super().__init__()
        self.preprocess = preprocess if isinstance(preprocess, Preprocess) else Preprocess.from_dict(preprocess)
        self.unet = UNet2D(3, num_classes, base)
        self.num_classes = num_classes
        self.family = family
        self.config = {"preprocess": self.preprocess.to_dict(), "num_classes": num_classes, "base": base}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``Bx3xSxS`` -> ``BxCxSxS`` logits."""
        return self.unet(images)

    def parameter_counts(self) -> dict[str, int]:
        u = sum(p.numel() for p in self.unet.parameters())
        return {"unet": u, "vnet": 0, "fusion": 0, "encoder": 0, "decoder": 0, "total": u}


register_prompt_free(UNetStudent, "unet_student", 16,
                     "Prompt-free UNet student (base width 16): the semi-supervised rivals' network.")
register_prompt_free(UNetStudent, "test_unet_student", 4,
                     "Prompt-free UNet student (base width 4): the semi-supervised rivals' network.", tiny=True)
