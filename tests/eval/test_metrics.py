"""Metric values on hand-computed cases, and the empty-mask conventions."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from samdistill.eval.metrics import MetricAccumulator, dice, hd95, image_metrics, iou, nsd


def _sq(y0, y1, x0, x1, shape=(20, 20)):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_overlap_metrics_hand_computed():
    gt = _sq(2, 6, 2, 6)  # 16 px
    pred = _sq(2, 6, 2, 4)  # 8 px, all inside
    assert dice(pred, gt) == pytest.approx(2 * 8 / 24)
    assert iou(pred, gt) == pytest.approx(0.5)
    assert dice(gt, gt) == pytest.approx(1.0) and iou(gt, gt) == pytest.approx(1.0)


def test_hd95_of_a_shifted_square_is_the_shift():
    gt = _sq(4, 14, 4, 14)
    pred = _sq(4, 14, 7, 17)  # shifted 3 px right
    assert hd95(pred, gt) == pytest.approx(3.0)
    assert hd95(gt, gt) == pytest.approx(0.0)


def test_nsd_depends_on_tolerance():
    gt = _sq(4, 14, 4, 14)
    near = _sq(4, 14, 5, 15)  # boundary 1 px off: all within 2 px
    far = _sq(4, 14, 9, 19)  # left/right edges 5 px off
    assert nsd(near, gt) == pytest.approx(1.0)
    assert nsd(far, gt) < 0.8
    assert nsd(far, gt, tolerance=6) == pytest.approx(1.0)


def test_empty_mask_conventions():
    empty = np.zeros((30, 40), bool)
    some = _sq(2, 5, 2, 5, (30, 40))
    assert image_metrics(empty, empty) == {"dice": 1.0, "iou": 1.0, "nsd": 1.0, "hd95": 0.0}
    one = image_metrics(some, empty)
    assert one["dice"] == 0.0 and one["iou"] == 0.0 and one["nsd"] == 0.0
    assert one["hd95"] == pytest.approx(math.hypot(30, 40))
    assert image_metrics(empty, some)["hd95"] == pytest.approx(50.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        dice(np.zeros((3, 3), bool), np.zeros((3, 4), bool))


def test_accumulator_is_mean_over_images():
    acc = MetricAccumulator()
    acc.add({"dice": 1.0, "iou": 1.0})
    acc.add({"dice": 0.5, "iou": 0.25})
    assert acc.aggregate() == {"dice": 0.75, "iou": 0.625}
    acc.reset()
    assert len(acc) == 0 and acc.aggregate() == {}


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_dice_and_iou_agree_with_set_formulas(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.random((16, 16)) < 0.3, rng.random((16, 16)) < 0.3
    inter, union = (a & b).sum(), (a | b).sum()
    if a.any() and b.any():
        assert dice(a, b) == pytest.approx(2 * inter / (a.sum() + b.sum()), abs=1e-6)
        assert iou(a, b) == pytest.approx(inter / union, abs=1e-6)
        d = dice(a, b)
        assert iou(a, b) == pytest.approx(d / (2 - d), abs=1e-6)
    assert 0.0 <= hd95(a, b) <= math.hypot(16, 16)


def test_dice_is_monai_compute_dice_to_the_bit():
    """The one Dice counts overlaps itself (no MONAI import for the demo or export), with MONAI's float32 arithmetic."""
    import torch
    from monai.metrics import compute_dice

    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = rng.integers(1, 120, 2)
        a, b = rng.random((h, w)) < rng.random(), rng.random((h, w)) < rng.random()
        if not (a.any() and b.any()):
            continue
        ref = compute_dice(torch.from_numpy(a.astype(np.float32))[None, None],
                           torch.from_numpy(b.astype(np.float32))[None, None], include_background=True)
        assert dice(a, b) == float(ref[0, 0])


def test_batch_dice_per_item_with_the_empty_convention():
    import torch

    from samdistill.eval.metrics import batch_dice

    gt, pred = _sq(2, 6, 2, 6), _sq(2, 6, 2, 4)  # 16 px and 8 px inside it
    empty = np.zeros((20, 20), bool)
    p = torch.from_numpy(np.stack([pred, empty, pred, empty]))
    t = torch.from_numpy(np.stack([gt, empty, empty, gt]))
    d = batch_dice(p, t)
    assert d.dtype == torch.float32 and d.shape == (4,)
    assert d.tolist() == pytest.approx([2 * 8 / 24, 1.0, 0.0, 0.0])
    assert [dice(a, b) for a, b in zip(p.numpy(), t.numpy())] == d.tolist()  # dice is batch_dice of one image
    assert batch_dice(p.float()[:, None], t.float()[:, None]).tolist() == d.tolist()  # {0, 1} floats, with a channel
    with pytest.raises(ValueError):
        batch_dice(p, t[:, :10])


def test_dice_takes_views_with_negative_strides():
    gt = _sq(2, 6, 2, 6)
    assert dice(gt[::-1], gt[::-1]) == 1.0 and dice(gt[:, ::-1], gt) == 0.0
