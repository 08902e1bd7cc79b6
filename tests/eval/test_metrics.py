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
