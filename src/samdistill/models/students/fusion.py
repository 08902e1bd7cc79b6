"""KnowSAM's prompt-free student: a UNet and a VNet fused by the Hybrid Aggregation Module.

The Hybrid Aggregation Module (HAM, ~0.04 M parameters) turns both sub-networks' logits, their
softmax disagreement and their entropy maps into one prediction:
``fused = mean(logits_u, logits_v) + conv(cat[logits_u, logits_v, |p_u - p_v|, H(p_u), H(p_v)])``.
Its last conv starts at zero, so before training the fused map is the plain average.

:class:`KnowSAMStudent` is a ``PromptFreeModel``: ``forward(images) -> fused logits`` (``BxCxSxS``,
input frame), ``forward_all`` also returns both sub-networks' logits, ``predict(image)`` gives a
boolean mask in the original frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from samdistill.models.preprocess import Preprocess
from samdistill.models.students.unet import UNet2D
from samdistill.models.students.vnet import VNet2D
from samdistill.models.zoo import MODELS


def entropy_map(p: torch.Tensor) -> torch.Tensor:
    """``BxCxHxW`` probabilities -> ``Bx1xHxW`` entropy (nats)."""
    return -(p * torch.log(p.clamp_min(1e-6))).sum(1, keepdim=True)


class HybridAggregation(nn.Module):
    def __init__(self, num_classes: int = 2, hidden: int = 64) -> None:
        super().__init__()
        cin = 3 * num_classes + 2
        self.net = nn.Sequential(
            nn.Conv2d(cin, hidden, 3, padding=1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, num_classes, 1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, logits_u: torch.Tensor, logits_v: torch.Tensor) -> torch.Tensor:
        p_u, p_v = logits_u.softmax(1), logits_v.softmax(1)
        feats = torch.cat([logits_u, logits_v, (p_u - p_v).abs(), entropy_map(p_u), entropy_map(p_v)], dim=1)
        return 0.5 * (logits_u + logits_v) + self.net(feats)


class KnowSAMStudent(nn.Module):
    """UNet + VNet + HAM. ``fusion=False`` replaces the HAM by the plain logit average (ablation)."""

    kind = "promptfree"

    def __init__(self, *, preprocess: dict | Preprocess, num_classes: int = 2, base: int = 16, fusion: bool = True,
                 family: str = "knowsam_student") -> None:
        super().__init__()
        self.preprocess = preprocess if isinstance(preprocess, Preprocess) else Preprocess.from_dict(preprocess)
        self.unet = UNet2D(3, num_classes, base)
        self.vnet = VNet2D(3, num_classes, base)
        self.ham = HybridAggregation(num_classes) if fusion else None
        self.num_classes = num_classes
        self.family = family
        self.config = {"preprocess": self.preprocess.to_dict(), "num_classes": num_classes, "base": base,
                       "fusion": fusion}

    @property
    def input_size(self) -> int:
        return self.preprocess.input_size

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def aggregate(self, logits_u: torch.Tensor, logits_v: torch.Tensor) -> torch.Tensor:
        return self.ham(logits_u, logits_v) if self.ham is not None else 0.5 * (logits_u + logits_v)

    def forward_all(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``Bx3xSxS`` -> (UNet logits, VNet logits, fused logits), each ``BxCxSxS``."""
        u, v = self.unet(images), self.vnet(images)
        return u, v, self.aggregate(u, v)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_all(images)[2]

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

    def parameter_counts(self) -> dict[str, int]:
        count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
        u, v, f = count(self.unet), count(self.vnet), count(self.ham)
        return {"unet": u, "vnet": v, "fusion": f, "encoder": 0, "decoder": 0, "total": u + v + f}


def _builder(name: str, base: int):
    def build(pretrained: Any = None, checkpoint: str | None = None, teacher=None, preprocess: dict | None = None,
              **config: Any) -> KnowSAMStudent:
        from samdistill.errors import UserError

        if checkpoint is not None:
            raise UserError(f"load a trained {name} from its samdistill checkpoint: samdistill.load_model(path)")
        if pretrained:
            raise UserError(f"{name} has no pretrained weights; it is trained from scratch by --method knowsam")
        if preprocess is None:
            if teacher is None:
                raise UserError(f"{name} needs a teacher (for its input frame) or a preprocess spec")
            preprocess = teacher.preprocess.to_dict()
        config.setdefault("base", base)
        return KnowSAMStudent(preprocess=preprocess, family=name, **config)

    build.__doc__ = f"Prompt-free KnowSAM student: UNet + VNet (base width {base}) + Hybrid Aggregation Module."
    return build


MODELS.register("knowsam_student", kind="student", input_size="teacher's", weights="trained", prompt_free=True)(
    _builder("knowsam_student", 16))
MODELS.register("test_knowsam_student", kind="student", input_size="teacher's", weights="trained", prompt_free=True,
                tiny=True)(_builder("test_knowsam_student", 4))
