"""In-process distillation with the tiny teacher: loss goes down, saves, resumes exactly, evaluates."""

import json

import pytest
import torch

from samdistill.cli import main
from samdistill.config import load_config
from samdistill.distill import distill
from samdistill.errors import UserError
from samdistill.models.zoo import load_model

DATA = "synthetic:n=16,size=80,seed=1"


def _cfg(tmp_path, **extra):
    base = {
        "teacher": "test_sam", "student": {"name": "test_efficientvit_b0"}, "data": {"path": DATA},
        "cache": {"dir": str(tmp_path / "cache")}, "progress": False, "overlays": 1, "threads": 1,
        "stage1": {"epochs": 3, "batch_size": 4, "perceptual": 0.1, "optim": {"lr": 0.01, "warmup_steps": 2}},
        "stage2": {"epochs": 2, "batch_size": 4, "optim": {"lr": 0.003, "warmup_steps": 2}},
    }
    base.update(extra)
    return load_config("kdsam", base)


def test_distill_lowers_loss_saves_and_evaluates(tmp_path):
    out = tmp_path / "run"
    s = distill(_cfg(tmp_path), out)
    rows = [r for r in (out / "metrics.csv").read_text().splitlines()[1:]]
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    mse = [float(r.split(",")[header.index("train_mse")]) for r in rows[:3]]
    assert mse[-1] < mse[0]  # stage 1 regresses the teacher embedding
    assert {r.split(",")[header.index("threads")] for r in rows} == {"1"}  # each epoch's torch threads (cfg: 1)
    for f in ("config.yaml", "student.pt", "summary.json", "plots/curves.png", "checkpoints/best.pt", "log.txt"):
        assert (out / f).exists(), f
    assert list((out / "overlays").glob("*.png"))
    assert s["cache"]["misses"] > 0
    student = load_model(out / "student.pt")
    assert student.family == "test_efficientvit_b0" and not student.training
    assert main(["eval", "--model", str(out / "student.pt"), "--data", DATA, "--out", str(out / "ev"),
                 "--no-progress"]) == 0
    assert json.loads((out / "ev" / "summary.json").read_text())["n"] > 0
    # a second run reuses the cache entirely
    s2 = distill(_cfg(tmp_path, stages=[1], stage1={"epochs": 1, "batch_size": 4}), tmp_path / "run2")
    assert s2["cache"]["misses"] == 0 and s2["cache"]["hits"] == s["cache"]["misses"]


def test_interrupted_run_resumes_to_identical_weights(tmp_path):
    full = distill(_cfg(tmp_path), tmp_path / "full")
    cut = distill(_cfg(tmp_path), tmp_path / "cut", stop_after_steps=5)  # dies inside stage 1, epoch 2
    assert cut["interrupted"]
    with pytest.raises(UserError, match="--resume"):
        distill(_cfg(tmp_path), tmp_path / "cut")
    first = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)["seconds"]
    resumed = distill(_cfg(tmp_path), tmp_path / "cut", resume=True)
    # the run's time counts the first call's loop up to its checkpoint as well as this call's
    assert first > 0 and resumed["train_seconds_all_calls"] == pytest.approx(first + resumed["train_seconds"], abs=0.05)
    assert resumed["total_seconds_all_calls"] > resumed["total_seconds"]
    assert full["train_seconds_all_calls"] == pytest.approx(full["train_seconds"], abs=0.05)  # one call: the same
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full["steps"] == json.loads((tmp_path / "cut" / "summary.json").read_text())["steps"]


def test_resuming_a_checkpoint_without_its_time_leaves_the_all_calls_time_unknown(tmp_path):
    """A checkpoint written before the loop's seconds were recorded: the summary must not present the last call's
    time as the whole run's (benchmarks then fall back to the epoch sum)."""
    cut = distill(_cfg(tmp_path), tmp_path / "cut", stop_after_steps=5)
    assert cut["interrupted"]
    last = tmp_path / "cut" / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    del state["seconds"]
    torch.save(state, last)
    resumed = distill(_cfg(tmp_path), tmp_path / "cut", resume=True)
    assert "train_seconds_all_calls" not in resumed and "total_seconds_all_calls" not in resumed
    again = torch.load(last, weights_only=True)
    assert again["seconds"] is None  # and stays unknown for later resumes


def test_fresh_run_into_a_folder_that_holds_a_run_is_refused(tmp_path, capsys):
    """Even with its checkpoints deleted, a finished run is not overwritten by a fresh one."""
    import shutil

    out = tmp_path / "done"
    args = ["distill", "--teacher", "test_sam", "--student", "test_resnet18", "--data", "synthetic:n=8,size=64",
            "--out", str(out), f"cache.dir={tmp_path / 'cache'}", "stage1.epochs=1", "stage2.epochs=1",
            "progress=false", "overlays=0", "threads=1"]
    assert main(args) == 0
    shutil.rmtree(out / "checkpoints")
    before = {f: (out / f).read_bytes() for f in ("config.yaml", "student.pt", "summary.json", "metrics.csv")}
    capsys.readouterr()
    assert main(args + ["stage1.epochs=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {out} holds a run (student.pt); add --resume to continue it or choose a new --out"
    assert {f: (out / f).read_bytes() for f in before} == before and not (out / ".lock").exists()
    # a folder holding an architecture search is not a run to continue
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "genotype.json").write_text("{}")
    with pytest.raises(UserError, match="holds an architecture search"):
        distill(_cfg(tmp_path), tmp_path / "search")


def test_cli_distill_with_overrides_and_bad_key(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["distill", "--teacher", "test_sam", "--student", "test_resnet18", "--data", DATA, "--out", str(out),
               f"cache.dir={tmp_path / 'cache'}", "stage1.epochs=1", "stage2.epochs=1", "progress=false",
               "stage1.batch_size=8", "stage2.batch_size=8", "--stage", "2"])
    assert rc == 0
    assert "stage1" not in (out / "metrics.csv").read_text()
    assert "best val Dice" in capsys.readouterr().out
    assert main(["distill", "--data", DATA, "--out", str(tmp_path / "x"), "stage1.epoch=2"]) == 2
    assert "did you mean 'stage1.epochs'" in capsys.readouterr().err


def test_resume_auto_starts_resumes_reads_a_finished_run_and_extends_a_changed_one(tmp_path, monkeypatch):
    from samdistill.train.trainer import Trainer

    out = tmp_path / "auto"
    cut = distill(_cfg(tmp_path), out, resume="auto", stop_after_steps=5)  # empty folder: a fresh run, cut short
    assert cut["interrupted"]
    done = distill(_cfg(tmp_path), out, resume="auto")  # holds a checkpoint: resumed to the end
    assert not done.get("interrupted") and "already_finished" not in done
    stamp = (out / "student.pt").stat().st_mtime_ns, (out / "student.pt").read_bytes()
    log = (out / "log.txt").read_text()

    fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self, resume=False: pytest.fail("a finished run was trained again"))
    again = distill(_cfg(tmp_path, threads=2, progress=True), out, resume="auto")  # threads/progress: same run
    assert again == {**json.loads((out / "summary.json").read_text()), "already_finished": True}
    assert again["steps"] == done["steps"] and again["best"] == done["best"]
    assert ((out / "student.pt").stat().st_mtime_ns, (out / "student.pt").read_bytes()) == stamp
    assert (out / "log.txt").read_text() == log
    monkeypatch.setattr(Trainer, "fit", fit)

    # a finished run with another config (one more stage-2 epoch) is continued from its checkpoint, as --resume does
    longer = distill(_cfg(tmp_path, stage2={"epochs": 3, "batch_size": 4, "optim": {"lr": 0.003, "warmup_steps": 2}}),
                     out, resume="auto")
    assert "already_finished" not in longer and longer["steps"] > done["steps"]
    assert "config differs in stage2.epochs" in (out / "log.txt").read_text()
    # a later call with yet another config, cut short: its config.yaml is newer than the old summary.json, so that
    # summary is not taken for this config's result; the run continues instead
    four = _cfg(tmp_path, stage2={"epochs": 4, "batch_size": 4, "optim": {"lr": 0.003, "warmup_steps": 2}})
    assert distill(four, out, resume="auto", stop_after_steps=longer["steps"] + 1)["interrupted"]
    rest = distill(four, out, resume="auto")
    assert "already_finished" not in rest and rest["steps"] > longer["steps"]
    with pytest.raises(UserError, match="resume must be True, False or 'auto'"):
        distill(_cfg(tmp_path), out, resume="yes")


def test_resume_auto_without_a_checkpoint_is_a_fresh_run_and_refused_where_a_run_is(tmp_path):
    out = tmp_path / "nockpt"
    out.mkdir()
    (out / "metrics.csv").write_text("epoch\n")  # a run killed before its first checkpoint
    with pytest.raises(UserError, match="holds a run"):
        distill(_cfg(tmp_path), out, resume="auto")


# --- a method is one file: a toy one registered here runs through the distill job --------------------------


@pytest.fixture()
def toy_method(monkeypatch):
    """Registers method 'toy' (a config model + a build with one phase) for this test only."""
    from typing import Literal

    from samdistill.config import DistillConfig, OptimConfig, Strict
    from samdistill.data.cache import CachedSet
    from samdistill.methods import METHODS, Built
    from samdistill.train.trainer import Phase

    class ToySection(Strict):
        student: str = "test_efficientvit_b0"
        epochs: int = 2

    class ToyConfig(DistillConfig):
        method: Literal["toy"] = "toy"
        toy: ToySection = ToySection()

    class ToyStep:
        """The student's encoder regresses the cached teacher embedding."""

        def __init__(self, student):
            self.student = student

        def parameters(self):
            return self.student.train_only("image_encoder")

        def train(self):
            self.student.train()

        def eval(self):
            self.student.eval()

        def step(self, batch):
            mse = torch.nn.functional.mse_loss(self.student.encode(batch["image"]), batch["embedding"])
            return {"loss": mse, "mse": mse}

        @torch.no_grad()
        def validate(self, loader):
            errs = [torch.nn.functional.mse_loss(self.student.encode(b["image"]), b["embedding"]).item() for b in loader]
            return {"dice": -sum(errs) / len(errs)}  # the trainer keeps the best "dice": here, lowest MSE

    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))  # registered for this test only

    @METHODS.register("toy", config=ToyConfig, cli_keys={"student": "toy.student"})
    def build(cfg: ToyConfig, teacher, cache, train_keys, val_keys) -> Built:
        """Toy: embedding regression, one phase."""
        student = load_model(cfg.toy.student, teacher=teacher)
        phase = Phase("toy", ToyStep(student), CachedSet(cache, list(train_keys.values())),
                      CachedSet(cache, list(val_keys.values())), cfg.toy.epochs, 4, OptimConfig(lr=0.01, warmup_steps=0))
        return Built(model=student, student=student, phases=[phase], student_name=cfg.toy.student,
                     extra={"toy": True})

    return ToyConfig


def test_a_method_registered_in_a_test_runs_through_distill(tmp_path, toy_method, capsys):
    from samdistill import api

    cfg = load_config(None, {"method": "toy", "teacher": "test_sam", "data": {"path": DATA}, "progress": False,
                             "cache": {"dir": str(tmp_path / "cache")}, "overlays": 1, "threads": 1})
    assert type(cfg) is toy_method and cfg.toy.epochs == 2
    s = api.distill(cfg, tmp_path / "toy")
    assert s["method"] == "toy" and s["student"] == "test_efficientvit_b0" and s["toy"] is True
    assert s["best"]["phase"] == "toy" and s["steps"] > 0
    assert load_model(tmp_path / "toy" / "student.pt").family == "test_efficientvit_b0"
    saved = (tmp_path / "toy" / "config.yaml").read_text()
    assert "toy:" in saved and "stage1:" not in saved and "knowsam:" not in saved
    # its recipe, and the CLI verb, which asks the method which key --student sets
    (tmp_path / "toy.yaml").write_text("method: toy\ntoy: {epochs: 1}\n")
    assert main(["distill", "--method", "toy", "--recipe", str(tmp_path / "toy.yaml"), "--teacher", "test_sam",
                 "--student", "test_resnet18", "--data", DATA, "--out", str(tmp_path / "cli"),
                 f"cache.dir={tmp_path / 'cache'}", "progress=false", "overlays=0", "threads=1"]) == 0
    assert json.loads((tmp_path / "cli" / "summary.json").read_text())["student"] == "test_resnet18"
    assert "best val Dice" in capsys.readouterr().out
    assert main(["list"]) == 0  # samdistill list shows every registered method with its build's first doc line
    listed = capsys.readouterr().out.split("methods (samdistill distill --method NAME):\n")[1].splitlines()
    assert [line.split()[0] for line in listed] == ["kdsam", "knowsam", "meanteacher", "nas", "toy"]
    assert "Toy: embedding regression, one phase." in listed[-1]


def test_cli_options_a_method_does_not_take_are_one_line_errors(tmp_path, capsys):
    assert main(["distill", "--data", DATA, "--out", str(tmp_path / "x"), "--labeled", "0.5"]) == 2
    assert capsys.readouterr().err.strip() == "error: --labeled is not an option of method kdsam (it is for: knowsam, meanteacher)"
    assert main(["distill", "--method", "nas", "--student", "x", "--data", DATA, "--out", str(tmp_path / "x")]) == 2
    assert "--student is not an option of method nas (it is for: kdsam, knowsam" in capsys.readouterr().err
    assert main(["distill", "--data", DATA, "--out", str(tmp_path / "x"), "knowsam.labeled=0.5"]) == 2
    assert "config key 'knowsam.labeled' belongs to method knowsam, not kdsam" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_run_from_before_a_neutral_key_was_added_is_still_that_run(tmp_path):
    """precision and stage2.feature_kd came after runs had been trained; a config.yaml without them reads as their
    neutral defaults (auto, 0). A key without that mark (student.detail, whose default changed what trains) still
    counts as a difference."""
    import os

    import yaml

    from samdistill.config import added_neutral_keys
    from samdistill.distill import finished_run

    out = tmp_path / "old"
    cfg = _cfg(tmp_path, data={"path": DATA, "zoom": None})  # runs from before data.zoom trained on whole images
    distill(cfg, out)
    assert {"precision": "auto", "stage2.feature_kd": 0.0, "data.zoom": None}.items() <= added_neutral_keys(cfg).items()
    saved = out / "config.yaml"
    stamp = saved.stat().st_mtime_ns

    def write(tree):
        saved.write_text(yaml.safe_dump(tree))
        os.utime(saved, ns=(stamp, stamp))  # as old as it was: the summary stays the newer file

    tree = yaml.safe_load(saved.read_text())
    del tree["precision"], tree["stage2"]["feature_kd"], tree["data"]["zoom"]
    write(tree)
    assert finished_run(out, cfg)[0] is not None
    assert finished_run(out, cfg.model_copy(update={"precision": "bf16"})) == (None, ["precision"])
    # the recipe's default now distils on crops (data.zoom 1.5): such a whole-image run is not a run of it
    crops = cfg.model_copy(update={"data": cfg.data.model_copy(update={"zoom": 1.5})})
    assert finished_run(out, crops) == (None, ["data.zoom"])
    del tree["student"]["detail"]
    write(tree)
    assert finished_run(out, cfg) == (None, ["student.detail"])


def test_data_zoom_trains_on_the_crops_a_zoomed_predictor_sees(tmp_path):
    """``data.zoom``: every sample is the crop of zoom x its mask's tight box (empty masks stay whole), so the cache
    holds the teacher's embeddings of those crops and the run trains and validates on them."""
    import numpy as np
    from pydantic import ValidationError

    from samdistill.data.cache import open_run_dataset
    from samdistill.data.prompts import tight_box, zoom_window

    cfg = _cfg(tmp_path, data={"path": DATA, "zoom": 1.5}, stage1={"epochs": 1, "batch_size": 4},
               stage2={"epochs": 1, "batch_size": 4})
    ds = open_run_dataset(cfg)
    whole = open_run_dataset(_cfg(tmp_path, data={"path": DATA, "zoom": None}))
    seen = 0
    for sid in ds.ids("train"):
        a, b = ds.load(sid), whole.load(sid)
        if not b.mask.any():
            assert a.image.shape == b.image.shape
            continue
        x0, y0, x1, y1 = zoom_window(tight_box(b.mask), b.mask.shape, 1.5)
        assert (a.image == b.image[y0:y1, x0:x1]).all() and (a.mask == b.mask[y0:y1, x0:x1]).all()
        assert a.mask.sum() == b.mask.sum()  # the crop holds the whole object
        seen += a.image.shape[0] < b.image.shape[0] or a.image.shape[1] < b.image.shape[1]
    assert seen > 0  # some crops are smaller than their image
    s = distill(cfg, tmp_path / "zoomed")
    plain = distill(_cfg(tmp_path, data={"path": DATA, "zoom": None}, stage1={"epochs": 1, "batch_size": 4},
                         stage2={"epochs": 1, "batch_size": 4}), tmp_path / "plain")
    assert s["cache"]["misses"] > 0 and plain["cache"]["misses"] > 0  # crops and whole images: separate entries
    assert np.isfinite(s["best"]["dice"])
    from samdistill.models.zoo import load_model

    # student.pt and the best checkpoint (what a stopped run leaves) both record the zoom the Predictor takes
    for run, want in (("zoomed", 1.5), ("plain", None)):
        for f in ("student.pt", "checkpoints/best.pt"):
            assert load_model(str(tmp_path / run / f)).provenance.get("zoom") == want, (run, f)
    with pytest.raises((UserError, ValidationError), match="zoom"):
        load_config("kdsam", {"data": {"path": DATA, "zoom": 0.5}})
    # a prompt-free method is never given a box, and its unlabeled images' masks must stay unseen
    for method in ("knowsam", "meanteacher"):
        with pytest.raises((UserError, ValidationError), match="prompt-free"):
            load_config(method, {"data": {"path": DATA, "zoom": 1.5}})


def test_min_steps_gives_a_small_training_set_more_whole_epochs(tmp_path):
    """``stageN.min_steps``: a stage runs at least that many batches, in whole epochs counted at one process;
    a large enough set keeps its ``epochs``; absent, ``epochs`` as given."""
    from samdistill.train.trainer import Phase

    def epochs(n_train, epochs, min_steps=None):
        return Phase("s", None, list(range(n_train)), None, epochs, 8, None, min_steps=min_steps).floored_epochs()
    assert epochs(700, 20, min_steps=1760) == 20  # 88 batches/epoch
    assert epochs(225, 20, min_steps=1760) == 61  # 29 batches/epoch
    assert epochs(225, 10, min_steps=880) == 31
    assert epochs(225, 10) == 10
    assert epochs(225, 0, min_steps=880) == 0  # a stage left off stays off
    # 16 synthetic images split 12/4 (train/val) or so: batch 4 gives ceil(n/4) batches; min_steps asks for more
    s = distill(_cfg(tmp_path, stage1={"epochs": 1, "batch_size": 4, "min_steps": 7},
                     stage2={"epochs": 1, "batch_size": 4, "min_steps": 1}), tmp_path / "run")
    n = s["n_train_prompted"]
    per_epoch = -(-n // 4)
    want1 = max(1, -(-7 // per_epoch))
    assert s["epochs"] == {"stage1": want1, "stage2": 1}
    assert s["steps"] == per_epoch * (want1 + 1)
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]
    assert sum(r.startswith("stage1,") for r in rows) == want1 > 1
