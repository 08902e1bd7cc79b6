"""The zoomed second look: the crop's geometry and the paste back."""

from __future__ import annotations

import numpy as np
import pytest

from samdistill.deploy.zoom import predict_zoomed, zoom_window


def test_zoom_window_is_a_centred_square_clipped_to_the_image():
    # a 10x20 box (inclusive) at x 40..49, y 30..49: longer side 20, margin 2 -> 40 px square around (45, 40)
    assert zoom_window(np.array([40, 30, 49, 49]), (100, 200), 2.0) == (25, 20, 65, 60)
    # near a corner: clipped, never cutting the box
    assert zoom_window(np.array([0, 0, 9, 9]), (100, 200), 3.0) == (0, 0, 20, 20)
    # margin 1: the box's own square
    assert zoom_window(np.array([10, 10, 19, 29]), (100, 200), 1.0) == (5, 10, 25, 30)
    with pytest.raises(ValueError, match="below 1"):
        zoom_window(np.array([0, 0, 9, 9]), (100, 200), 0.5)


def test_predict_zoomed_sees_the_crop_and_pastes_its_mask_back():
    seen = {}

    class Model:
        def predict(self, image, boxes):
            seen["shape"], seen["box"] = image.shape, boxes[0].tolist()
            m = np.zeros((1,) + image.shape[:2], bool)
            x0, y0, x1, y1 = boxes[0].astype(int)
            m[0, y0:y1 + 1, x0:x1 + 1] = True
            return m

    image = np.zeros((100, 200, 3), np.uint8)
    box = np.array([40.0, 30.0, 49.0, 49.0])
    mask = predict_zoomed(Model(), image, box, 2.0)
    assert seen["shape"] == (40, 40, 3) and seen["box"] == [15.0, 10.0, 24.0, 29.0]  # the box in the crop's frame
    assert mask.shape == (100, 200) and mask.sum() == 200 and mask[30:50, 40:50].all()
