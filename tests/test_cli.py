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
    for verb in ("eval", "info", "list", "quickstart"):
        with pytest.raises(SystemExit):
            from samdistill.cli import app

            app([verb, "--help"], prog_name="samdistill")
        assert "Example:" in capsys.readouterr().out


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
