"""Side-by-side overlays: each panel in its own colour, with a title, read back from the PNG."""

import numpy as np
from PIL import Image

from samdistill.viz.overlays import GROUND_TRUTH, STUDENT, TEACHER, Panel, save_side_by_side
from tests.conftest import disk_mask


def test_panels_have_distinct_colours_and_titles(tmp_path):
    image = np.full((48, 64, 3), 128, np.uint8)
    gt, t, s = disk_mask(48, 64, 24, 20, 9), disk_mask(48, 64, 24, 32, 9), disk_mask(48, 64, 24, 44, 9)
    path = tmp_path / "ov.png"
    places = save_side_by_side(path, image, [
        Panel("ground truth", [gt], GROUND_TRUTH, note="prompt: its tight box"),
        Panel("teacher test_sam", [t], TEACHER, dice=0.5), Panel("student test_resnet18", [s], STUDENT, dice=0.25),
    ])
    png = np.asarray(Image.open(path).convert("RGB")).astype(int)
    x0s = [x for x, _, _ in places]
    y0, scale = places[0][1], places[0][2]
    assert scale >= 4 and len(set(x0s)) == 3  # a 64-px image is upscaled so the title is legible
    assert png.shape == (y0 + 48 * scale, x0s[2] + 64 * scale, 3)
    centres = [(24, 20), (24, 32), (24, 44)]
    inside = [png[y0 + r * scale + scale // 2, x + c * scale + scale // 2] for x, (r, c) in zip(x0s, centres)]
    for a in range(3):
        assert np.abs(inside[a] - 128).max() > 20  # the mask is drawn
        for b in range(a + 1, 3):
            assert np.abs(inside[a] - inside[b]).max() > 30, (inside[a], inside[b])  # fills, alpha 0.35
    # outside the masks the image is untouched
    assert (png[y0 + 2 * scale, x0s[1] + 2 * scale] == 128).all()
    for x in x0s:
        head = png[:y0, x : x + 64 * scale]
        assert (head.sum(-1) < 200).sum() > 50  # dark title text in every header
    for x, colour in zip(x0s, (GROUND_TRUTH, TEACHER, STUDENT)):
        head = png[:y0, x : x + 64 * scale]
        assert (np.abs(head - np.array(colour)).max(-1) == 0).sum() > 30  # the panel's colour swatch


def test_small_masks_on_large_image_are_not_upscaled(tmp_path):
    image = np.zeros((300, 400, 3), np.uint8)
    m = disk_mask(300, 400, 150, 200, 40)
    places = save_side_by_side(tmp_path / "a.png", image, [Panel("ground truth", [m], GROUND_TRUTH)])
    assert places == [(0, places[0][1], 1)]
    assert Image.open(tmp_path / "a.png").size == (400, 300 + places[0][1])
