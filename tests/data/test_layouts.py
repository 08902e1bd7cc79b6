"""Each public layout, built as a tiny fake folder in tmp_path."""

import json

import numpy as np
import pytest
from PIL import Image

from samdistill.data.datasets import open_dataset
from tests.conftest import disk_mask


def _img(path, h=40, w=50, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(abs(hash(path.name)) % 2**32).integers(0, 255, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(arr)
    im = im.convert(mode) if mode != "RGB" else im
    im.save(path)


def _mask(path, m, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray((m * 255).astype(np.uint8))
    (im.convert(mode) if mode != "L" else im).save(path)


def test_folder_layout_with_mixed_extensions(tmp_path):
    m = disk_mask(40, 50, 20, 25, 8)
    _img(tmp_path / "images" / "a.png")
    _img(tmp_path / "images" / "b.bmp")
    _mask(tmp_path / "masks" / "a.png", m)
    _mask(tmp_path / "masks" / "b.tif", m)
    (tmp_path / "images" / "notes.txt").write_text("hello")
    ds = open_dataset(tmp_path)
    assert ds.name == tmp_path.name
    assert sorted(ds.ids("all")) == ["a", "b"]
    assert ds.ignored == [str(tmp_path / "images" / "notes.txt")]
    assert np.array_equal(ds.load("b").mask, m)


def test_kvasir_public_layout_jpeg_masks_are_thresholded(tmp_path):
    root = tmp_path / "Kvasir-SEG"
    _img(root / "images" / "cju0qkwl35piu0993l0dewei2.jpg")
    m = disk_mask(40, 50, 20, 25, 10)
    noisy = (m * 250 + 3).astype(np.uint8)  # JPEG-like: near 0 and near 255
    (root / "masks").mkdir(parents=True)
    Image.fromarray(noisy).convert("RGB").save(root / "masks" / "cju0qkwl35piu0993l0dewei2.jpg", quality=90)
    ds = open_dataset(root, layout="kvasir_seg")
    got = ds.load("cju0qkwl35piu0993l0dewei2").mask
    assert abs(int(got.sum()) - int(m.sum())) <= 0.05 * m.sum()


def test_cvc_clinicdb_tiff_layout(tmp_path):
    root = tmp_path / "CVC-ClinicDB"
    m = disk_mask(40, 50, 15, 15, 6)
    for i in (1, 2):
        _img(root / "Original" / f"{i}.tif")
        _mask(root / "Ground Truth" / f"{i}.tif", m)
    ds = open_dataset(root)
    assert ds.name == "cvc_clinicdb"
    assert ds.ids("all") == ["1", "2"]
    assert np.array_equal(ds.load("2").mask, m)


def test_isic_layout_uses_official_split_folders(tmp_path):
    m = disk_mask(40, 50, 20, 20, 9)
    for folder, gt, ids in (
        ("ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth", ["0000000", "0000001"]),
        ("ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part1_GroundTruth", ["0000002"]),
        ("ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth", ["0000003"]),
    ):
        for i in ids:
            _img(tmp_path / folder / f"ISIC_{i}.jpg")
            _mask(tmp_path / gt / f"ISIC_{i}_segmentation.png", m)
    _mask(tmp_path / "ISIC-2017_Training_Data" / "ISIC_0000000_superpixels.png", m)  # ignored
    ds = open_dataset(tmp_path)
    assert ds.name == "isic2017"
    assert ds.split == {"train": ["ISIC_0000000", "ISIC_0000001"], "val": ["ISIC_0000002"], "test": ["ISIC_0000003"]}
    assert "official" in ds.split_source
    assert np.array_equal(ds.load("ISIC_0000003").mask, m)


def test_ph2_layout(tmp_path):
    m = disk_mask(40, 50, 20, 20, 9)
    base = tmp_path / "PH2 Dataset images" / "IMD002"
    _img(base / "IMD002_Dermoscopic_Image" / "IMD002.bmp")
    _mask(base / "IMD002_lesion" / "IMD002_lesion.bmp", m)
    ds = open_dataset(tmp_path)
    assert ds.name == "ph2" and ds.ids("all") == ["IMD002"]
    assert np.array_equal(ds.load("IMD002").mask, m)


def test_busi_layout_merges_extra_masks_and_normalises_ids(tmp_path):
    root = tmp_path / "Dataset_BUSI_with_GT"
    a = disk_mask(40, 50, 10, 10, 5)
    b = disk_mask(40, 50, 30, 35, 5)
    _img(root / "benign" / "benign (12).png")
    _mask(root / "benign" / "benign (12)_mask.png", a, mode="RGB")  # BUSI masks are RGB
    _mask(root / "benign" / "benign (12)_mask_1.png", b, mode="RGB")
    _img(root / "normal" / "normal (3).png")
    _mask(root / "normal" / "normal (3)_mask.png", np.zeros((40, 50), bool))
    ds = open_dataset(root)
    assert ds.name == "busi"
    assert ds.ids("all") == ["benign_012", "normal_003"]
    assert np.array_equal(ds.load("benign_012").mask, a | b)
    assert not ds.load("normal_003").mask.any()
    # a split made for the normalised copy applies to the public layout
    (root / "split.json").write_text(json.dumps({"train": ["normal_003"], "val": [], "test": ["benign_012"]}))
    assert open_dataset(root).ids("test") == ["benign_012"]


def test_hc18_outlines_are_filled_even_when_cut_by_the_border(tmp_path):
    root = tmp_path / "training_set"
    full = disk_mask(60, 80, 30, 40, 20)
    outline = full & ~disk_mask(60, 80, 30, 40, 18.5)
    cut = disk_mask(60, 80, 5, 40, 20)  # centre near the top: the ellipse leaves the image
    cut_outline = cut & ~disk_mask(60, 80, 5, 40, 18.5)
    _img(root / "000_HC.png", 60, 80, mode="L")
    _mask(root / "000_HC_Annotation.png", outline)
    _img(root / "010_2HC.png", 60, 80, mode="L")
    _mask(root / "010_2HC_Annotation.png", cut_outline)
    ds = open_dataset(root)
    assert ds.name == "hc18" and ds.ids("all") == ["000_HC", "010_2HC"]
    filled = ds.load("000_HC").mask
    assert (filled == full).mean() > 0.99
    hull = ds.load("010_2HC").mask
    assert hull.sum() > 0.9 * cut.sum() and (hull == cut).mean() > 0.97


def test_layout_named_but_wrong_is_an_error(tmp_path):
    from samdistill.errors import UserError

    (tmp_path / "stuff").mkdir()
    with pytest.raises(UserError, match="no known layout"):
        open_dataset(tmp_path / "stuff")
    with pytest.raises(UserError, match="does not look like the 'busi' layout"):
        open_dataset(tmp_path / "stuff", layout="busi")
