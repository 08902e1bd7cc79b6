"""KD SAM's whole student: coarse-grid students, decoder KD terms, prompt-in-the-loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samdistill.data.clicks import disagreement_points
from samdistill.errors import UserError
from samdistill.losses.embedding import embedding_mse, pooled_embedding
from samdistill.methods.kdsam import KDSAMStage, Stage1Config, Stage2Config
from samdistill.models.zoo import load_model, save_model


@pytest.fixture(scope="module")
def teacher256():
    """The tiny teacher at 256 px: a 64x64 embedding grid, like LiteMedSAM's."""
    return load_model("test_sam", input_size=256)


def _batch(teacher, n: int = 2) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    s = teacher.input_size
    images = torch.rand(n, 3, s, s)
    mask = torch.zeros(n, s, s)
    mask[0, 40:120, 60:150] = 1
    mask[1, 100:220, 30:90] = 1
    with torch.no_grad():
        emb = teacher.encode(images)
    return {"image": images, "embedding": emb, "mask": mask}


@pytest.mark.parametrize("grid", [32, 16])
def test_coarse_grid_student_trains_end_to_end(teacher256, grid):
    student = load_model("test_resnet18", teacher=teacher256, grid=grid)
    assert student.embedding_grid == grid
    cfg = Stage2Config(loop_iters=2, iou_kd=1.0, token_kd=1.0, kd=0.5, mse=0.5)
    stage = KDSAMStage(stage=2, student=student, teacher=teacher256, cfg=cfg)
    params = stage.parameters()
    out = stage.step(_batch(teacher256))
    assert {"dice", "bce", "kd", "iou", "iou_kd", "token_kd", "mse", "loss"} <= set(out)
    out["loss"].backward()
    names = {id(p): n for n, p in student.named_parameters()}
    dead = [names[id(p)] for p in params if p.grad is None or not torch.isfinite(p.grad).all()]
    # the prompt encoder's mask-prompt convs and point embeddings a box never uses get no gradient by design
    dead = [n for n in dead if not n.startswith("prompt_encoder.")]
    assert dead == []
    # the encoder emits the coarse grid, the decoder's low-res mask is 4*grid, the mask comes back full size
    student.eval()
    with torch.no_grad():
        emb = student.encode(torch.rand(1, 3, 256, 256))
        lo, _ = student.decode(emb, boxes=torch.tensor([[10.0, 20.0, 200.0, 180.0]]))
    assert emb.shape == (1, 256, grid, grid) and lo.shape[-1] == 4 * grid
    image = (np.random.default_rng(0).random((173, 301, 3)) * 255).astype(np.uint8)
    masks = student.predict(image, np.array([[20, 30, 200, 150]]))
    assert masks.shape == (1, 173, 301) and masks.dtype == bool


def test_stage1_with_perceptual_on_a_coarse_grid(teacher256):
    from samdistill.losses.perceptual import DecoderPerceptual

    student = load_model("test_resnet18", teacher=teacher256, grid=16)
    stage = KDSAMStage(stage=1, student=student, teacher=teacher256, cfg=Stage1Config(perceptual=0.1),
                       perceptual=DecoderPerceptual(teacher256, grid=16))
    params = stage.parameters()
    out = stage.step(_batch(teacher256))
    out["loss"].backward()
    assert out["perceptual"] > 0 and all(p.grad is not None for p in params)


def test_teacher_decoder_weights_start_the_coarse_student(teacher256):
    student = load_model("test_resnet18", teacher=teacher256, grid=16)
    t, s = teacher256.mask_decoder.state_dict(), student.mask_decoder.state_dict()
    assert set(t) == set(s) and all(torch.equal(t[k], s[k]) for k in t)
    assert student.prompt_encoder.image_embedding_size == (16, 16)


def test_grid_must_divide_the_teachers(teacher256):
    with pytest.raises(UserError, match="student.grid must divide"):
        load_model("test_resnet18", teacher=teacher256, grid=24)
    with pytest.raises(UserError, match="student.grid must divide"):
        load_model("test_resnet18", teacher=teacher256, grid=128)


def test_slim_width_and_depth_keys_shape_the_decoder(teacher256, tmp_path):
    student = load_model("test_resnet18", teacher=teacher256, grid=16, decoder="slim", slim={"depth": 2, "mlp_dim": 32})
    layers = student.mask_decoder.transformer.layers
    assert len(layers) == 2 and layers[0].mlp.lin1.out_features == 32
    path = save_model(student, tmp_path / "s.pt")
    back = load_model(path)
    assert back.embedding_grid == 16 and len(back.mask_decoder.transformer.layers) == 2
    assert back.mask_decoder.transformer.layers[0].mlp.lin1.out_features == 32


def test_pooled_embedding_averages_blocks():
    e = torch.arange(16.0).reshape(1, 1, 4, 4)
    p = pooled_embedding(e, 2)
    assert torch.equal(p, torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    assert pooled_embedding(e, 4) is e
    # the embedding loss of a coarse student compares with the pooled teacher
    assert float(embedding_mse(p, e)) == 0.0
    assert float(embedding_mse(torch.zeros(1, 1, 2, 2), e)) > 0


def test_disagreement_points_come_only_from_the_disagreement():
    s = torch.zeros(3, 8, 8, dtype=torch.bool)
    t = torch.zeros(3, 8, 8, dtype=torch.bool)
    t[0, 2:4, 5:7] = True  # row 0: the student misses a teacher's 2x2 patch -> positive clicks there
    s[1, 6, 1] = True  # row 1: the student has one extra pixel -> a negative click on it
    # row 2: agreement everywhere -> padding
    torch.manual_seed(0)
    for _ in range(20):
        coords, labels = disagreement_points(s, t, size=64)
        assert coords.shape == (3, 1, 2) and labels.shape == (3, 1)
        x0, y0 = coords[0, 0] / 8 - 0.5  # back to pixel indices (8 px of input per mask pixel)
        assert labels[0, 0] == 1 and 5 <= x0 <= 6 and 2 <= y0 <= 3
        assert labels[1, 0] == 0 and torch.equal(coords[1, 0], torch.tensor([1 * 8 + 4.0, 6 * 8 + 4.0]))
        assert labels[2, 0] == -1


def test_loop_iters_decode_again_with_points(teacher256, monkeypatch):
    student = load_model("test_resnet18", teacher=teacher256, grid=16)
    calls = []
    orig = type(student).decode

    def spy(self, emb, boxes=None, points=None, **kw):
        calls.append((self is student, None if points is None else points[0].shape[1]))
        return orig(self, emb, boxes=boxes, points=points, **kw)

    monkeypatch.setattr(type(student), "decode", spy)
    stage = KDSAMStage(stage=2, student=student, teacher=teacher256, cfg=Stage2Config(loop_iters=2))
    stage.step(_batch(teacher256))
    # student and teacher each decode the box, then box + 1 point, then box + 2 points
    assert [c for c in calls if c[0]] == [(True, None), (True, 1), (True, 2)]
    assert [c for c in calls if not c[0]] == [(False, None), (False, 1), (False, 2)]


@pytest.mark.parametrize("stage,cfg", [(1, Stage1Config), (2, Stage2Config)])
def test_photometric_jitter_changes_the_students_image_only(teacher256, monkeypatch, stage, cfg):
    student = load_model("test_resnet18", teacher=teacher256, grid=16)
    seen = []
    orig = type(student).encode
    monkeypatch.setattr(type(student), "encode", lambda self, x: seen.append(x.clone()) or orig(self, x))
    batch = _batch(teacher256)
    clean = {k: v.clone() for k, v in batch.items()}
    KDSAMStage(stage=stage, student=student, teacher=teacher256, cfg=cfg(perceptual=0.0) if stage == 1 else cfg()
               ).step(batch)
    assert torch.equal(seen[-1], clean["image"])  # off by default: the student sees the image as it is
    KDSAMStage(stage=stage, student=student, teacher=teacher256,
               cfg=cfg(photometric=0.2, **({"perceptual": 0.0} if stage == 1 else {}))).step(batch)
    assert not torch.allclose(seen[-1], clean["image"], atol=1e-3)
    # the targets (teacher embedding, mask) and the batch itself are left as they were
    assert all(torch.equal(batch[k], clean[k]) for k in clean)
