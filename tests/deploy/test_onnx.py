"""ONNX export: two graphs, onnxruntime parity on two shapes, dynamic prompts, fused students."""

import json

import numpy as np
import pytest
import torch

from samdistill.cli import main
from samdistill.deploy.onnx import boxes_to_points, export_promptable
from samdistill.models.zoo import load_model, save_model

import onnxruntime as ort  # noqa: E402  (dev extra)


@pytest.mark.parametrize("name", ["test_sam", "test_repvit_m0_9", "test_resnet18"])
def test_export_matches_pytorch(tmp_path, tiny_model, name):
    model = tiny_model if name == "test_sam" else load_model(name, teacher=tiny_model).eval()
    report = export_promptable(model, tmp_path)
    assert report["max_abs_diff"] < 1e-3 and report["min_dice_agreement"] > 0.99
    shapes = [c["shape"][0] for c in report["checks"] if c["graph"] == "encoder"]
    assert shapes == [1, 2]  # dynamic batch checked on two shapes
    spec = json.loads((tmp_path / "preprocess.json").read_text())
    assert spec["preprocess"]["input_size"] == 64 and spec["embedding_grid"] == 16
    # a number of prompts never seen at export time
    dec = ort.InferenceSession(str(tmp_path / "decoder.onnx"), providers=["CPUExecutionProvider"])
    emb = model.encode(torch.rand(1, 3, 64, 64))
    boxes = torch.rand(5, 2, 2).sort(dim=1).values.reshape(5, 4) * 63
    coords, labels = boxes_to_points(boxes)
    got = dec.run(None, {"embeddings": emb.detach().numpy(), "point_coords": coords.numpy(),
                         "point_labels": labels.numpy()})[0]
    ref = model.decode(emb.expand(5, -1, -1, -1), boxes=boxes)[0].detach().numpy()
    assert got.shape == (5, 1, 64, 64) and np.abs(got - ref).max() < 1e-3


def test_cli_export_of_a_student_checkpoint(tmp_path, tiny_model, capsys):
    path = save_model(load_model("test_efficientvit_b0", teacher=tiny_model).eval(), tmp_path / "student.pt")
    assert main(["export", str(path), "--out", str(tmp_path / "onnx")]) == 0
    assert (tmp_path / "onnx" / "encoder.onnx").exists() and (tmp_path / "onnx" / "verification.json").exists()
    assert "Dice agreement" in capsys.readouterr().out


class _BatchAsIntEncoder(torch.nn.Module):
    """An encoder that reads the batch size as a Python int (as TinyViT's ``B = len(x)``, inside LiteMedSAM):
    traced, its graph holds the constant 1."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        y = self.inner(x)
        return y.reshape(len(x), *y.shape[1:])


def test_an_encoder_traced_for_one_image_is_exported_for_batch_1(tmp_path):
    import copy

    from samdistill.deploy.predictor import Predictor

    model = copy.deepcopy(load_model("test_sam"))
    model.image_encoder = _BatchAsIntEncoder(model.image_encoder)
    report = export_promptable(model, tmp_path / "onnx")
    spec = json.loads((tmp_path / "onnx" / "preprocess.json").read_text())
    assert spec["encoder_batch"] == 1
    assert [c["shape"][0] for c in report["checks"] if c["graph"] == "encoder"] == [1]
    pred = Predictor.load(tmp_path / "onnx")
    x = np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32)
    got = pred._encode(x)  # three images through a batch-1 graph, one run each
    with torch.no_grad():
        ref = model.encode(torch.from_numpy(x)).numpy()
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-4
    # a student whose encoder traces generically keeps its dynamic batch axis
    export_promptable(load_model("test_sam"), tmp_path / "onnx2")
    assert json.loads((tmp_path / "onnx2" / "preprocess.json").read_text())["encoder_batch"] is None
