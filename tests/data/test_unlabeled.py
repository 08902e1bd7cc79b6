"""A folder of images without masks as the unlabeled images of a semi-supervised run (``--unlabeled``)."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from samdistill.cli import main
from samdistill.config import load_config
from samdistill.data.datasets import open_dataset, open_unlabeled, shared_files
from samdistill.data.semi import semi_train_set
from samdistill.data.synthetic import phantom, write_folder
from samdistill.distill import distill
from samdistill.errors import UserError


def _unlabeled_folder(root, n, seed=7, size=64):
    """``n`` phantom images, without masks, half of them one folder down, plus a note and a hidden file."""
    (root / "day2").mkdir(parents=True)
    for i in range(n):
        img, _ = phantom(seed, i, size)
        Image.fromarray(img).save(root / ("day2" if i % 2 else ".") / f"scan_{i:03d}.png")
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"not read")
    return root


def test_open_unlabeled_lists_every_image_below_the_folder_with_an_empty_mask(tmp_path):
    _unlabeled_folder(tmp_path / "u", 5)
    (tmp_path / "u" / "scan_000.jpg").write_bytes((tmp_path / "u" / "scan_000.png").read_bytes())  # same stem
    ds = open_unlabeled(tmp_path / "u")
    assert ds.ids("train") == ["day2/scan_001.png", "day2/scan_003.png", "scan_000.jpg", "scan_000.png", "scan_002.png",
                               "scan_004.png"]
    assert ds.ids("val") == [] and ds.ids("test") == []
    assert any(p.endswith("notes.txt") for p in ds.ignored) and not any(".hidden" in p for p in ds.ignored)
    s = ds.load("day2/scan_003.png")
    assert s.image.ndim == 3 and s.mask.shape == s.image.shape[:2] and s.mask.dtype == bool and not s.mask.any()


@pytest.mark.parametrize("make, says", [
    (lambda p: p, "no such folder"),
    (lambda p: (p.parent.mkdir(parents=True, exist_ok=True), p.write_bytes(b"x"), p)[-1], "got a file"),
    (lambda p: (p.mkdir(parents=True), p)[-1], "no images in"),
    (lambda p: write_folder(p, 2, size=32), "holds a labeled dataset (folder layout)"),
])
def test_open_unlabeled_refuses_what_is_not_a_folder_of_images(tmp_path, make, says):
    with pytest.raises(UserError) as err:
        open_unlabeled(make(tmp_path / "x" / "unl"))
    assert says in str(err.value)


def test_shared_files_finds_images_and_masks_of_the_other_and_copies_but_not_equal_sizes(tmp_path):
    lab = open_dataset(write_folder(tmp_path / "lab", 6, seed=1, size=48))
    unl_root = _unlabeled_folder(tmp_path / "u", 3, seed=9, size=48)
    assert shared_files(open_unlabeled(unl_root), lab) == []
    src = tmp_path / "lab" / "images" / "case_0004.png"
    shutil.copy(src, unl_root / "copy.png")
    other = unl_root / "same_size.png"  # as many bytes as the copy, other bytes: not a match
    other.write_bytes(bytes(255 - b for b in src.read_bytes()))
    assert shared_files(open_unlabeled(unl_root), lab) == [(unl_root / "copy.png", src, "image", "case_0004")]
    masks = open_unlabeled(tmp_path / "lab" / "masks")  # the masks folder given as unlabeled images
    assert len(shared_files(masks, lab)) == 6 and shared_files(masks, lab)[0][2:] == ("mask", "case_0000")


def test_semi_train_set_adds_the_folders_images_as_unlabeled_only():
    train = {(f"t{i}", False): f"k{i}" for i in range(6)}
    folder = {(f"u{i}", False): f"uk{i}" for i in range(3)}
    plain, lab_plain, n_plain = semi_train_set(list, train, 2, seed=0)
    s, lab, n = semi_train_set(list, train, 2, seed=0, unlabeled_keys=folder)
    assert lab == lab_plain and n == n_plain + 3 == 7  # the folder changes neither the pick nor the train entries
    assert list(s.base[: len(plain.base)]) == list(plain.base) and s.flags[: len(plain.flags)] == plain.flags
    assert sorted(s.base[i] for i in s.unlabeled_indices) == sorted([f"k{i}" for i in range(6) if f"t{i}" not in lab]
                                                                    + ["uk0", "uk1", "uk2"])
    sup, _, n_sup = semi_train_set(list, train, 2, seed=0, unlabeled=False, unlabeled_keys=folder)
    assert n_sup == 0 and sorted(sup.base) == sorted(train[(t, False)] for t in lab)


def _cli(tmp_path, *args):
    return main(["distill", "--method", "meanteacher", "--teacher", "test_sam", "--student", "test_unet_student",
                 "--out", str(tmp_path / "run"), f"cache.dir={tmp_path / 'cache'}", "meanteacher.epochs=1",
                 "meanteacher.batch_size=4", "meanteacher.labeled_bs=2", "progress=false", "overlays=0", *args])


def test_cli_unlabeled_folder_trains_on_every_mask_and_the_folders_images(tmp_path, capsys):
    lab = write_folder(tmp_path / "lab", 10, seed=1, size=64)
    unl = _unlabeled_folder(tmp_path / "unl", 6)
    assert _cli(tmp_path, "--data", str(lab), "--unlabeled", str(unl)) == 0
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    n_train = s["n_train_images"]
    assert s["n_labeled"] == n_train and s["n_unlabeled"] == 6 and s["n_unlabeled_folder"] == 6  # --labeled: 1
    assert s["cache"]["misses"] == n_train + s["n_val"] + 6  # the folder's images went through the teacher too
    assert f"{n_train} images labeled, 6 unlabeled (6 from {unl})" in capsys.readouterr().out
    assert f"unlabeled: {unl}" in (tmp_path / "run" / "config.yaml").read_text()


def test_cli_unlabeled_refuses_images_of_data_and_methods_without_unlabeled_images(tmp_path, capsys):
    lab = write_folder(tmp_path / "lab", 10, seed=1, size=64)
    unl = _unlabeled_folder(tmp_path / "unl", 2)
    test_id = open_dataset(lab).ids("test")[0]
    shutil.copy(lab / "images" / f"{test_id}.png", unl / "leak.png")
    assert _cli(tmp_path, "--data", str(lab), "--unlabeled", str(unl)) == 2
    err = capsys.readouterr().err
    assert "1 file(s) of --unlabeled" in err and "leak.png" in err and f"(image of {test_id}, test split)" in err
    assert not (tmp_path / "run" / "student.pt").exists()
    assert main(["distill", "--data", str(lab), "--unlabeled", str(unl), "--out", str(tmp_path / "kd")]) == 2
    assert "--unlabeled is not an option of method kdsam (it is for: knowsam, meanteacher)" in capsys.readouterr().err
    with pytest.raises(UserError, match="data.unlabeled .* is for knowsam, meanteacher; method kdsam"):
        distill(load_config("kdsam", {"data": {"path": str(lab), "unlabeled": str(unl)}}), tmp_path / "kd2")
    from samdistill.search import nas_search

    with pytest.raises(UserError, match="is for knowsam, meanteacher; the architecture search trains on masks"):
        nas_search(load_config("nas", {"data": {"path": str(lab), "unlabeled": str(unl)}}), tmp_path / "nas")
    assert not (tmp_path / "kd2").exists() and not (tmp_path / "nas").exists()


def test_cli_unlabeled_refuses_an_empty_value_an_out_inside_it_and_the_supervised_baseline(tmp_path, capsys):
    lab = write_folder(tmp_path / "lab", 10, seed=1, size=64)
    unl = _unlabeled_folder(tmp_path / "unl", 2)
    assert _cli(tmp_path, "--data", str(lab), "--unlabeled", "") == 2
    assert "--unlabeled is empty" in capsys.readouterr().err
    inside = ["distill", "--method", "meanteacher", "--data", str(lab), "--unlabeled", str(unl), "--out", str(unl / "run")]
    assert main(inside) == 2
    assert "lies inside --unlabeled" in capsys.readouterr().err and not (unl / "run").exists()
    cfg = load_config("knowsam", {"teacher": "test_sam", "progress": False, "cache": {"dir": str(tmp_path / "cache")},
                                  "data": {"path": str(lab), "unlabeled": str(unl)},
                                  "knowsam": {"student": "test_knowsam_student", "unlabeled": False}})
    with pytest.raises(UserError, match="knowsam.unlabeled=false trains on the labeled images alone"):
        distill(cfg, tmp_path / "sup")
    assert not (tmp_path / "sup").exists()


def test_resume_refuses_other_images_and_a_failed_resume_leaves_the_run_as_it_was(tmp_path, capsys):
    lab = write_folder(tmp_path / "lab", 10, seed=1, size=64)
    unl = _unlabeled_folder(tmp_path / "unl", 4)
    run = tmp_path / "run"
    assert _cli(tmp_path, "--data", str(lab), "--unlabeled", str(unl)) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "log.txt"}
    assert _cli(tmp_path, "--data", str(lab), "--resume") == 2  # --unlabeled forgotten
    err = capsys.readouterr().err
    assert f"data.unlabeled '{unl}' (the run) vs None (now)" in err and "meanteacher.labeled 1.0 (the run) vs 0.1" in err
    corrupt = _unlabeled_folder(tmp_path / "corrupt", 2)
    (corrupt / "scan_000.png").write_bytes((corrupt / "scan_000.png").read_bytes()[:80])  # a truncated PNG
    assert _cli(tmp_path, "--data", str(lab), "--unlabeled", str(corrupt), "--resume") == 2
    assert f"vs '{corrupt}' (now)" in capsys.readouterr().err
    good = (unl / "scan_002.png").read_bytes()
    (unl / "scan_002.png").write_bytes(good[:80])  # the run's own folder, damaged since: found while caching
    assert _cli(tmp_path, "--data", str(lab), "--unlabeled", str(unl), "--resume", "meanteacher.epochs=2") == 2
    assert "truncated or corrupt" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "log.txt"} == before
    (unl / "scan_002.png").write_bytes(good)
    assert _cli(tmp_path, "--data", str(lab), "--unlabeled", str(unl), "--resume", "meanteacher.epochs=2") == 0
    assert "epochs: 2" in (run / "config.yaml").read_text()  # a schedule key may change
    fresh = tmp_path / "fresh"
    assert main(["distill", "--method", "meanteacher", "--teacher", "test_sam", "--student", "test_unet_student",
                 "--data", str(lab), "--unlabeled", str(corrupt), "--out", str(fresh), f"cache.dir={tmp_path / 'c2'}",
                 "progress=false"]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err and not fresh.exists()
    ok = _cli(tmp_path, "--data", str(lab), "--unlabeled", str(corrupt), "--on-error", "skip", "--out",
              str(tmp_path / "skipped"))
    assert ok == 0
    s = json.loads((tmp_path / "skipped" / "summary.json").read_text())
    assert s["n_unlabeled_folder"] == 1 and s["cache"]["skipped"] == 1
    [(file, reason)] = s["cache"]["skipped_files"]  # which file and why, not only how many
    assert file.endswith("scan_000.png") and "truncated or corrupt" in reason
