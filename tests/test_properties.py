"""Property-based tests (hypothesis) for the prompt mapping and the metrics."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from samdistill.eval.metrics import dice, iou
from samdistill.models.preprocess import Preprocess

sizes = st.integers(min_value=8, max_value=600)


@settings(max_examples=60, deadline=None)
@given(h=sizes, w=sizes, s=st.sampled_from([64, 256, 1024]), data=st.data())
def test_box_mapping_round_trips_and_stays_in_the_image_region(h, w, s, data):
    pp = Preprocess(input_size=s)
    x0 = data.draw(st.floats(0, w - 1))
    x1 = data.draw(st.floats(x0, w - 1))
    y0 = data.draw(st.floats(0, h - 1))
    y1 = data.draw(st.floats(y0, h - 1))
    box = np.array([[x0, y0, x1, y1]])
    inp = pp.boxes_to_input(box, (h, w))
    nh, nw = pp.resized_hw((h, w))
    assert max(nh, nw) == s  # longest side fills the frame
    assert (inp[:, [0, 2]] <= nw + 1e-6).all() and (inp[:, [1, 3]] <= nh + 1e-6).all() and (inp >= 0).all()
    assert inp[0, 2] >= inp[0, 0] and inp[0, 3] >= inp[0, 1]  # order kept
    np.testing.assert_allclose(pp.boxes_to_original(inp, (h, w)), box, rtol=1e-9, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(h=sizes, w=sizes, data=st.data())
def test_point_mapping_round_trips(h, w, data):
    pp = Preprocess(input_size=256)
    pts = np.array([[[data.draw(st.floats(0, w - 1)), data.draw(st.floats(0, h - 1))]]])
    np.testing.assert_allclose(pp.points_to_original(pp.points_to_input(pts, (h, w)), (h, w)), pts, atol=1e-6)


masks = st.integers(4, 24).flatmap(
    lambda n: st.tuples(st.lists(st.booleans(), min_size=n * n, max_size=n * n),
                        st.lists(st.booleans(), min_size=n * n, max_size=n * n), st.just(n)))


@settings(max_examples=80, deadline=None)
@given(masks)
def test_dice_and_iou_properties(m):
    a, b, n = m
    a, b = np.array(a).reshape(n, n), np.array(b).reshape(n, n)
    d, j = dice(a, b), iou(a, b)
    assert 0.0 <= d <= 1.0 and 0.0 <= j <= 1.0
    assert d == dice(b, a)  # symmetric
    assert dice(a, a) == 1.0
    if a.any() and b.any():
        assert abs(j - d / (2 - d)) < 1e-6  # IoU = Dice / (2 - Dice)
        inter = (a & b).sum()
        assert abs(d - 2 * inter / (a.sum() + b.sum())) < 1e-6
    elif a.any() != b.any():
        assert d == 0.0
