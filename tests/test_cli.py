"""In-process CLI runs: exit codes, one-line errors, files written."""

import json

import pytest

from samdistill.cli import main


def test_eval_with_test_sam(tmp_path, synth_folder, capsys):
    out = tmp_path / "ev"
    rc = main(["eval", "--model", "test_sam", "--data", str(synth_folder), "--out", str(out), "--no-progress",
               "--box-jitter", "3", "--threads", "1"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["model"] == "test_sam" and s["n"] == 4 and s["threads"] == 1
    assert s["prompt"]["jitter"] == 3.0
    assert (out / "per_image.csv").read_text().count("\n") == 5
    assert "Dice" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["eval", "--model", "test_sam", "--data", "/no/such/dir", "--out", "X"], "data not found"),
        (["eval", "--model", "litemedsm", "--data", "synthetic:n=5", "--out", "X"], "Did you mean 'litemedsam'"),
        (["eval", "--model", "sam_vit_b", "--data", "synthetic:n=5", "--out", "X"], "--checkpoint"),
        (["eval", "--model", "test_sam", "--data", "synthetic:n=5", "--out", "X", "--split", "dev"], "unknown split"),
        (["info", "mobilesam", "--checkpoint", "/no/mobile_sam.pt"], "checkpoint not found"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, monkeypatch, capsys, argv, fragment):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and fragment in err and "\n" not in err and "Traceback" not in err


def test_list_hides_test_models_unless_all(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.split("datasets:")[0].splitlines()[1:] if not line.strip().startswith("(")]
    assert "litemedsam" in names and "mobilenetv4_conv_small" in names
    assert not [n for n in names if n.startswith("test_")]
    from samdistill.models.zoo import populate

    n_test = sum(e.name.startswith("test_") for e in populate())
    assert n_test >= 8 and f"({n_test} test_* models for tests hidden: samdistill list --all)" in out
    assert main(["list", "--all"]) == 0
    out = capsys.readouterr().out
    assert "  test_sam " in out and "  test_resnet18 " in out and "hidden" not in out


def test_bad_option_value_is_a_usage_error(capsys):
    assert main(["eval", "--data", "synthetic", "--out", "x", "--limit", "0"]) == 2


def test_list_and_info(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "litemedsam" in out and "hc18" in out
    assert main(["info", "test_sam"]) == 0
    out = capsys.readouterr().out
    assert "64 px" in out and "total 1.36 M" in out
    assert main(["info", "test_resnet18", "--teacher", "test_sam"]) == 0  # a student architecture on a teacher
    out = capsys.readouterr().out
    assert "64 px" in out and "encoder" in out
    assert main(["info", "test_knowsam_student", "--teacher", "test_sam"]) == 0
    assert "prompt-free" in capsys.readouterr().out


def test_help_has_examples(capsys):
    from samdistill.cli import app

    verbs = [[c.name or c.callback.__name__] for c in app.registered_commands]
    verbs += [["nas"], ["nas", "search"], ["nas", "train"]]
    assert ["eval"] in verbs and len(verbs) >= 12
    for verb in verbs:
        with pytest.raises(SystemExit):
            app([*verb, "--help"], prog_name="samdistill")
        assert "Example:" in capsys.readouterr().out, verb


def test_quickstart_distills_the_real_teacher(tmp_path, capsys):
    from samdistill.models.zoo import load_model

    rc = main(["quickstart", "--out", str(tmp_path / "qs"), "--n", "10"])
    assert rc == 0
    teacher = json.loads((tmp_path / "qs" / "eval" / "teacher" / "summary.json").read_text())
    student = json.loads((tmp_path / "qs" / "eval" / "student" / "summary.json").read_text())
    assert teacher["n"] == student["n"] == 2
    assert teacher["dice"] > 0.85  # the bundled real weights; random weights score near 0
    assert student["encoder_gmacs"] * 30 < teacher["encoder_gmacs"]
    assert load_model(tmp_path / "qs" / "student.pt").family == "efficientvit_b0"
    out = capsys.readouterr().out
    assert "teacher on synthetic" in out and "student (efficientvit_b0)" in out
    assert f"student: {tmp_path / 'qs' / 'student.pt'}" in out and "samdistill export" in out
    n_val = len(json.loads((tmp_path / "qs" / "split.json").read_text())["val"])
    assert len(list((tmp_path / "qs" / "overlays").glob("*.png"))) == min(n_val, 2)  # overlays=2, 1 val image at n=10


def _fake_eval_summary(model: str) -> dict:
    return {"model": model, "dataset": "synthetic", "split": "test", "n": 2, "prompt": {"description": "tight box"},
            "dice": 0.9, "iou": 0.8, "nsd": 0.7, "hd95": 3.0, "threads": 1, "device": "cpu", "encoder_gmacs": 1.0,
            "latency": {"encoder_ms": 1.0, "decoder_ms": 1.0, "end_to_end_ms": 2.0}, "params": {"total": 1e6},
            "skipped": {"count": 0}, "excluded_empty_gt": {"count": 0}}


def test_quickstart_ends_with_where_the_student_is_and_what_to_run_next(tmp_path, monkeypatch, capsys):
    import shlex
    from pathlib import Path

    import samdistill.api

    out = tmp_path / "my runs" / "qs"  # a space: the printed commands must still paste into a shell

    def fake_quickstart(out_dir, *, n, threads):
        o = Path(out_dir)
        return {"teacher": _fake_eval_summary("teacher"), "student": _fake_eval_summary("student (x)"),
                "files": {"student": str(o / "student.pt"), "curves": str(o / "plots" / "curves.png"),
                          "overlays": [str(o / "overlays" / "a.png"), str(o / "overlays" / "b.png")],
                          "eval": {r: str(o / "eval" / r) for r in ("teacher", "student")},
                          "data": f"synthetic:n={n},size=256,seed=0"}}

    monkeypatch.setattr(samdistill.api, "quickstart", fake_quickstart)
    assert main(["quickstart", "--out", str(out), "--n", "12"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert f"student: {out / 'student.pt'}" in lines
    assert str(out / "plots" / "curves.png") in text and "2 PNGs" in text and str(out / "overlays") in text
    commands = {shlex.split(ln.split(":", 1)[1])[1]: shlex.split(ln.split(":", 1)[1])
                for ln in lines[lines.index("next:") + 1:]}
    assert commands["demo"] == ["samdistill", "demo", "--student", str(out / "student.pt")]
    assert commands["export"] == ["samdistill", "export", str(out / "student.pt"), "--out", str(out / "onnx")]
    assert commands["eval"][3] == str(out / "student.pt") and "synthetic:n=12,size=256,seed=0" in commands["eval"]
    assert commands["bench"][2:5] == ["litemedsam", str(out / "student.pt"), str(out / "onnx")]


def test_distill_runs_a_recipe_as_its_own_method_unless_method_is_given(tmp_path, monkeypatch, capsys):
    seen = []

    def fake(cfg, out, resume=False):
        seen.append(cfg)
        return {"interrupted": True, "reason": "a test", "step": 0}

    monkeypatch.setattr("samdistill.api.distill", fake)
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("method: meanteacher\nmeanteacher:\n  epochs: 2\n")
    assert main(["distill", "--recipe", str(recipe), "--data", "synthetic:n=8", "--out", str(tmp_path / "r"),
                 "--labeled", "3"]) == 143
    assert seen[-1].method == "meanteacher" and seen[-1].meanteacher.epochs == 2 and seen[-1].meanteacher.labeled == 3
    assert main(["distill", "--data", "synthetic:n=8", "--out", str(tmp_path / "k")]) == 143
    assert seen[-1].method == "kdsam"
    assert main(["distill", "--recipe", str(recipe), "--method", "kdsam", "--data", "synthetic:n=8",
                 "--out", str(tmp_path / "x")]) == 2
    assert "belongs to method meanteacher, not kdsam" in capsys.readouterr().err
