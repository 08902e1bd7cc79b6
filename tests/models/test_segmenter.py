"""Both kinds of model behind the same steps (encode -> decode -> postprocess -> score), with the numbers
each kind's own calls give; a prompt-free model refuses prompts; anything else is no segmenter."""

import numpy as np
import pytest
import torch
from torch import nn

from samdistill.eval.evaluate import predict_with_timing
from samdistill.models.segmenter import segmenter
from samdistill.models.zoo import load_model


def _image(h=50, w=70):
    return (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)


@torch.no_grad()
def test_promptable_steps_are_the_models_own_calls(tiny_model):
    seg = segmenter(tiny_model.eval())
    assert not seg.prompt_free
    img, hw = _image(), (50, 70)
    x = seg.preprocess.image(img)[None]
    emb = seg.encode(x)
    assert torch.equal(emb, tiny_model.encode(x))
    boxes = np.array([[5, 5, 40, 30], [10, 20, 60, 45]], np.float64)
    low, iou = seg.decode(emb, {"boxes": boxes}, hw)
    b = torch.as_tensor(tiny_model.preprocess.boxes_to_input(boxes, hw), dtype=torch.float32)
    ref_low, ref_iou = tiny_model.decode(emb.expand(2, -1, -1, -1), boxes=b)
    assert torch.equal(low, ref_low) and torch.equal(iou, ref_iou)
    full = seg.postprocess(low, hw)
    assert full.shape == (2, 1, 50, 70) and torch.equal(full, tiny_model.postprocess(ref_low, hw))
    assert seg.score(full, iou) == pytest.approx(float(ref_iou.mean()))
    pts = {"points": np.array([[[20.0, 20.0]]]), "labels": np.array([[1]])}
    low_p, _ = seg.decode(emb, pts, hw)
    p_in = torch.as_tensor(tiny_model.preprocess.points_to_input(pts["points"], hw), dtype=torch.float32)
    assert torch.equal(low_p, tiny_model.decode(emb, points=(p_in, torch.tensor([[1]])))[0])


@torch.no_grad()
def test_prompt_free_steps_segment_in_encode_and_refuse_prompts():
    s = load_model("test_knowsam_student", teacher=load_model("test_sam")).eval()
    seg = segmenter(s)
    assert seg.prompt_free
    img, hw = _image(), (50, 70)
    x = seg.preprocess.image(img)[None]
    logits = seg.encode(x)
    assert torch.equal(logits, s.foreground_logits(x))
    low, iou = seg.decode(logits, {}, hw)
    assert low is logits and iou is None
    with pytest.raises(ValueError, match="no prompts"):
        seg.decode(logits, {"boxes": np.array([[1, 1, 5, 5]])}, hw)
    full = seg.postprocess(low, hw)
    assert torch.equal(full, s.preprocess.logits_to_original(logits, hw))
    expected = float(torch.sigmoid(full)[full > 0].mean()) if (full > 0).any() else 0.0
    assert seg.score(full) == expected
    assert seg.score(torch.full((1, 1, 4, 4), -1.0)) == 0.0  # nothing predicted: no confidence


def test_predict_with_timing_serves_both_kinds_without_a_branch_of_its_own(tiny_model):
    s = load_model("test_knowsam_student", teacher=load_model("test_sam")).eval()
    img = _image()
    mask, t = predict_with_timing(s, img, {}, "cpu")
    ref = (s.preprocess.logits_to_original(s.foreground_logits(s.preprocess.image(img)[None]), (50, 70))[0, 0] > 0)
    assert mask.shape == (50, 70) and (mask == ref.numpy()).all() and t["decoder_ms"] == 0.0
    mask, t = predict_with_timing(tiny_model.eval(), img, {"boxes": np.array([[5.0, 5.0, 40.0, 30.0]])}, "cpu")
    assert mask.shape == (50, 70) and t["decoder_ms"] > 0 and t["end_to_end_ms"] >= t["encoder_ms"]


def test_anything_else_is_no_segmenter():
    assert segmenter(nn.Linear(2, 2)) is None
    assert segmenter(object()) is None
