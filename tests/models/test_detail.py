"""The detail path of a coarse-grid student (student.detail): packed stride-4 features read by the decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samdistill.errors import UserError
from samdistill.losses.embedding import embedding_mse
from samdistill.methods.kdsam import KDSAMStage, Stage2Config
from samdistill.models.students.detail import MASK_FEATURES, SAM_CHANNELS, UPSCALE
from samdistill.models.zoo import load_model, save_model


@pytest.fixture(scope="module")
def teacher256():
    return load_model("test_sam", input_size=256)


def _student(teacher, detail: bool, seed: int = 0):
    torch.manual_seed(seed)
    return load_model("test_resnet18", teacher=teacher, grid=16, detail=detail).eval()


def _stage2_batch(teacher):
    """Two images, the teacher's embedding of them and two hand-made masks."""
    torch.manual_seed(0)
    images = torch.rand(2, 3, 256, 256)
    mask = torch.zeros(2, 256, 256)
    mask[0, 40:120, 60:150] = 1
    mask[1, 100:220, 30:90] = 1
    with torch.no_grad():
        return images, teacher.encode(images), mask


def _box() -> torch.Tensor:
    return torch.tensor([[30.0, 40.0, 190.0, 170.0]])


def test_embedding_packs_the_detail_map_after_the_256_channels(teacher256):
    s = _student(teacher256, True)
    with torch.no_grad():
        emb = s.encode(torch.rand(2, 3, 256, 256))
        lo, _ = s.decode(emb, boxes=_box().repeat(2, 1))
    assert emb.shape == (2, SAM_CHANNELS + MASK_FEATURES * UPSCALE**2, 16, 16)
    assert lo.shape == (2, 1, 64, 64)
    assert s.config["detail"] is True
    # what `samdistill info` prints, known without an encoder pass
    assert s.embedding_channels == emb.shape[1] and _student(teacher256, False).embedding_channels == SAM_CHANNELS


def test_untrained_detail_path_changes_nothing_then_reaches_the_mask(teacher256):
    plain, detailed = _student(teacher256, False), _student(teacher256, True)
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        e_plain, e_det = plain.encode(x), detailed.encode(x)
        assert torch.allclose(e_plain, e_det[:, :SAM_CHANNELS])
        assert e_det[:, SAM_CHANNELS:].abs().max() == 0  # the branch's last conv starts at zero
        a = plain.decode(e_plain, boxes=_box())[0]
        b = detailed.decode(e_det, boxes=_box())[0]
        assert torch.allclose(a, b, atol=1e-4)
        # a detail map at one mask-feature pixel moves the logits there, not far from it
        e = e_det.clone()
        detail = torch.nn.functional.pixel_shuffle(e[:, SAM_CHANNELS:], UPSCALE)
        detail[:, :, 10, 20] = 5.0
        e[:, SAM_CHANNELS:] = torch.nn.functional.pixel_unshuffle(detail, UPSCALE)
        c = detailed.decode(e, boxes=_box())[0]
    diff = (c - b).abs()[0, 0]
    assert diff[10, 20] > 1e-3 and diff.sum() == pytest.approx(diff[10, 20].item(), rel=1e-5)


def test_batched_decode_equals_decoding_each_row(teacher256):
    s = _student(teacher256, True)
    torch.nn.init.normal_(s.image_encoder.detail.proj[-1].weight, std=0.1)
    assert s._batched_decoder  # a subclass of MedSAM's decoder still takes B images with B prompts
    boxes = torch.tensor([[30.0, 40.0, 190.0, 170.0], [10.0, 10.0, 120.0, 200.0]])
    with torch.no_grad():
        emb = s.encode(torch.rand(2, 3, 256, 256))
        both, iou = s.decode(emb, boxes=boxes)
        rows = [s.decode(emb[i : i + 1], boxes=boxes[i : i + 1]) for i in range(2)]
    assert torch.allclose(both, torch.cat([r[0] for r in rows]), atol=1e-4)
    assert torch.allclose(iou, torch.cat([r[1] for r in rows]), atol=1e-5)


def test_stage2_trains_the_detail_branch(teacher256):
    s = _student(teacher256, True).train()
    images, emb_t, mask = _stage2_batch(teacher256)
    stage = KDSAMStage(stage=2, student=s, teacher=teacher256, cfg=Stage2Config(loop_iters=1, token_kd=1.0))
    params = stage.parameters()
    out = stage.step({"image": images, "embedding": emb_t, "mask": mask})
    out["loss"].backward()
    last = s.image_encoder.detail.proj[-1]
    assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in s.image_encoder.detail.parameters())
    assert {id(p) for p in s.image_encoder.detail.parameters()} <= {id(p) for p in params}
    # the embedding loss compares only the channels that live in the teacher's space
    assert torch.equal(embedding_mse(s.encode(images), emb_t), embedding_mse(s.encode(images)[:, :SAM_CHANNELS], emb_t))


def test_detail_student_round_trips_through_its_checkpoint(teacher256, tmp_path):
    s = _student(teacher256, True)
    torch.nn.init.normal_(s.image_encoder.detail.proj[-1].weight, std=0.1)  # a trained-looking branch
    back = load_model(save_model(s, tmp_path / "s.pt"))
    image = (np.random.default_rng(0).random((173, 301, 3)) * 255).astype(np.uint8)
    boxes = np.array([[20, 30, 200, 150]])
    assert np.array_equal(s.predict(image, boxes), back.predict(image, boxes))
    assert back.image_encoder.detail is not None


def test_detail_needs_a_feature_map_at_a_quarter_of_the_grid_stride(teacher256):
    with pytest.raises(UserError, match=r"student.detail needs a resnet18 feature map at stride 1 .*: set student.detail=false"):
        load_model("test_resnet18", teacher=teacher256, grid=64, detail=True)


def test_detail_student_exports_to_onnx_and_agrees(teacher256, tmp_path):
    pytest.importorskip("onnxruntime")
    from samdistill.deploy.onnx import export_onnx
    from samdistill.deploy.predictor import Predictor

    s = _student(teacher256, True)
    torch.nn.init.normal_(s.image_encoder.detail.proj[-1].weight, std=0.1)
    export_onnx(s, tmp_path / "onnx")
    image = (np.random.default_rng(1).random((120, 200, 3)) * 255).astype(np.uint8)
    boxes = np.array([[10, 20, 150, 100]])
    pt, ox = Predictor.from_torch(s), Predictor.from_onnx(tmp_path / "onnx")
    pt.set_image(image)
    ox.set_image(image)
    assert ox.get_state()[0].shape[1] == SAM_CHANNELS + MASK_FEATURES * UPSCALE**2
    m_pt, m_ox = pt.predict(boxes=boxes)[0], ox.predict(boxes=boxes)[0]
    assert (m_pt != m_ox).mean() < 1e-3


def test_auto_adds_the_path_only_where_the_backbone_has_its_map(teacher256, tiny_model):
    # 256 px, grid 16: stride 16, the stride-4 map exists -> a detail path
    s = load_model("test_resnet18", teacher=teacher256, grid=16, detail="auto")
    assert s.config["detail"] is True and s.image_encoder.detail is not None
    # test_sam decodes on its own 16x16 grid at 64 px: stride 4 would need a stride-1 map -> none, no error
    plain = load_model("test_resnet18", teacher=tiny_model, grid=16, detail="auto")
    assert "detail" not in plain.config and plain.image_encoder.detail is None
    assert type(plain.mask_decoder).__name__ == "MaskDecoder"
    with pytest.raises(UserError, match="student.detail must be true, false or auto"):
        load_model("test_resnet18", teacher=teacher256, grid=16, detail="yes")


def test_the_default_recipe_asks_for_auto():
    from samdistill.config import load_config

    assert load_config("kdsam", {}).student.detail == "auto"
    assert load_config("kdsam", {"student": {"detail": False}}).student.detail is False


def test_mask_features_are_what_the_hypernetworks_read(teacher256):
    """capture_decoder_tokens(features=True): the teacher's upscaled embedding (4x its grid) and, in a detail
    student, the upscaled embedding plus the detail map (not the upscaling alone)."""
    from samdistill.losses.perceptual import capture_decoder_tokens

    s = _student(teacher256, True)
    torch.nn.init.normal_(s.image_encoder.detail.proj[-1].weight, std=0.1)
    x = torch.rand(2, 3, 256, 256)
    upscaling = []
    h = s.mask_decoder.output_upscaling.register_forward_hook(lambda m, i, o: upscaling.append(o))
    with torch.no_grad(), capture_decoder_tokens(s.mask_decoder, features=True) as cap:
        emb = s.encode(x)
        s.decode(emb, boxes=_box().repeat(2, 1))
    h.remove()
    detail = torch.nn.functional.pixel_shuffle(emb[:, SAM_CHANNELS:], UPSCALE)
    assert cap.mask_features.shape == (2, MASK_FEATURES, 64, 64) and detail.abs().max() > 0
    assert torch.allclose(cap.mask_features, upscaling[0] + detail)
    with torch.no_grad(), capture_decoder_tokens(teacher256.mask_decoder, features=True) as cap_t:
        teacher256.decode(teacher256.encode(x), boxes=_box().repeat(2, 1))
    assert cap_t.mask_features.shape == (2, MASK_FEATURES, 256, 256)
    with capture_decoder_tokens(s.mask_decoder) as plain:  # features off: nothing recorded
        with torch.no_grad():
            s.decode(emb, boxes=_box().repeat(2, 1))
    assert plain.features == [] and len(plain.queries) == 1


def test_feature_kd_alone_teaches_the_detail_branch(teacher256):
    s = _student(teacher256, True).train()
    images, emb_t, mask = _stage2_batch(teacher256)
    cfg = Stage2Config(dice=0, bce=0, kd=0, iou=0, mse=0, feature_kd=1.0, loop_iters=1)
    stage = KDSAMStage(stage=2, student=s, teacher=teacher256, cfg=cfg)
    out = stage.step({"image": images, "embedding": emb_t, "mask": mask})
    assert out["feature_kd"] > 0 and torch.equal(out["loss"], out["feature_kd"])  # the mean over both rounds
    out["loss"].backward()
    assert s.image_encoder.detail.proj[-1].weight.grad.abs().sum() > 0
    g = s.mask_decoder.output_hypernetworks_mlps[0].layers[0].weight.grad  # the features only: no hypernetwork
    assert g is None or g.abs().sum() == 0
    off = KDSAMStage(stage=2, student=s, teacher=teacher256, cfg=Stage2Config()).step(
        {"image": images, "embedding": emb_t, "mask": mask})
    assert "feature_kd" not in off
