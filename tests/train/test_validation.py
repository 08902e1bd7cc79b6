"""The per-epoch validation scores with the one Dice: its empty-mask convention at the logits' resolution."""

import pytest
import torch

from samdistill.train.validation import promptable_validation


class _Student:
    """Encodes to zeros; decodes to 2x2 logits of one value (foreground everywhere when > 0)."""

    def __init__(self, value: float):
        self.value = value

    def encode(self, images):
        return torch.zeros(images.shape[0], 256, 1, 1)

    def decode(self, emb, boxes=None):
        return torch.full((emb.shape[0], 1, 2, 2), self.value), torch.zeros(emb.shape[0], 1)


def _batch(mask):
    return [{"image": torch.zeros(1, 3, 8, 8), "embedding": torch.zeros(1, 256, 1, 1), "mask": mask[None]}]


def test_validation_dice_follows_the_empty_convention_at_the_logits_resolution():
    tiny = torch.zeros(8, 8)
    tiny[0, 0] = 1  # 1 of the 16 pixels of its 2x2 cell: empty at the logits' resolution
    assert promptable_validation(_Student(-1.0), _batch(tiny))["dice"] == 1.0  # both empty (was 0 before issue 22)
    assert promptable_validation(_Student(1.0), _batch(tiny))["dice"] == 0.0  # prediction only
    big = torch.zeros(8, 8)
    big[:4, :4] = 1  # one full cell of four
    assert promptable_validation(_Student(1.0), _batch(big))["dice"] == pytest.approx(2 * 1 / (4 + 1))
    assert promptable_validation(_Student(1.0), _batch(torch.zeros(8, 8)))["dice"] == 0.0  # empty gt: left out, none left
