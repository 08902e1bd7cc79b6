import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from samdistill.models.preprocess import SAM_PIXEL_MEAN, SAM_PIXEL_STD, Preprocess

LITE = Preprocess(input_size=256, normalize="minmax")
SAM = Preprocess(input_size=1024, normalize="meanstd", mean=SAM_PIXEL_MEAN, std=SAM_PIXEL_STD)
STRETCH = Preprocess(input_size=1024, normalize="minmax", resize="stretch")


def test_resized_hw_matches_resize_longest_side():
    # segment-anything's ResizeLongestSide: scale = L / max(h, w); int(x * scale + 0.5)
    assert LITE.resized_hw((300, 400)) == (192, 256)
    assert LITE.resized_hw((1072, 1920)) == (143, 256)
    assert SAM.resized_hw((531, 622)) == (874, 1024)
    assert STRETCH.resized_hw((531, 622)) == (1024, 1024)


@settings(max_examples=200, deadline=None)
@given(
    h=st.integers(16, 2000), w=st.integers(16, 2000),
    fx=st.lists(st.floats(0, 1), min_size=4, max_size=4),
    pp=st.sampled_from([LITE, SAM, STRETCH]),
)
def test_box_maps_to_input_and_back_exactly(h, w, fx, pp):
    box = np.array([fx[0] * (w - 1), fx[1] * (h - 1), fx[2] * (w - 1), fx[3] * (h - 1)])
    inp = pp.boxes_to_input(box, (h, w))
    nh, nw = pp.resized_hw((h, w))
    assert np.all(inp[[0, 2]] <= nw + 1e-6) and np.all(inp[[1, 3]] <= nh + 1e-6)
    np.testing.assert_allclose(pp.boxes_to_original(inp, (h, w)), box, rtol=1e-12, atol=1e-9)
    pts = box.reshape(2, 2)
    np.testing.assert_allclose(pp.points_to_original(pp.points_to_input(pts, (h, w)), (h, w)), pts, atol=1e-9)


def test_box_mapping_works_on_tensors():
    box = torch.tensor([[10.0, 20.0, 110.0, 220.0]])
    out = LITE.boxes_to_input(box, (300, 400))
    assert torch.allclose(out, torch.tensor([[6.4, 12.8, 70.4, 140.8]]))


def test_image_is_resized_normalised_and_padded():
    img = np.random.default_rng(0).integers(20, 200, size=(300, 400, 3), dtype=np.uint8)
    x = LITE.image(img)
    assert x.shape == (3, 256, 256)
    assert float(x[:, :192, :].min()) == pytest.approx(0.0, abs=1e-6)
    assert float(x[:, :192, :].max()) == pytest.approx(1.0, abs=1e-6)
    assert torch.all(x[:, 192:, :] == 0)  # padding rows
    s = SAM.image(np.full((100, 50, 3), 128, np.uint8))
    assert s.shape == (3, 1024, 1024)
    assert torch.allclose(s[:, 0, 0], (128 - torch.tensor(SAM_PIXEL_MEAN)) / torch.tensor(SAM_PIXEL_STD))
    assert torch.all(s[:, :, 512:] == 0)


def test_grey_image_becomes_three_channels():
    x = LITE.image(np.arange(64 * 32, dtype=np.uint16).reshape(64, 32))
    assert x.shape == (3, 256, 256)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


def test_logits_back_to_original_crop_the_padding():
    # Input frame 256 for a 100x200 image: content is 128x256, rows 128.. are padding.
    logits = torch.full((1, 1, 256, 256), -5.0)
    logits[..., :128, :] = 5.0  # positive exactly on the content area
    out = LITE.logits_to_original(logits, (100, 200))
    assert out.shape == (1, 1, 100, 200)
    assert bool((out > 0).all())  # the padding never reaches the original frame


def test_low_res_logits_are_upsampled_like_sam():
    logits = torch.zeros(2, 3, 256, 256)
    assert SAM.logits_to_original(logits, (531, 622)).shape == (2, 3, 531, 622)


def test_mask_to_input_and_roundtrip_dict():
    m = np.zeros((100, 200), bool)
    m[10:50, 20:120] = True
    t = LITE.mask_to_input(m)
    assert t.shape == (256, 256) and t[128:].sum() == 0
    assert t.sum().item() == pytest.approx(m.sum() * (256 / 200) ** 2, rel=0.05)
    assert Preprocess.from_dict(SAM.to_dict()) == SAM
