import numpy as np
import pytest

from samdistill.data.prompts import (
    box_ellipse_mask,
    box_filled_mask,
    component_boxes,
    jitter_box,
    prompt_rng,
    sample_points,
    tight_box,
)


def _two_blobs():
    m = np.zeros((50, 60), bool)
    m[5:10, 4:12] = True  # 5x8 = 40 px
    m[30:45, 20:40] = True  # 15x20 = 300 px
    return m


def test_tight_box_is_inclusive_pixel_indices():
    m = _two_blobs()
    assert tight_box(m).tolist() == [4, 5, 39, 44]
    with pytest.raises(ValueError):
        tight_box(np.zeros((3, 3), bool))


def test_component_boxes_largest_first():
    assert component_boxes(_two_blobs()).tolist() == [[20, 30, 39, 44], [4, 5, 11, 9]]
    assert component_boxes(np.zeros((4, 4), bool)).shape == (0, 4)


def test_jitter_moves_sides_outwards_within_bound_and_is_seeded():
    box = np.array([10.0, 10.0, 30.0, 30.0])
    for i in range(50):
        j = jitter_box(box, 5, prompt_rng(0, f"id{i}"), (40, 40))
        assert j[0] <= 10 and j[1] <= 10 and j[2] >= 30 and j[3] >= 30
        assert np.all(np.abs(j - box) <= 5)
        assert j[2] <= 39 and j[3] <= 39
    a = jitter_box(box, 5, prompt_rng(0, "same"), (40, 40))
    b = jitter_box(box, 5, prompt_rng(0, "same"), (40, 40))
    c = jitter_box(box, 5, prompt_rng(1, "same"), (40, 40))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(jitter_box(box, 0, prompt_rng(0, "x"), (40, 40)), box)


def test_points_positive_inside_negative_outside():
    m = _two_blobs()
    pts, labels = sample_points(m, 3, 4, prompt_rng(0, "p"), box=tight_box(m))
    assert labels.tolist() == [1, 1, 1, 0, 0, 0, 0]
    for (x, y), lab in zip(pts.astype(int), labels):
        assert m[y, x] == bool(lab)
    # the first positive point is the most interior pixel of the largest blob
    x, y = pts[0].astype(int)
    assert 33 <= y <= 41 and 24 <= x <= 35


def test_prompt_only_baselines():
    box = np.array([10.0, 20.0, 29.0, 39.0])
    assert box_filled_mask(box, (50, 50)).sum() == 400
    ell = box_ellipse_mask(box, (50, 50))
    assert ell.sum() == pytest.approx(np.pi * 9.5 * 9.5, rel=0.06)
    assert not ell[20, 10] and ell[30, 20]


def test_interior_point_border_convention():
    from samdistill.data.prompts import interior_point

    m = np.zeros((20, 30), bool)
    m[0:6, 0:30] = True  # a strip on the top edge
    # --prompt point's convention: only background is outside, so the edge row is farthest from it
    assert interior_point(m) == (0, 0)
    # the click convention: the image border is outside too
    assert interior_point(m, border_outside=True) == (2, 2)
    with pytest.raises(ValueError):
        interior_point(np.zeros((3, 3), bool))
