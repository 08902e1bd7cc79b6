"""Zoom: the crop's geometry, and the Predictor that segments a box on its crop."""

from __future__ import annotations

import numpy as np
import pytest

from samdistill.data.prompts import zoom_window


def test_zoom_window_is_a_centred_square_clipped_to_the_image():
    # a 10x20 box (inclusive) at x 40..49, y 30..49: longer side 20, margin 2 -> 40 px square around (45, 40)
    assert zoom_window(np.array([40, 30, 49, 49]), (100, 200), 2.0) == (25, 20, 65, 60)
    # near a corner: clipped, never cutting the box
    assert zoom_window(np.array([0, 0, 9, 9]), (100, 200), 3.0) == (0, 0, 20, 20)
    # margin 1: the box's own square
    assert zoom_window(np.array([10, 10, 19, 29]), (100, 200), 1.0) == (5, 10, 25, 30)
    with pytest.raises(ValueError, match="below 1"):
        zoom_window(np.array([0, 0, 9, 9]), (100, 200), 0.5)


class _Counting:
    """Counts the Predictor's encoder calls and records the image size each one saw (before preprocessing)."""

    def __init__(self, pred):
        self.calls, self.pred = [], pred
        pre = pred.preprocess
        original = pre.image

        def image(arr):
            self.calls.append(np.asarray(arr).shape[:2])
            return original(arr)

        pred.preprocess = type("P", (), {"image": staticmethod(image),
                                         "__getattr__": lambda s, k: getattr(pre, k)})()


def test_predictor_zoom_matches_the_plain_predictor_on_the_crop_and_reuses_it(tiny_model):
    from samdistill import Predictor

    image = (np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)
    box = np.array([40.0, 30.0, 59.0, 49.0])
    plain = Predictor.from_torch(tiny_model)

    # the reference: the plain Predictor on the crop, its mask pasted back
    x0, y0, x1, y1 = zoom_window(box, image.shape[:2], 1.5)
    plain.set_image(image[y0:y1, x0:x1])
    ref = np.zeros(image.shape[:2], bool)
    ref[y0:y1, x0:x1] = plain.predict(boxes=(box - [x0, y0, x0, y0])[None])[0][0]
    p = Predictor.from_torch(tiny_model)
    p.zoom = 1.5
    seen = _Counting(p)
    p.set_image(image)
    assert seen.calls == []  # nothing is encoded before a prompt says where
    masks, iou = p.predict(boxes=box[None])
    assert masks.shape == (1, 90, 120) and iou.shape == (1,)
    assert (masks[0] == ref).all()
    assert seen.calls == [(30, 30)]  # the 1.5 x 20 px crop
    assert not masks[0, :, :35].any() and not masks[0, :25].any()  # nothing outside the crop
    # a next click (the box moved by 2 px) and a corrective point inside the crop: no new encoder pass
    p.predict(boxes=(box + [2, -2, 2, 1])[None])
    p.predict(boxes=box[None], points=[[[50, 40]]], labels=[[0]])
    assert len(seen.calls) == 1
    # a box elsewhere, or one far larger than the crop: the crop is encoded anew
    p.predict(boxes=[[0, 0, 19, 19]])
    p.predict(boxes=[[0, 0, 119, 89]])
    assert seen.calls[1:] == [(25, 25), (90, 120)]  # the corner crop is clipped to the image
    # points alone have no scale: the whole image
    p.set_image(image)
    p.predict(points=[[10, 10]])
    assert seen.calls[-1] == (90, 120)


def test_predictor_zoom_segments_each_box_on_its_own_crop(tiny_model):
    """Two boxes far apart: two crops (one per box, as the student was distilled), not one covering both;
    each mask equals that box's mask alone."""
    from samdistill import Predictor

    image = (np.random.default_rng(2).random((90, 120, 3)) * 255).astype(np.uint8)
    boxes = np.array([[5.0, 5.0, 14.0, 14.0], [100.0, 70.0, 109.0, 79.0]])
    p = Predictor.from_torch(tiny_model)
    p.zoom = 2.0
    seen = _Counting(p)
    p.set_image(image)
    masks, iou = p.predict(boxes=boxes)
    assert masks.shape == (2, 90, 120) and iou.shape == (2,)
    assert seen.calls == [(20, 20), (20, 20)]  # 2 x the 10 px box each; a shared crop would be ~(85, 115)
    assert p.last_encode_ms > 0
    for i in range(2):
        alone = Predictor.from_torch(tiny_model)
        alone.zoom = 2.0
        alone.set_image(image)
        m, q = alone.predict(boxes=boxes[i:i + 1])
        assert (m[0] == masks[i]).all() and np.isclose(q[0], iou[i])
    # boxes with a row of points each stay paired; a mismatch is one error
    p.predict(boxes=boxes, points=[[[8, 8]], [[104, 74]]], labels=[[1], [0]])
    from samdistill.errors import UserError

    with pytest.raises(UserError, match="one row of points per box"):
        p.predict(boxes=boxes, points=[[[8, 8]]])


def test_predictor_zoom_refuses_a_state_of_another_margin_and_a_bad_image_early(tiny_model):
    from samdistill import Predictor
    from samdistill.errors import UserError

    image = (np.random.default_rng(3).random((64, 64, 3)) * 255).astype(np.uint8)
    p = Predictor.from_torch(tiny_model)
    p.zoom = 1.5
    p.set_image(image)
    p.predict(boxes=[[10, 10, 25, 25]])
    state = p.get_state()
    p.zoom = 3.0
    with pytest.raises(UserError, match="another zoom"):
        p.set_state(state)
    with pytest.raises(UserError, match="HxW or HxWx3"):
        p.set_image(np.zeros((64, 64, 4), np.uint8))  # RGBA: refused at set_image, not later in predict


def test_predictor_zoom_state_and_bad_values(tiny_model):
    from samdistill import Predictor
    from samdistill.errors import UserError

    image = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    p = Predictor.from_torch(tiny_model)
    p.zoom = 2.0
    p.set_image(image)
    first = p.predict(boxes=[[10, 10, 25, 25]])[0]
    state = p.get_state()
    p.set_image(np.zeros((64, 64, 3), np.uint8))
    p.set_state(state)
    assert (p.predict(boxes=[[10, 10, 25, 25]])[0] == first).all()
    plain = Predictor.from_torch(tiny_model)
    with pytest.raises(UserError, match="another zoom"):
        plain.set_state(state)
    for bad in (0.5, float("nan")):
        with pytest.raises(UserError, match="zoom must be"):
            plain.zoom = bad


def test_a_student_distilled_on_crops_zooms_by_default_in_torch_and_onnx(tmp_path, tiny_model):
    """``data.zoom`` is recorded in the checkpoint and the export manifest; ``zoom="auto"`` takes it, an explicit
    value (0: the whole image) wins; a model without it does not zoom."""
    from samdistill import Predictor
    from samdistill.deploy.onnx import export_promptable
    from samdistill.models.zoo import load_model, save_model

    student = load_model("test_efficientvit_b0", teacher=tiny_model).eval()
    pt = save_model(student, tmp_path / "zoomed.pt", provenance={"zoom": 1.5})
    plain_pt = save_model(student, tmp_path / "plain.pt")
    assert Predictor.load(pt).zoom == 1.5 and Predictor.load(plain_pt).zoom is None
    assert Predictor.load(pt, zoom=0).zoom is None and Predictor.load(pt, zoom=2).zoom == 2.0
    export_promptable(load_model(pt), tmp_path / "onnx", source=str(pt))
    export_promptable(load_model(plain_pt), tmp_path / "onnx_plain", source=str(plain_pt))
    assert Predictor.load(tmp_path / "onnx").zoom == 1.5 and Predictor.load(tmp_path / "onnx_plain").zoom is None
    assert Predictor.load(tmp_path / "onnx", zoom=None).zoom is None
