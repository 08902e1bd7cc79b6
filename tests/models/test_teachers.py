import numpy as np
import pytest
import torch

from samdistill.data.synthetic import phantom
from samdistill.errors import CheckpointError, UserError
from samdistill.eval.metrics import dice
from samdistill.models.zoo import MODELS, load_model, populate, save_model


def test_test_sam_shapes_and_seed(tiny_model):
    x = torch.randn(2, 3, 64, 64)
    emb = tiny_model.encode(x)
    assert emb.shape == (2, 256, 16, 16)
    boxes = torch.tensor([[4.0, 4.0, 40.0, 40.0], [10.0, 8.0, 30.0, 50.0]])
    logits, iou = tiny_model.decode(emb, boxes=boxes)
    assert logits.shape == (2, 1, 64, 64) and iou.shape == (2, 1)
    multi, iou3 = tiny_model.decode(emb, boxes=boxes, multimask=True)
    assert multi.shape == (2, 3, 64, 64) and iou3.shape == (2, 3)
    # batched decode equals decoding each image alone
    alone = tiny_model.decode(emb[1:], boxes=boxes[1:])[0]
    assert torch.allclose(logits[1:], alone, atol=1e-5)
    same = load_model("test_sam", seed=0)
    other = load_model("test_sam", seed=1)
    assert torch.equal(same.encode(x), tiny_model.encode(x))
    assert not torch.allclose(other.encode(x), tiny_model.encode(x))


def test_points_and_mask_prompts(tiny_model):
    emb = tiny_model.encode(torch.randn(1, 3, 64, 64))
    pts = (torch.tensor([[[20.0, 30.0], [5.0, 5.0]]]), torch.tensor([[1, 0]]))
    a, _ = tiny_model.decode(emb, points=pts)
    b, _ = tiny_model.decode(emb, points=pts, mask_prompt=torch.randn(1, 1, 64, 64))
    assert a.shape == b.shape == (1, 1, 64, 64)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError):
        tiny_model.decode(emb)


def test_teachers_are_frozen(tiny_model):
    assert not tiny_model.training
    assert all(not p.requires_grad for p in tiny_model.parameters())


def test_litemedsam_real_weights_segment_a_phantom(litemedsam):
    assert litemedsam.input_size == 256 and litemedsam.embedding_grid == 64
    assert litemedsam.parameter_counts()["total"] == 9_791_300
    img, mask = phantom(0, 1, 256)
    ys, xs = np.nonzero(mask)
    pred = litemedsam.predict(img, np.array([[xs.min(), ys.min(), xs.max(), ys.max()]]))
    assert pred.shape == (1,) + mask.shape
    # random weights give ~0 here; the bundled weights segment the blob
    assert dice(pred[0], mask) > 0.85


def test_save_and_load_checkpoint_roundtrip(tmp_path, tiny_model):
    path = save_model(tiny_model, tmp_path / "m.pt", provenance={"note": "test"})
    back = load_model(path)
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(back.encode(x), tiny_model.encode(x))
    assert back.preprocess == tiny_model.preprocess
    assert back.provenance == {"note": "test"}
    assert not list(tmp_path.glob("*.tmp"))


def test_truncated_and_foreign_checkpoints_are_clear_errors(tmp_path, tiny_model):
    good = save_model(tiny_model, tmp_path / "m.pt")
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_model(tmp_path / "cut.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_model(tmp_path / "empty.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "raw.pt")
    with pytest.raises(CheckpointError, match="not a samdistill checkpoint"):
        load_model(tmp_path / "raw.pt")
    # a test_sam state dict handed to LiteMedSAM: names the file and what was expected
    torch.save(tiny_model.state_dict(), tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match=r"wrong\.pth does not fit LiteMedSAM"):
        load_model("litemedsam", checkpoint=tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match="not found"):
        load_model("litemedsam", checkpoint=tmp_path / "missing.pth")


def test_official_sam_teachers_need_a_checkpoint_path():
    for name in ("sam_vit_b", "sam_vit_l", "sam_vit_h", "medsam_vit_b", "mobilesam"):
        assert MODELS.entry(name).meta["input_size"] == 1024
    with pytest.raises(CheckpointError, match="sam_vit_b_01ec64.pth"):
        load_model("sam_vit_b")
    with pytest.raises(UserError, match="Did you mean"):
        load_model("sam_vit_x")


@pytest.mark.parametrize("name,params", [("sam_vit_b", 93_735_472), ("mobilesam", 10_130_092)])
def test_official_loader_accepts_a_saved_state_dict(tmp_path, name, params):
    populate()
    arch = load_model(name, pretrained=False)
    assert arch.parameter_counts()["total"] == params
    with torch.no_grad():
        for p in arch.mask_decoder.parameters():
            p.add_(0.01)
    torch.save(arch.state_dict(), tmp_path / "official.pth")
    loaded = load_model(name, checkpoint=tmp_path / "official.pth")
    for (k, a), b in zip(arch.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    assert loaded.preprocess.normalize == "meanstd"
    # the other family's file is rejected with the file named
    torch.save({"image_encoder.x": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="other.pth does not fit"):
        load_model(name, checkpoint=tmp_path / "other.pth")


def test_medsam_uses_official_stretch_preprocessing():
    from samdistill.models.teachers.sam import MEDSAM_PREPROCESS

    assert MEDSAM_PREPROCESS.resize == "stretch" and MEDSAM_PREPROCESS.normalize == "minmax"
    assert MEDSAM_PREPROCESS.resized_hw((300, 500)) == (1024, 1024)


def test_a_folder_given_as_a_model_says_what_to_give_instead(tmp_path):
    """An export folder points to the commands that take it and to its source checkpoint; a run folder to its
    student.pt; any other folder to a name or a .pt file (not "unknown model" and the list of names)."""
    import json

    export = tmp_path / "onnx"
    export.mkdir()
    (export / "manifest.json").write_text(json.dumps({"source": "runs/a/student.pt"}))
    with pytest.raises(UserError, match=r"onnx is an ONNX export folder.*bench.*predict.*\(runs/a/student.pt\)"):
        load_model(export)
    run = tmp_path / "run"
    run.mkdir()
    (run / "student.pt").write_bytes(b"")
    with pytest.raises(UserError, match=r"run is a run folder; give its checkpoint: .*run/student.pt"):
        load_model(run)
    with pytest.raises(UserError, match=r"is a folder, not a model"):
        load_model(tmp_path)
