"""Mask targets at the logits' resolution: unchanged at the same size, area-averaged and thresholded below it."""

import torch

from samdistill.losses.targets import target_like


def test_same_size_is_the_mask_as_float_with_a_channel():
    mask = torch.tensor([[[0, 1], [1, 1]]], dtype=torch.bool)
    t = target_like(mask, torch.zeros(1, 1, 2, 2))
    assert t.shape == (1, 1, 2, 2) and t.dtype == torch.float32
    assert t[0, 0].tolist() == [[0.0, 1.0], [1.0, 1.0]]


def test_smaller_logits_take_the_majority_of_each_cell():
    mask = torch.zeros(1, 4, 4)
    mask[0, :2, :2] = 1  # top-left cell full
    mask[0, :2, 2] = 1  # top-right cell half (2 of 4): not more than 0.5, so background
    mask[0, 2:, :2] = torch.tensor([[1, 1], [1, 0]])  # bottom-left 3 of 4: foreground
    t = target_like(mask, torch.zeros(1, 1, 2, 2))
    assert t[0, 0].tolist() == [[1.0, 0.0], [1.0, 0.0]]
