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

import torch
from torch import nn

from samdistill.models.preprocess import Preprocess
from samdistill.models.students.unet import UNet2D
from samdistill.models.students.vnet import VNet2D
from samdistill.models.students.promptfree import PromptFreeStudent, register_prompt_free


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


class KnowSAMStudent(PromptFreeStudent):
    """UNet + VNet + HAM. ``fusion=False`` replaces the HAM by the plain logit average (ablation)."""

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

    def aggregate(self, logits_u: torch.Tensor, logits_v: torch.Tensor) -> torch.Tensor:
        return self.ham(logits_u, logits_v) if self.ham is not None else 0.5 * (logits_u + logits_v)

    def forward_all(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``Bx3xSxS`` -> (UNet logits, VNet logits, fused logits), each ``BxCxSxS``."""
        u, v = self.unet(images), self.vnet(images)
        return u, v, self.aggregate(u, v)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_all(images)[2]

    def parameter_counts(self) -> dict[str, int]:
        count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
        u, v, f = count(self.unet), count(self.vnet), count(self.ham)
        return {"unet": u, "vnet": v, "fusion": f, "encoder": 0, "decoder": 0, "total": u + v + f}


register_prompt_free(KnowSAMStudent, "knowsam_student", 16, "Prompt-free KnowSAM student: UNet + VNet (base width "
                     "16) + Hybrid Aggregation Module.", trained_by=" by --method knowsam")
register_prompt_free(KnowSAMStudent, "test_knowsam_student", 4, "Prompt-free KnowSAM student: UNet + VNet (base width "
                     "4) + Hybrid Aggregation Module.", trained_by=" by --method knowsam", tiny=True)
