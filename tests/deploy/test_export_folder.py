"""An export owns its folder: staged and moved into place whole, non-empty refused unless --force,
manifest.json naming what was written (roles, sha256), loaders that trust the manifest and refuse a
folder whose files changed or whose old, manifest-less contents are ambiguous."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import samdistill
from samdistill.api import export_model
from samdistill.cli import main
from samdistill.deploy.predictor import Predictor
from samdistill.errors import UserError
from samdistill.models.zoo import load_model, save_model

PROMPTABLE_FILES = ["decoder.onnx", "encoder.onnx", "manifest.json", "preprocess.json", "verification.json"]
IMG = (np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_model):
    """Two students saved once, and one export of each (copied per test, never modified in place)."""
    root = tmp_path_factory.mktemp("exports")
    able = save_model(load_model("test_efficientvit_b0", teacher=tiny_model).eval(), root / "able.pt")
    free = save_model(load_model("test_knowsam_student", teacher=tiny_model).eval(), root / "free.pt")
    export_model(able, root / "able_onnx")
    export_model(free, root / "free_onnx")
    return root


def _copy(exports: Path, name: str, dst: Path) -> Path:
    shutil.copytree(exports / name, dst)
    return dst


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_export_into_a_prompt_free_export_is_refused_then_replaced_whole_with_force(tmp_path, exports, capsys):
    out = _copy(exports, "free_onnx", tmp_path / "onnx")
    before = _snapshot(out)
    assert main(["export", str(exports / "able.pt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not empty" in err and "--force" in err
    assert _snapshot(out) == before  # refused before anything was written

    assert main(["export", str(exports / "able.pt"), "--out", str(out), "--force"]) == 0
    said = capsys.readouterr().out.strip().splitlines()[-1]
    assert said == (f"wrote encoder.onnx, decoder.onnx, preprocess.json, verification.json, manifest.json "
                    f"in {out}")
    assert sorted(p.name for p in out.iterdir()) == PROMPTABLE_FILES  # the stale model.onnx is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]  # no staging folder left behind
    p = Predictor.load(out)
    assert not p.prompt_free
    p.set_image(IMG)
    masks, iou = p.predict(boxes=[[5, 5, 40, 30], [10, 10, 60, 45]])
    ref = Predictor.from_torch(load_model(exports / "able.pt"))
    ref.set_image(IMG)
    ref_masks, _ = ref.predict(boxes=[[5, 5, 40, 30], [10, 10, 60, 45]])
    assert masks.shape == (2, 50, 70) and np.isfinite(iou).all() and (masks == ref_masks).mean() > 0.99


def test_failed_export_leaves_the_previous_folder_as_it_was(tmp_path, exports, monkeypatch):
    out = _copy(exports, "free_onnx", tmp_path / "onnx")
    before = _snapshot(out)

    def boom(*a, **k):
        raise RuntimeError("verification failed")

    monkeypatch.setattr("samdistill.deploy.onnx.verify_promptable", boom)
    with pytest.raises(RuntimeError, match="verification failed"):
        export_model(exports / "able.pt", out, force=True)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]
    assert Predictor.load(out).prompt_free  # still the prompt-free export, loadable


def test_manifest_names_roles_hashes_kind_source_opset_and_version(tmp_path, exports, monkeypatch):
    shutil.copy(exports / "able.pt", tmp_path / "able.pt")
    monkeypatch.chdir(tmp_path)
    assert main(["export", "able.pt", "--out", "onnx", "--opset", "17"]) == 0
    m = json.loads(Path("onnx/manifest.json").read_text())
    assert m["format"] == "samdistill-onnx/1" and m["kind"] == "promptable" and m["opset"] == 17
    assert m["source"] == "able.pt" and m["family"] == "test_efficientvit_b0"
    assert m["samdistill_version"] == samdistill.__version__
    assert [(f["name"], f["role"]) for f in m["files"]] == [
        ("encoder.onnx", "encoder"), ("decoder.onnx", "decoder"), ("preprocess.json", "preprocess"),
        ("verification.json", "verification")]
    for f in m["files"]:
        data = Path("onnx", f["name"]).read_bytes()
        assert f["sha256"] == hashlib.sha256(data).hexdigest() and f["bytes"] == len(data)
    ver = json.loads(Path("onnx/verification.json").read_text())
    assert m["verification"] == {"file": "verification.json", "max_abs_diff": ver["max_abs_diff"],
                                 "min_dice_agreement": ver["min_dice_agreement"]}
    assert m["preprocess"] == "preprocess.json"

    # an absolute model path is stored relative to the current folder, or as its name outside it
    assert main(["export", str(tmp_path / "able.pt"), "--out", "onnx2"]) == 0
    assert json.loads(Path("onnx2/manifest.json").read_text())["source"] == "able.pt"
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert main(["export", str(exports / "free.pt"), "--out", "free"]) == 0
    text = Path("free/manifest.json").read_text()
    m = json.loads(text)
    assert m["kind"] == "promptfree" and m["source"] == "free.pt" and str(exports) not in text
    assert [(f["name"], f["role"]) for f in m["files"]] == [
        ("model.onnx", "model"), ("preprocess.json", "preprocess"), ("verification.json", "verification")]


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the weights: onnxruntime would still load it
    path.write_bytes(bytes(data))


def test_a_changed_or_missing_graph_is_a_one_line_error_saying_re_export(tmp_path, exports, capsys):
    out = _copy(exports, "able_onnx", tmp_path / "onnx")
    Predictor.load(out)  # as exported: fine
    _flip_a_byte(out / "encoder.onnx")
    with pytest.raises(UserError, match=r"encoder.onnx has changed since it was exported.*re-export"):
        Predictor.load(out)
    from PIL import Image

    Image.fromarray(IMG).save(tmp_path / "img.png")
    rc = main(["predict", str(out), "--input", str(tmp_path / "img.png"), "--out", str(tmp_path / "pred")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "re-export" in err and "encoder.onnx" in err
    # bench recognises the folder through the same check
    rc = main(["bench", str(out), "--data", "synthetic:n=4,size=64", "--out", str(tmp_path / "bench")])
    assert rc == 2 and "has changed since it was exported" in capsys.readouterr().err

    out2 = _copy(exports, "able_onnx", tmp_path / "onnx2")
    (out2 / "decoder.onnx").unlink()
    with pytest.raises(UserError, match=r"decoder.onnx is missing \(named in manifest.json\).*re-export"):
        Predictor.load(out2)


def test_manifest_that_is_damaged_or_points_outside_the_folder_is_refused(tmp_path, exports):
    out = _copy(exports, "able_onnx", tmp_path / "onnx")
    good = json.loads((out / "manifest.json").read_text())
    cases = [
        ({**good, "format": "samdistill-onnx/9"}, "format samdistill-onnx/9"),
        ({**good, "kind": "promptfree"}, "no single model file"),
        ({**good, "files": [{**good["files"][0], "name": "../elsewhere.onnx"}] + good["files"][1:]},
         "outside the folder"),
    ]
    for manifest, msg in cases:
        (out / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(UserError, match=msg):
            Predictor.load(out)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON.*re-export"):
        Predictor.load(out)


def test_folder_without_manifest_is_read_only_when_unambiguous(tmp_path, exports):
    # an older samdistill's promptable export, then a prompt-free one written into the same folder
    old = _copy(exports, "able_onnx", tmp_path / "old")
    (old / "manifest.json").unlink(missing_ok=True)  # as an older samdistill wrote it
    assert not Predictor.load(old).prompt_free
    free = _copy(exports, "free_onnx", tmp_path / "free")
    (free / "manifest.json").unlink(missing_ok=True)
    assert Predictor.load(free).prompt_free
    shutil.copy(free / "model.onnx", old / "model.onnx")
    with pytest.raises(UserError, match=r"holds decoder.onnx, encoder.onnx, model.onnx and no manifest.json.*re-export"):
        Predictor.load(old)
    (old / "model.onnx").unlink()
    (old / "decoder.onnx").unlink()
    with pytest.raises(UserError, match="re-export"):
        Predictor.load(old)


def test_force_never_deletes_the_model_being_exported_nor_the_current_folder(tmp_path, exports, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(exports / "able.pt", run / "student.pt")
    assert main(["export", str(run / "student.pt"), "--out", str(run), "--force"]) == 2
    assert "would delete it" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["student.pt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert main(["export", str(run / "student.pt"), "--out", "."]) == 2
    assert "current folder" in capsys.readouterr().err
    assert list(empty.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["empty", "run"]
