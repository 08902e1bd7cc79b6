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
