import numpy as np
import pytest

from samdistill.data.clicks import Click, next_click


def _blank(h=40, w=50):
    return np.zeros((h, w), bool)


def test_false_negative_blob_gets_a_positive_click_at_its_centre():
    gt = _blank()
    gt[5:30, 5:40] = True
    pred = gt.copy()
    pred[11:20, 21:30] = False  # a 9x9 hole: centre (x=25, y=15)
    assert next_click(pred, gt) == Click(25, 15, True)


def test_a_larger_false_positive_blob_gets_a_negative_click_inside_it():
    gt = _blank()
    gt[5:20, 5:20] = True
    pred = gt.copy()
    pred[6:9, 6:9] = False  # 9 px false negative
    pred[25:36, 30:45] = True  # 11x15 = 165 px false positive
    c = next_click(pred, gt)
    assert not c.positive
    assert 25 <= c.y < 36 and 30 <= c.x < 45 and pred[c.y, c.x] and not gt[c.y, c.x]
    # row 30 is the middle row; columns 35..39 are all 6 px from the blob's edge: the first wins
    assert (c.x, c.y) == (35, 30)


def test_equal_areas_favour_the_false_negative():
    gt = _blank()
    gt[2:7, 2:7] = True  # missed entirely: 25 px FN
    pred = _blank()
    pred[20:25, 20:25] = True  # 25 px FP
    assert next_click(pred, gt) == Click(4, 4, True)


def test_largest_component_not_largest_region_decides():
    # FN: two blobs of 16 px (32 in all); FP: one blob of 25 px -> the FP blob is the largest component
    gt = _blank()
    gt[2:6, 2:6] = True
    gt[2:6, 40:44] = True
    pred = _blank()
    pred[20:25, 20:25] = True
    assert next_click(pred, gt) == Click(22, 22, False)


def test_no_click_when_prediction_equals_ground_truth():
    gt = _blank()
    gt[3:9, 4:12] = True
    assert next_click(gt.copy(), gt) is None
    assert next_click(_blank(), _blank()) is None


def test_blob_touching_the_border_is_not_clicked_on_the_border():
    gt = _blank()
    gt[0:10, 0:50] = True  # a strip along the top edge, the full width
    c = next_click(_blank(), gt)
    assert c.positive and 0 < c.y < 9 and 0 < c.x < 49
    # the border counts as outside: the most interior row of a 10-row strip is row 4 (first of 4 and 5)
    assert c == Click(4, 4, True)


def test_deterministic_and_ties_go_to_the_first_pixel_in_row_major_order():
    gt = _blank()
    gt[10:14, 10:14] = True  # 4x4: the interior maximum is shared by the 2x2 centre pixels
    c = next_click(_blank(), gt)
    assert c == Click(11, 11, True)
    rng = np.random.default_rng(0)
    pred = rng.random((40, 50)) < 0.3
    gt = rng.random((40, 50)) < 0.3
    assert len({next_click(pred, gt) for _ in range(5)}) == 1
    # two equal false-negative components: the first in row-major order wins
    gt = _blank()
    gt[20:25, 2:7] = True
    gt[2:7, 30:35] = True
    assert next_click(_blank(), gt) == Click(32, 4, True)


def test_shapes_must_agree():
    with pytest.raises(ValueError):
        next_click(np.zeros((3, 4), bool), np.zeros((4, 3), bool))
