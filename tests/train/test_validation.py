"""The per-epoch validation scores with the one Dice, in the input frame: a coarse student's logits are
upsampled to the mask, so students on different grids are scored alike."""

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


def test_validation_dice_is_taken_in_the_input_frame():
    tiny = torch.zeros(8, 8)
    tiny[0, 0] = 1  # 1 of 64 input pixels; at the 2x2 logits' resolution it would vanish
    assert promptable_validation(_Student(-1.0), _batch(tiny))["dice"] == 0.0  # missed: no longer "both empty"
    assert promptable_validation(_Student(1.0), _batch(tiny))["dice"] == pytest.approx(2 * 1 / (64 + 1))
    big = torch.zeros(8, 8)
    big[:4, :4] = 1
    assert promptable_validation(_Student(1.0), _batch(big))["dice"] == pytest.approx(2 * 16 / (64 + 16))
    assert promptable_validation(_Student(1.0), _batch(torch.zeros(8, 8)))["dice"] == 0.0  # empty gt: left out, none left


def test_per_image_scores_keep_each_image_and_cached_decodes_the_teachers_embedding():
    from samdistill.train.validation import promptable_scores

    big, empty = torch.zeros(8, 8), torch.zeros(8, 8)
    big[:4, :4] = 1
    batches = _batch(big) + _batch(empty) + _batch(big)
    dices, areas, mses = promptable_scores(_Student(1.0), batches)
    assert dices == pytest.approx([2 * 16 / 80] * 2) and areas == [0.25, 0.25]  # the empty image is left out
    assert len(mses) == 3

    class _Spy(_Student):
        def encode(self, images):
            raise AssertionError("cached=True must not encode")

    batches[0]["embedding"] = torch.ones(1, 256, 1, 1)
    _, _, mses = promptable_scores(_Spy(1.0), batches, cached=True)
    assert mses == [0.0, 0.0, 0.0]
