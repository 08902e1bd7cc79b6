"""Splits and the bad-input policy (clear error naming the file, or counted skip)."""

import json

import numpy as np
import pytest
from PIL import Image

from samdistill.data.datasets import open_dataset, seeded_split
from samdistill.data.images import read_image, read_mask
from samdistill.errors import DataError, UserError


def test_split_json_is_honoured(synth_folder):
    split = {"train": ["case_0000", "case_0001"], "val": ["case_0002"], "test": ["case_0003", "case_0004"]}
    (synth_folder / "split.json").write_text(json.dumps(split))
    ds = open_dataset(synth_folder)
    assert ds.ids("test") == ["case_0003", "case_0004"]
    assert ds.ids("test", limit=1) == ["case_0003"]
    assert ds.split_source.endswith("split.json")


def test_seeded_split_is_70_10_20_disjoint_and_reproducible():
    ids = [f"x{i:03d}" for i in range(50)]
    a, b, c = seeded_split(ids, 0), seeded_split(list(reversed(ids)), 0), seeded_split(ids, 1)
    assert a == b and a != c
    assert [len(a[k]) for k in ("train", "val", "test")] == [35, 5, 10]
    assert set(a["train"]) | set(a["val"]) | set(a["test"]) == set(ids)
    assert not set(a["train"]) & set(a["test"])


def test_seeded_split_is_not_written_into_the_dataset(synth_folder):
    ds = open_dataset(synth_folder)
    assert ds.split_source.startswith("seeded")
    assert not (synth_folder / "split.json").exists()


def test_split_naming_a_missing_image_is_an_error_or_counted(synth_folder):
    (synth_folder / "split.json").write_text(json.dumps({"train": [], "val": [], "test": ["case_0000", "ghost"]}))
    with pytest.raises(DataError, match="ghost"):
        open_dataset(synth_folder)
    ds = open_dataset(synth_folder, on_error="skip")
    assert ds.ids("test") == ["case_0000"] and len(ds.skipped) == 1
    with pytest.raises(UserError, match="unknown split"):
        ds.ids("training")


def _break(folder, kind):
    img, mask = folder / "images" / "case_0005.png", folder / "masks" / "case_0005.png"
    if kind == "unreadable":
        img.write_bytes(b"\x89PNG\r\n garbage")
        return img
    if kind == "zero_bytes":
        img.write_bytes(b"")
        return img
    if kind == "size_mismatch":
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(mask)
        return mask
    if kind == "non_binary":
        Image.fromarray(np.arange(100, dtype=np.uint8).reshape(10, 10)).resize(Image.open(img).size).save(mask)
        return mask
    if kind == "image_without_mask":
        mask.unlink()
        return img
    if kind == "mask_without_image":
        img.unlink()
        return mask
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind,message",
    [
        ("unreadable", "cannot read image"),
        ("zero_bytes", "empty file"),
        ("size_mismatch", "but its image"),
        ("non_binary", "not binary"),
        ("image_without_mask", "image without mask"),
        ("mask_without_image", "mask without image"),
    ],
)
def test_bad_input_names_the_file_or_is_counted(synth_folder, kind, message):
    bad = _break(synth_folder, kind)
    with pytest.raises(DataError, match=message) as exc:
        ds = open_dataset(synth_folder)
        list(ds.iter_samples(ds.ids("all")))
    assert str(bad) in str(exc.value)
    ds = open_dataset(synth_folder, on_error="skip")
    samples = list(ds.iter_samples(ds.ids("all")))
    assert len(ds.skipped) == 1 and ds.skipped[0][0] == str(bad)
    assert len(samples) == 19


def test_mask_threshold_declares_noisy_masks(synth_folder):
    mask_path = synth_folder / "masks" / "case_0001.png"
    m = np.asarray(Image.open(mask_path)) > 0
    Image.fromarray(np.where(m, 240, 12).astype(np.uint8)).save(mask_path)
    with pytest.raises(DataError, match="mask-threshold"):
        open_dataset(synth_folder).load("case_0001")
    assert np.array_equal(open_dataset(synth_folder, mask_threshold=128).load("case_0001").mask, m)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "LA"])
def test_images_of_any_mode_read_as_rgb_uint8(tmp_path, mode):
    arr = (np.arange(30 * 20) % 256).reshape(30, 20).astype(np.uint8)
    if mode == "I;16":
        im = Image.fromarray((arr.astype(np.uint16) * 200))
    else:
        im = Image.fromarray(arr).convert(mode)
    im.save(tmp_path / "x.png")
    out = read_image(tmp_path / "x.png")
    assert out.shape == (30, 20, 3) and out.dtype == np.uint8
    assert out.max() > 200  # 16-bit images are rescaled, not clipped to black/white


def test_mask_with_values_0_1_is_binary(tmp_path):
    Image.fromarray(np.eye(5, dtype=np.uint8)).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png").sum() == 5


def test_unicode_and_spaces_in_names(tmp_path):
    from samdistill.data.synthetic import phantom

    img, m = phantom(0, 0, 64)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(img).save(tmp_path / "images" / "Fall 1 – Größe.png")
    Image.fromarray((m * 255).astype(np.uint8)).save(tmp_path / "masks" / "Fall 1 – Größe.png")
    ds = open_dataset(tmp_path)
    assert np.array_equal(ds.load("Fall 1 – Größe").mask, m)


def test_synthetic_spec_and_bad_options():
    ds = open_dataset("synthetic:n=10,size=64,seed=2")
    assert len(ds) == 10
    a, b = ds.load("synth_0003"), open_dataset("synthetic:n=10,size=64,seed=2").load("synth_0003")
    assert np.array_equal(a.image, b.image) and a.mask.any()
    with pytest.raises(UserError, match="bad synthetic option"):
        open_dataset("synthetic:count=3")
    with pytest.raises(UserError, match="data not found"):
        open_dataset("no/such/folder")


# ------------------------------------------------------------------ split.json that leaks or repeats
def _write_split(folder, **parts):
    split = {"train": [], "val": [], "test": [], **parts}
    (folder / "split.json").write_text(json.dumps(split))
    return folder / "split.json"


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_overlapping_split_is_refused_naming_the_file_the_lists_and_the_ids(synth_folder, on_error):
    # Leakage is never skipped: a test image seen in training inflates every score silently.
    path = _write_split(synth_folder, train=[f"case_{i:04d}" for i in range(8)], val=["case_0008", "case_0001"],
                        test=["case_0002", "case_0003", "case_0010"])
    with pytest.raises(DataError) as exc:
        open_dataset(synth_folder, on_error=on_error)
    msg = str(exc.value)
    assert str(path) in msg and "\n" not in msg
    assert "'train' and 'val' share 1 id (case_0001)" in msg
    assert "'train' and 'test' share 2 ids (case_0002, case_0003)" in msg
    assert "'val' and 'test'" not in msg


def test_overlap_message_names_a_few_ids_and_how_many(synth_folder):
    ids = [f"case_{i:04d}" for i in range(12)]
    _write_split(synth_folder, train=ids, test=ids[2:])
    with pytest.raises(DataError, match=r"'train' and 'test' share 10 ids \(case_0002, case_0003, case_0004, "
                                        r"case_0005, case_0006, \.\.\.\)"):
        open_dataset(synth_folder)


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_an_id_twice_in_one_list_is_an_error(synth_folder, on_error):
    # Decision: an error (not a counted warning) under either --on-error: the image would be scored twice.
    _write_split(synth_folder, train=["case_0000"], test=["case_0001", "case_0002", "case_0001"])
    with pytest.raises(DataError, match=r"split\.json: 'test' lists 1 id \(case_0001\) more than once"):
        open_dataset(synth_folder, on_error=on_error)


def test_ids_the_dataset_lacks_are_one_error_naming_the_file_or_counted_one_by_one(synth_folder):
    # Decision: an error by default (one line: file, list, count, first ids); with --on-error skip each
    # missing id is left out and counted in `skipped` (so the report says so).
    path = _write_split(synth_folder, train=["case_0000"], test=["case_0001", "ghost", "phantom"])
    with pytest.raises(DataError) as exc:
        open_dataset(synth_folder)
    assert f"split file {path}: 'test' lists 2 ids (ghost, phantom)" in str(exc.value)
    assert "--on-error skip" in str(exc.value)
    ds = open_dataset(synth_folder, on_error="skip")
    assert ds.ids("test") == ["case_0001"]
    assert [sid for sid, _ in ds.skipped] == ["ghost", "phantom"] and str(path) in ds.skipped[0][1]


# ------------------------------------------------------------------ label-map masks (--labels)
def _label_map(tmp_path, values=(0, 1, 2), name="m.png", mode=None):
    """A 20x30 map: class 1 in rows 2..7 (6x10 = 60 px), class 2 in rows 10..17, cols 5..19 (8x15 = 120 px)."""
    arr = np.zeros((20, 30), np.uint8)
    if 1 in values:
        arr[2:8, 0:10] = 1
    if 2 in values:
        arr[10:18, 5:20] = 2
    if 3 in values:
        arr[0:2, 25:30] = 3
    im = Image.fromarray(arr)
    if mode == "P":
        im = im.convert("P")
        im.putpalette([0, 0, 0, 200, 30, 30, 30, 200, 30] + [0] * (256 * 3 - 9))
    im.save(tmp_path / name)
    return tmp_path / name, arr


def test_label_map_is_named_with_its_labels_and_the_labels_option(tmp_path):
    path, _ = _label_map(tmp_path)
    with pytest.raises(DataError) as exc:
        read_mask(path)
    msg = str(exc.value)
    assert f"mask {path} is a multi-class label map (labels 1, 2)" in msg
    assert "--labels 1,2" in msg and "--labels 2" in msg and "data.labels=[1,2]" in msg
    assert "--mask-threshold" not in msg  # the old advice, which made every image empty


def test_label_map_with_one_label_and_a_palette_label_map(tmp_path):
    path, _ = _label_map(tmp_path, values=(0, 2))
    with pytest.raises(DataError, match=r"is a label map \(label 2\).*--labels 2"):
        read_mask(path)
    # palette PNG: the values are the palette indices, not the grey level of the palette colours
    path, arr = _label_map(tmp_path, name="p.png", mode="P")
    assert Image.open(path).mode == "P"
    with pytest.raises(DataError, match=r"multi-class label map \(labels 1, 2\)"):
        read_mask(path)
    assert np.array_equal(read_mask(path, labels=[2]), arr == 2)


def test_label_map_declared_noisy_is_not_silently_empty(tmp_path):
    path, _ = _label_map(tmp_path)
    with pytest.raises(DataError, match=r"--mask-threshold 128 leaves it empty; choose the foreground with --labels 1,2"):
        read_mask(path, "noisy", 128)
    assert read_mask(path, "noisy", 1).sum() == 180  # a threshold that does keep pixels is the user's choice


def test_labels_choose_the_foreground_and_other_values_are_background(tmp_path):
    path, arr = _label_map(tmp_path, values=(0, 1, 2, 3))
    assert read_mask(path, labels=[1, 2]).sum() == 60 + 120
    only2 = read_mask(path, labels=[2])
    assert only2.sum() == 120 and np.array_equal(only2, arr == 2)
    assert read_mask(path, labels=[3]).sum() == 10  # 1 and 2 are background then
    assert read_mask(path, labels=[7]).sum() == 0  # a label absent from this image: empty, not an error


def test_labels_on_a_dataset_and_their_validation(tmp_path):
    from samdistill.data.datasets import check_labels, parse_labels
    from samdistill.data.synthetic import phantom

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    img, _ = phantom(0, 0, 64)
    Image.fromarray(img[:20, :30]).save(tmp_path / "images" / "a.png")
    _, arr = _label_map(tmp_path / "masks", name="a.png")
    with pytest.raises(DataError, match="--labels 1,2"):
        open_dataset(tmp_path).load("a")
    ds = open_dataset(tmp_path, labels=[2])
    assert ds.labels == (2,) and np.array_equal(ds.load("a").mask, arr == 2)
    assert ds.describe()["labels"] == [2]
    with pytest.raises(UserError, match="not both"):
        open_dataset(tmp_path, labels=[1], mask_threshold=128)
    with pytest.raises(UserError, match="0 is background"):
        check_labels([0, 1])
    assert check_labels([2, 1, 2]) == (1, 2)
    assert parse_labels("1, 2") == [1, 2]
    with pytest.raises(UserError, match="--labels must be mask values"):
        parse_labels("1,two")


@pytest.mark.parametrize("verb", ["eval", "distill"])
def test_cli_refuses_an_overlapping_split_with_one_line(tmp_path, synth_folder, capsys, verb):
    path = _write_split(synth_folder, train=["case_0000", "case_0001", "case_0002"], test=["case_0002", "case_0003"])
    from samdistill.cli import main

    argv = {
        "eval": ["eval", "--model", "test_sam", "--data", str(synth_folder), "--out", str(tmp_path / "ev"),
                 "--no-progress"],
        "distill": ["distill", "--teacher", "test_sam", "--student", "test_resnet18", "--data", str(synth_folder),
                    "--out", str(tmp_path / "run"), f"cache.dir={tmp_path / 'cache'}", "progress=false"],
    }[verb]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: split file {path}: 'train' and 'test' share 1 id (case_0002)")
    assert "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "ev" / "summary.json").exists() and not (tmp_path / "run" / "student.pt").exists()


def test_cache_with_on_error_skip_names_each_skipped_file(synth_folder, tmp_path, capsys):
    from samdistill.cli import main

    bad = _break(synth_folder, "unreadable")
    assert main(["cache", "--teacher", "test_sam", "--data", str(synth_folder), "--split", "all", "--cache-dir",
                 str(tmp_path / "c"), "--on-error", "skip", "--no-progress"]) == 0
    cap = capsys.readouterr()
    out = cap.out
    assert "1 bad files skipped" in out and f"  skipped {bad}: " in out and "cannot read image" in out
    assert "it/s" not in cap.err and "img/s" not in cap.err  # --no-progress: no bar in the logs
