import csv
import json

import numpy as np
import pytest

from samdistill.data.datasets import open_dataset
from samdistill.eval.evaluate import PromptProtocol, evaluate
from samdistill.eval.metrics import dice
from samdistill.data.prompts import box_filled_mask, tight_box


def test_evaluate_writes_per_image_and_summary(tmp_path, tiny_model, synth_folder):
    ds = open_dataset(synth_folder)
    s = evaluate(tiny_model, ds, out_dir=tmp_path / "ev", model_name="test_sam", progress=False)
    rows = list(csv.DictReader(open(tmp_path / "ev" / "per_image.csv")))
    assert [r["id"] for r in rows] == ds.ids("test")
    assert s["n"] == len(rows) == 4
    assert s["dice"] == pytest.approx(np.mean([float(r["dice"]) for r in rows]))
    for key in ("model", "dataset", "split", "n", "dice", "iou", "nsd", "hd95", "params", "encoder_gmacs", "latency_ms"):
        assert key in s
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["n"] == 4
    # seeded split saved next to the run, never into the dataset
    assert json.loads((tmp_path / "ev" / "split.json").read_text())["test"] == ds.ids("test")
    # the filled-box baseline column is the Dice of the filled tight box
    sample = ds.load(rows[0]["id"])
    expected = dice(box_filled_mask(tight_box(sample.mask), sample.mask.shape), sample.mask)
    assert float(rows[0]["dice_box_filled"]) == pytest.approx(expected)


def test_empty_ground_truth_is_excluded_and_counted(tmp_path, tiny_model, synth_folder):
    from PIL import Image

    for sid in ("case_0000", "case_0001"):
        m = np.asarray(Image.open(synth_folder / "masks" / f"{sid}.png"))
        Image.fromarray(np.zeros_like(m)).save(synth_folder / "masks" / f"{sid}.png")
    ds = open_dataset(synth_folder)
    s = evaluate(tiny_model, ds, out_dir=tmp_path / "ev", model_name="t", split="all", progress=False)
    assert s["excluded_empty_gt"]["count"] == 2 and s["n"] == 18


def test_jitter_and_component_protocols_change_prompts():
    m = np.zeros((40, 40), bool)
    m[5:10, 5:10] = True
    m[20:30, 20:35] = True
    tight = PromptProtocol().make(m, "a")["boxes"]
    assert tight.tolist() == [[5, 5, 34, 29]]
    comps = PromptProtocol(kind="components").make(m, "a")["boxes"]
    assert comps.shape == (2, 4)
    jit = PromptProtocol(jitter=4).make(m, "a")["boxes"]
    assert not np.array_equal(jit, tight) and np.all(np.abs(jit - tight) <= 4)
    pts = PromptProtocol(kind="point").make(m, "a")
    assert pts["points"].shape == (1, 1, 2) and pts["labels"].tolist() == [[1]]


# ------------------------------------------------------------------ label-map masks (--labels)
def _label_map_folder(root, n=3):
    """Folder layout, 64x64: class 1 a 10x10 square (rows/cols 5..14), class 2 a 20x20 square (30..49)."""
    from PIL import Image

    from samdistill.data.synthetic import phantom

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    m = np.zeros((64, 64), np.uint8)
    m[5:15, 5:15] = 1
    m[30:50, 30:50] = 2
    for i in range(n):
        img, _ = phantom(0, i, 96)  # at least 72 px a side
        Image.fromarray(np.ascontiguousarray(img[:64, :64])).save(root / "images" / f"c{i}.png")
        Image.fromarray(m).save(root / "masks" / f"c{i}.png")
    (root / "split.json").write_text(json.dumps({"train": [], "val": [], "test": [f"c{i}" for i in range(n)]}))
    return root


def test_eval_of_label_map_masks_names_the_labels_then_scores_the_chosen_foreground(tmp_path, capsys):
    from samdistill.cli import main

    data = _label_map_folder(tmp_path / "lm")
    base = ["eval", "--model", "test_sam", "--data", str(data), "--no-progress", "--threads", "1"]
    assert main([*base, "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a multi-class label map (labels 1, 2)" in err and "--labels 1,2" in err and "\n" not in err

    assert main([*base, "--out", str(tmp_path / "two"), "--labels", "2"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "two" / "per_image.csv")))
    assert len(rows) == 3 and {int(r["gt_area"]) for r in rows} == {400}
    # the filled tight box around the 20x20 square of class 2 is that square
    assert [float(r["dice_box_filled"]) for r in rows] == pytest.approx([1.0] * 3)
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["labels"] == [2]

    assert main([*base, "--out", str(tmp_path / "both"), "--labels", "1,2"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "both" / "per_image.csv")))
    assert {int(r["gt_area"]) for r in rows} == {500}
    # box from (5, 5) to (49, 49): 45 x 45 = 2025 px holding the 500 foreground px
    assert float(rows[0]["dice_box_filled"]) == pytest.approx(2 * 500 / (2025 + 500))


# ------------------------------------------------------------------ --out that cannot be a folder
def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("verb", ["eval", "bench", "cache", "quickstart"])
def test_out_that_is_a_file_or_under_a_file_exits_2_with_one_line(tmp_path, capsys, verb):
    from samdistill.cli import main

    f = tmp_path / "taken.txt"
    f.write_text("keep me")
    argv = {
        "eval": ["eval", "--model", "test_sam", "--data", "synthetic:n=5,size=64", "--no-progress", "--out"],
        "bench": ["bench", "test_sam", "--data", "synthetic:n=5,size=64", "--out"],
        "cache": ["cache", "--teacher", "test_sam", "--data", "synthetic:n=5,size=64", "--cache-dir"],
        "quickstart": ["quickstart", "--out"],
    }[verb]
    flag = argv[-1]
    assert main([*argv, str(f)]) == 2
    assert f"{flag} {f} is an existing file" in _one_line_error(capsys)
    assert main([*argv, str(f / "sub")]) == 2
    assert f"{f} is a file" in _one_line_error(capsys)
    assert f.read_text() == "keep me"


def test_out_under_a_read_only_folder_exits_2_and_the_api_raises(tmp_path, capsys, monkeypatch):
    import os

    from samdistill.api import evaluate_model
    from samdistill.cli import main
    from samdistill.errors import UserError

    # Root writes through permission bits, so a read-only mount is stood in for by os.access.
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.fspath(p) == os.fspath(ro) else real(p, mode))
    assert main(["eval", "--model", "test_sam", "--data", "synthetic:n=5,size=64", "--no-progress",
                 "--out", str(ro / "ev")]) == 2
    assert f"{ro} is not writable" in _one_line_error(capsys)
    assert main(["bench", "test_sam", "--data", "synthetic:n=5,size=64", "--out", str(ro / "b")]) == 2
    assert "not writable" in _one_line_error(capsys)
    with pytest.raises(UserError, match="not writable"):
        evaluate_model("test_sam", "synthetic:n=5,size=64", out_dir=ro / "ev", progress=False)
    assert list(ro.iterdir()) == []


def test_evaluate_itself_checks_out_dir(tmp_path, tiny_model):
    from samdistill.errors import UserError

    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(UserError, match="existing file"):
        evaluate(tiny_model, open_dataset("synthetic:n=5,size=64"), out_dir=f, model_name="t", progress=False)


def test_eval_never_writes_into_a_non_empty_out_and_force_replaces_it_whole(tmp_path, capsys, synth_folder):
    """A colleague's folder is refused (their files untouched); --force replaces it whole, so no file of another
    evaluation (per_image_clicks.csv of a clicks run) is left beside the new summary; a failed eval leaves no
    folder; --force never replaces a folder holding the data or the model."""
    from samdistill.cli import main

    base = ["eval", "--model", "test_sam", "--data", str(synth_folder), "--split", "all", "--limit", "2",
            "--no-progress"]
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "summary.json").write_text("mine")
    assert main([*base, "--out", str(theirs)]) == 2
    assert "--force" in _one_line_error(capsys) and (theirs / "summary.json").read_text() == "mine"
    mixed = tmp_path / "mixed"
    assert main([*base, "--out", str(mixed), "--prompt", "clicks:1"]) == 0
    assert (mixed / "per_image_clicks.csv").exists()
    assert main([*base, "--out", str(mixed), "--force"]) == 0
    assert sorted(p.name for p in mixed.iterdir()) == ["per_image.csv", "split.json", "summary.json"]  # no clicks
    assert "interactive" not in json.loads((mixed / "summary.json").read_text())
    assert main([*base, "--split", "tset", "--out", str(tmp_path / "typo")]) == 2  # fails: nothing left behind
    assert not (tmp_path / "typo").exists() and not list(tmp_path.glob(".typo*"))
    capsys.readouterr()
    before = sorted(p.name for p in synth_folder.iterdir())
    assert main([*base, "--out", str(synth_folder), "--force"]) == 2
    assert "--force would delete it" in _one_line_error(capsys)
    assert sorted(p.name for p in synth_folder.iterdir()) == before


# ------------------------------------------------------------------ --prompt clicks:K (interactive protocol)
def test_eval_clicks_protocol(tmp_path, tiny_model):
    from samdistill.api import evaluate_model

    s = evaluate_model("test_sam", "synthetic:n=6,size=64", out_dir=tmp_path / "ev", split="all", limit=3,
                       prompt="clicks:2", progress=False)
    it = s["interactive"]
    assert it["first"] == "box" and it["clicks"] == 2 and it["n"] == s["n"] == 3 and len(it["dice_clicks"]) == 3
    assert it["dice_clicks"][0] == pytest.approx(s["dice"])  # the first prompt is --prompt box's tight box
    assert s["prompt"]["kind"] == "box" and s["prompt"]["jitter"] == 0.0
    assert it["noc"]["threshold"] == 0.9 and it["noc"]["reached"] + it["noc"]["never"] == 3
    assert "per_image" not in it
    rows = list(csv.DictReader(open(tmp_path / "ev" / "per_image_clicks.csv")))
    assert [r["id"] for r in rows] == [r["id"] for r in csv.DictReader(open(tmp_path / "ev" / "per_image.csv"))]
    assert [float(r["dice_0"]) for r in rows] == pytest.approx(
        [float(r["dice"]) for r in csv.DictReader(open(tmp_path / "ev" / "per_image.csv"))])
    assert "dice_2" in rows[0] and "dice_3" not in rows[0]
    curves = [[float(r[f"dice_{i}"]) for i in range(3)] for r in rows]
    assert np.mean(curves, axis=0) == pytest.approx(it["dice_clicks"])
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["interactive"] == it

    p = evaluate_model("test_sam", "synthetic:n=6,size=64", out_dir=tmp_path / "ev2", split="all", limit=3,
                       prompt="clicks:1:point", progress=False)
    assert p["interactive"]["first"] == "point" and len(p["interactive"]["dice_clicks"]) == 2
    assert p["interactive"]["dice_clicks"][0] == pytest.approx(p["dice"]) and p["prompt"]["kind"] == "point"

    plain = evaluate_model("test_sam", "synthetic:n=6,size=64", out_dir=tmp_path / "ev3", split="all", limit=3,
                           progress=False)
    assert "interactive" not in plain and not (tmp_path / "ev3" / "per_image_clicks.csv").exists()
    assert plain["dice"] == s["dice"]  # the click pass leaves the box evaluation as it was


@pytest.mark.parametrize("bad, kw, match", [
    ("clicks:0", {}, "clicks:K"),
    ("clicks:2:scribble", {}, "first prompt is box or point"),
    ("scribble", {}, "use box, components, point, clicks:K or clicks:K:point"),
    ("clicks:2", {"box_jitter": 3.0}, "drop --box-jitter"),
])
def test_eval_bad_click_prompts_are_user_errors_before_any_work(tmp_path, bad, kw, match):
    from samdistill.api import evaluate_model
    from samdistill.errors import UserError

    with pytest.raises(UserError, match=match):
        evaluate_model("test_sam", "synthetic:n=6,size=64", out_dir=tmp_path / "bad", prompt=bad, progress=False, **kw)
    assert not (tmp_path / "bad").exists()


def test_evaluate_refuses_clicks_it_cannot_run(tmp_path, tiny_model):
    from samdistill.errors import UserError
    from samdistill.models.zoo import load_model

    ds = open_dataset("synthetic:n=6,size=64")
    free = load_model("test_knowsam_student", teacher=tiny_model)
    for model, kw in ((free, {}), (tiny_model, {"protocol": PromptProtocol(kind="components")}),
                      (tiny_model, {"protocol": PromptProtocol(jitter=2.0)}), (tiny_model, {"device": "cuda"})):
        with pytest.raises(UserError, match="clicks:K needs a promptable model"):
            evaluate(model, ds, out_dir=tmp_path / "ev", model_name="t", clicks=2, progress=False, **kw)
    assert not (tmp_path / "ev").exists()


def test_cli_eval_clicks_prints_the_curve_and_noc(tmp_path, capsys):
    from samdistill.cli import main

    out = tmp_path / "ev"
    assert main(["eval", "--model", "test_sam", "--data", "synthetic:n=6,size=64", "--split", "all", "--limit", "2",
                 "--prompt", "clicks:2", "--no-progress", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    it = json.loads((out / "summary.json").read_text())["interactive"]
    assert "Dice after the first prompt, then each click: " + " ".join(f"{d:.4f}" for d in it["dice_clicks"]) in text
    assert "NoC@90: " in text and f"{it['noc']['never']} never reach it" in text
    assert str(out / "per_image_clicks.csv") in text
    assert main(["eval", "--model", "test_sam", "--data", "synthetic:n=6,size=64", "--prompt", "clicks:x",
                 "--no-progress", "--out", str(tmp_path / "bad")]) == 2
    assert "clicks:K" in _one_line_error(capsys)
    assert main(["eval", "--model", "test_sam", "--data", "synthetic:n=6,size=64", "--prompt", "clicks:2",
                 "--box-jitter", "2", "--no-progress", "--out", str(tmp_path / "bad")]) == 2
    assert "drop --box-jitter" in _one_line_error(capsys)


# ------------------------------------------------------------------ zoom (--zoom)
def test_eval_zoom_scores_what_the_zoomed_predictor_gives(tmp_path, tiny_model, synth_folder, caplog):
    """``zoom="auto"`` scores a student distilled on crops on its crops, as ``Predictor`` (and so predict, bench and
    the demo) segments with it: per image the Dice of the Predictor's mask under the same tight box; ``zoom=0``
    scores whole images (again the Predictor's) and says in the summary that this is not the model's own zoom."""
    from samdistill.deploy.predictor import Predictor
    from samdistill.models.zoo import load_model, save_model

    student = load_model(save_model(load_model("test_efficientvit_b0", teacher=tiny_model).eval(),
                                    tmp_path / "zoomed.pt", provenance={"zoom": 2.0}))
    ds = open_dataset(synth_folder)

    def predictor_dice(zoom):
        p = Predictor.from_torch(student, zoom=zoom)
        out = {}
        for sid in ds.ids("test"):
            s = ds.load(sid)
            p.set_image(s.image)
            out[sid] = dice(p.predict(boxes=tight_box(s.mask)[None])[0][0], s.mask)
        return out

    runs = {}
    for zoom in ("auto", 0):
        s = evaluate(student, ds, out_dir=tmp_path / f"ev_{zoom}", model_name="zoomed", progress=False, zoom=zoom)
        rows = list(csv.DictReader(open(tmp_path / f"ev_{zoom}" / "per_image.csv")))
        runs[zoom] = (s, {r["id"]: float(r["dice"]) for r in rows})
    zoomed, whole = runs["auto"], runs[0]
    assert zoomed[0]["zoom"] == 2.0 and "zoom_note" not in zoomed[0]
    assert whole[0]["zoom"] is None and "whole images" in whole[0]["zoom_note"]
    for got, ref in ((zoomed[1], predictor_dice(2.0)), (whole[1], predictor_dice(None))):
        assert got.keys() == ref.keys()
        assert all(got[k] == pytest.approx(ref[k], abs=1e-6) for k in ref)
    assert zoomed[1] != whole[1]  # the crops are other pixels


def test_eval_zoom_with_several_boxes_crops_each_box_as_the_predictor_does(tiny_model):
    """``--prompt components`` under zoom: each component's box on its own crop, the masks OR-ed: the union of
    the zoomed Predictor's masks, not one crop around both boxes."""
    from samdistill.deploy.predictor import Predictor
    from samdistill.eval.evaluate import predict_with_timing

    image = (np.random.default_rng(4).random((90, 120, 3)) * 255).astype(np.uint8)
    boxes = np.array([[5.0, 5.0, 14.0, 14.0], [100.0, 70.0, 109.0, 79.0]])
    mask, t = predict_with_timing(tiny_model, image, {"boxes": boxes}, "cpu", zoom=2.0)
    p = Predictor.from_torch(tiny_model, zoom=2.0)
    p.set_image(image)
    ref = p.predict(boxes=boxes)[0]
    assert (mask == ref.any(0)).all()
    shared, _ = predict_with_timing(tiny_model, image, {"boxes": boxes[:1]}, "cpu", zoom=2.0)
    assert (mask[:40, :40] == shared[:40, :40]).all()  # the first box's region: as if it were alone
    assert t["encoder_ms"] > 0 and np.isfinite(t["score"])


def test_eval_zoom_bad_values_are_one_line_errors(tmp_path, tiny_model):
    from samdistill.api import evaluate_model
    from samdistill.errors import UserError
    from samdistill.models.zoo import load_model

    with pytest.raises(UserError, match="zoom must be"):
        evaluate_model("test_sam", "synthetic:n=8", out_dir=tmp_path / "a", zoom=0.5, progress=False)
    assert not (tmp_path / "a").exists()  # refused before any work
    free = load_model("test_knowsam_student", teacher=tiny_model)
    with pytest.raises(UserError, match="prompt-free"):
        evaluate(free, open_dataset("synthetic:n=8"), out_dir=tmp_path / "b", model_name="free", zoom=1.5,
                 progress=False)
    assert not (tmp_path / "b").exists()
