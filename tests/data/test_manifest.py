"""Large collections without a directory scan: manifests (CSV/JSONL) and lists of folders."""

import json

import pytest

from samdistill.data.datasets import open_dataset
from samdistill.data.synthetic import write_folder
from samdistill.errors import DataError, UserError


def test_csv_manifest_with_split_column(tmp_path):
    root = write_folder(tmp_path / "d", 6, seed=1, size=48)
    lines = ["image,mask,split"] + [f"d/images/case_{i:04d}.png,d/masks/case_{i:04d}.png,{'train' if i < 4 else 'test'}"
                                    for i in range(6)]
    (tmp_path / "pairs.csv").write_text("\n".join(lines))
    ds = open_dataset(tmp_path / "pairs.csv")
    assert len(ds) == 6 and len(ds.ids("train")) == 4 and ds.ids("test") == ["d/images/case_0004", "d/images/case_0005"]
    s = ds.load(ds.ids("test")[0])
    assert s.image.shape[:2] == s.mask.shape and s.mask.any()
    assert root.exists()


def test_jsonl_manifest_bad_lines_and_missing_files_are_counted(tmp_path):
    write_folder(tmp_path / "d", 3, seed=2, size=48)
    rows = [json.dumps({"image": f"d/images/case_{i:04d}.png", "mask": f"d/masks/case_{i:04d}.png", "id": f"c{i}"})
            for i in range(3)]
    rows += ["{not json", json.dumps({"image": "d/images/ghost.png", "mask": "d/masks/ghost.png", "id": "ghost"})]
    (tmp_path / "pairs.jsonl").write_text("\n".join(rows))
    with pytest.raises(DataError, match="not valid JSON"):
        open_dataset(tmp_path / "pairs.jsonl")
    ds = open_dataset(tmp_path / "pairs.jsonl", on_error="skip")
    loaded = [s.id for s in ds.iter_samples(ds.ids("all"))]
    assert loaded == ["c0", "c1", "c2"] and len(ds.skipped) == 2  # the bad line and the missing file
    assert any("ghost" in msg for _, msg in ds.skipped)


def test_manifest_without_needed_columns_is_one_line_error(tmp_path):
    (tmp_path / "m.csv").write_text("img,msk\na.png,b.png\n")
    with pytest.raises(UserError, match="image,mask"):
        open_dataset(tmp_path / "m.csv")


def test_list_of_folders_is_one_dataset_with_prefixed_ids(tmp_path):
    a = write_folder(tmp_path / "site_a", 5, seed=1, size=48)
    b = write_folder(tmp_path / "site_b", 4, seed=2, size=48)
    ds = open_dataset([str(a), str(b)])
    assert len(ds) == 9 and ds.name == "site_a+site_b"
    assert {i.split("/")[0] for i in ds.ids("all")} == {"site_a", "site_b"}
    assert sum(len(v) for v in ds.split.values()) == 9  # seeded split over the union
    with pytest.raises(UserError, match="distinct names"):
        open_dataset([str(a), str(a)])
