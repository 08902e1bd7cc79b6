"""`samdistill predict` on images: everything checked before the model runs, the output folder whole or
untouched, --on-error skip counts and lists what it skipped, bad prompt files are one-line errors."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from samdistill import Predictor
from samdistill.cli import main
from samdistill.deploy.predictor import read_prompt_file
from samdistill.errors import UserError

H, W = 40, 50


def _image(path, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((H, W, 3)) * 255).astype(np.uint8)).save(path)


def _folder(root, names):
    inp = root / "in"
    inp.mkdir()
    for i, n in enumerate(names):
        _image(inp / n, seed=i)
    return inp


def _csv(path, names, box=(5, 5, 30, 25)):
    path.write_text("image,x0,y0,x1,y1\n" + "".join(f"{n},{','.join(map(str, box))}\n" for n in names))
    return path


def _predict(inp, *args):
    return main(["predict", "test_sam", "--input", str(inp), "--no-progress", *map(str, args)])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def _truncated_png(path):
    """A PNG whose header reads fine but whose pixel data stops half-way (found only when decoding)."""
    rng = np.random.default_rng(9)
    Image.fromarray((rng.random((H, W, 3)) * 255).astype(np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_inputs_with_the_same_stem_are_refused_before_any_work(tmp_path, capsys):
    inp = _folder(tmp_path, ["a.png", "a.jpg", "b.png"])
    rc = _predict(inp, "--prompts", _csv(tmp_path / "p.csv", ["a.png", "a.jpg", "b.png"]), "--out", tmp_path / "o")
    line = _one_error_line(capsys)
    assert rc == 2 and "a.jpg and a.png" in line and "b.png" not in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_box_is_an_error_naming_the_line(tmp_path, capsys, value):
    inp = _folder(tmp_path, ["a.png", "b.png"])
    p = tmp_path / "p.csv"
    p.write_text(f"image,x0,y0,x1,y1\na.png,5,5,30,25\nb.png,5,5,{value},25\n")
    assert _predict(inp, "--prompts", p, "--out", tmp_path / "o") == 2
    line = _one_error_line(capsys)
    assert "line 3" in line and "finite" in line
    assert not (tmp_path / "o").exists()


def test_predictor_refuses_nan_boxes_and_points(tiny_model):
    p = Predictor.from_torch(tiny_model)
    p.set_image(np.zeros((H, W, 3), np.uint8))
    with pytest.raises(UserError, match="finite"):
        p.predict(boxes=[[1, 1, float("nan"), 20]])
    with pytest.raises(UserError, match="finite"):
        p.predict(points=[[float("nan"), 3]])


def test_a_box_outside_a_later_image_is_found_before_any_mask_is_written(tmp_path, capsys):
    inp = _folder(tmp_path, ["a.png", "b.png"])
    p = tmp_path / "p.csv"
    p.write_text("image,x0,y0,x1,y1\na.png,5,5,30,25\nb.png,5,5,60,25\n")  # b is 50 px wide
    assert _predict(inp, "--prompts", p, "--out", tmp_path / "o") == 2
    line = _one_error_line(capsys)
    assert "b.png" in line and "outside the 50x40 image" in line
    assert not (tmp_path / "o").exists()


def test_an_image_that_fails_to_decode_half_way(tmp_path, capsys):
    names = ["a.png", "b.png", "c.png", "d.png"]
    inp = _folder(tmp_path, ["a.png", "c.png"])
    _truncated_png(inp / "b.png")  # header fine: fails only when its pixels are decoded, after a.png's mask
    (inp / "d.png").write_bytes(b"not an image at all")  # fails at the header check, before any work
    prompts = _csv(tmp_path / "p.csv", names)
    out = tmp_path / "o"
    # raise: exit 2, one line, nothing written
    assert _predict(inp, "--prompts", prompts, "--out", out) == 2
    assert "d.png" in _one_error_line(capsys)
    (inp / "d.png").unlink()
    prompts = _csv(tmp_path / "p.csv", names[:3])
    assert _predict(inp, "--prompts", prompts, "--out", out) == 2
    line = _one_error_line(capsys)
    assert "b.png" in line and "--on-error skip" in line
    assert not out.exists() and not list(tmp_path.glob(".o.*"))  # no half folder, no temp sibling left
    # an earlier complete output, replaced only with --force: a failed run leaves it as it was
    (inp / "b.png").rename(tmp_path / "b.png")
    assert _predict(inp, "--prompts", _csv(tmp_path / "ok.csv", ["a.png", "c.png"]), "--out", out) == 0
    before = {f.relative_to(out): f.read_bytes() for f in out.rglob("*") if f.is_file()}
    (tmp_path / "b.png").rename(inp / "b.png")
    assert _predict(inp, "--prompts", prompts, "--out", out, "--force") == 2
    assert {f.relative_to(out): f.read_bytes() for f in out.rglob("*") if f.is_file()} == before
    capsys.readouterr()
    # skip: the other images are segmented, the bad ones counted and listed
    (inp / "d.png").write_bytes(b"not an image at all")
    out2 = tmp_path / "o2"
    assert _predict(inp, "--prompts", _csv(tmp_path / "p.csv", names), "--out", out2, "--on-error", "skip") == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed.startswith("2 images segmented") and "2 skipped" in printed
    assert sorted(f.name for f in (out2 / "masks").glob("*.png")) == ["a.png", "c.png"]
    assert [r["image"] for r in csv.DictReader(open(out2 / "areas.csv"))] == ["a.png", "c.png"]
    skipped = list(csv.DictReader(open(out2 / "skipped.csv")))
    assert [r["file"] for r in skipped] == ["b.png", "d.png"]
    assert "truncated" in skipped[0]["reason"] and "cannot read image" in skipped[1]["reason"]


def test_an_image_without_a_prompt(tmp_path, capsys):
    inp = _folder(tmp_path, ["a.png", "b.png", "c.png"])
    prompts = _csv(tmp_path / "p.csv", ["a.png", "b"])  # a stem is a key too
    assert _predict(inp, "--prompts", prompts, "--out", tmp_path / "o") == 2
    line = _one_error_line(capsys)
    assert "1 of 3 images: c.png" in line and "a.png" not in line
    assert not (tmp_path / "o").exists()
    assert _predict(inp, "--prompts", prompts, "--out", tmp_path / "o", "--on-error", "skip") == 0
    assert "1 skipped" in capsys.readouterr().out
    assert [r["image"] for r in csv.DictReader(open(tmp_path / "o" / "areas.csv"))] == ["a.png", "b.png"]
    skipped = list(csv.DictReader(open(tmp_path / "o" / "skipped.csv")))
    assert [r["file"] for r in skipped] == ["c.png"] and "no prompt" in skipped[0]["reason"]


def test_prompts_for_files_not_among_the_inputs_only_warn(tmp_path, capsys):
    inp = _folder(tmp_path, ["a.png"])
    prompts = _csv(tmp_path / "p.csv", ["a.png", "zz.png"])
    assert _predict(inp, "--prompts", prompts, "--out", tmp_path / "o") == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "zz.png" in captured.err
    assert captured.out.strip().splitlines()[-1].startswith("1 images segmented")


def test_a_short_csv_row_is_one_line_naming_the_line(tmp_path, capsys):
    inp = _folder(tmp_path, ["a.png", "b.png"])
    p = tmp_path / "p.csv"
    p.write_text("image,x0,y0,x1,y1\na.png,5,5,30,25\nb.png,5,5\n")
    assert _predict(inp, "--prompts", p, "--out", tmp_path / "o") == 2
    line = _one_error_line(capsys)
    assert "line 3" in line and "3 values" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("data, words", [
    ([{"boxes": [[5, 5, 30, 25]]}], "JSON object"),
    ({"a.png": {"boxes": [[5, 5, 30]]}}, "[x0, y0, x1, y1]"),
    ({"a.png": {"boxes": [5, 5, 30, 25]}}, "[x0, y0, x1, y1]"),
    ({"a.png": {"boxes": [["5", 5, 30, 25]]}}, "must be numbers"),
    ({"a.png": {"boxes": [[30, 5, 5, 25]]}}, "x1 >= x0"),
    ({"a.png": {"points": [[5, 5, 6]]}}, "[x, y] pairs"),
    ({"a.png": {"points": [[5, 5], [6]]}}, "differ in length"),
    ({"a.png": {"points": [[5, 5]], "labels": [2]}}, "labels are 1"),
    ({"a.png": {"points": [[5, 5], [6, 6]], "labels": [1]}}, "one 0/1 per point"),
    ({"a.png": {"labels": [1]}}, "labels without points"),
    ({"a.png": {"box": [[5, 5, 30, 25]]}}, "unknown key"),
    ({"a.png": [[5, 5, 30, 25]]}, "expected an object"),
    ({"a.png": {}}, "no boxes or points"),
    ({"a.png": {"boxes": [[5, 5, 30, 25]], "points": [[1, 1], [2, 2]]}}, "per box"),
])
def test_a_prompt_json_of_the_wrong_shape_is_one_line(tmp_path, capsys, data, words):
    inp = _folder(tmp_path, ["a.png"])
    (tmp_path / "p.json").write_text(json.dumps(data))
    assert _predict(inp, "--prompts", tmp_path / "p.json", "--out", tmp_path / "o") == 2
    assert words in _one_error_line(capsys)
    assert not (tmp_path / "o").exists()


def test_json_points_with_labels_and_boxes_work(tmp_path):
    inp = _folder(tmp_path, ["a.png", "b.png"])
    (tmp_path / "p.json").write_text(json.dumps({
        "a.png": {"points": [[10, 10], [30, 20]], "labels": [1, 0]},
        "b": {"boxes": [[5, 5, 30, 25]], "points": [[[10, 10], [12, 12]]], "labels": [[1, 0]]}}))
    assert _predict(inp, "--prompts", tmp_path / "p.json", "--out", tmp_path / "o") == 0
    rows = list(csv.DictReader(open(tmp_path / "o" / "areas.csv")))
    assert [(r["image"], r["prompts"]) for r in rows] == [("a.png", "2"), ("b.png", "1")]


def test_an_excel_csv_with_bom_and_windows_line_endings(tmp_path):
    inp = _folder(tmp_path, ["a.png", "b.png"])
    p = tmp_path / "p.csv"
    p.write_bytes(b"\xef\xbb\xbfimage,x0,y0,x1,y1\r\na.png,5,5,30,25\r\nb.png,1,2,40,30\r\n,,,,\r\n")
    assert read_prompt_file(p)["b.png"]["boxes"].tolist() == [[1, 2, 40, 30]]
    assert _predict(inp, "--prompts", p, "--out", tmp_path / "o") == 0
    assert [r["image"] for r in csv.DictReader(open(tmp_path / "o" / "areas.csv"))] == ["a.png", "b.png"]


def test_a_non_empty_out_is_refused_unless_force(tmp_path, capsys):
    inp = _folder(tmp_path, ["a.png"])
    prompts = _csv(tmp_path / "p.csv", ["a.png"])
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert _predict(inp, "--prompts", prompts, "--out", out) == 2
    assert "--force" in _one_error_line(capsys) and (out / "notes.txt").read_text() == "mine"
    assert _predict(inp, "--prompts", prompts, "--out", out, "--force") == 0
    assert not (out / "notes.txt").exists() and (out / "masks" / "a.png").exists()


def test_force_never_replaces_the_folder_of_the_images_or_the_prompt_file(tmp_path, capsys):
    """--force replaces an earlier output, never the folder the command reads from: the input images, the prompt
    file (or a folder above them) stay, with a one-line error that names what would have been deleted."""
    inp = _folder(tmp_path, ["a.png", "b.png"])
    prompts = _csv(inp / "p.csv", ["a.png", "b.png"])  # the prompt file beside the images
    before = sorted(p.name for p in inp.iterdir())
    for out in (inp, tmp_path):  # the input folder itself, and a folder above it
        assert _predict(inp, "--prompts", prompts, "--out", out, "--force") == 2
        assert "--force would delete it" in _one_error_line(capsys)
        assert sorted(p.name for p in inp.iterdir()) == before
    other = tmp_path / "boxes"
    other.mkdir()
    outside = _csv(other / "p.csv", ["a.png", "b.png"])
    assert _predict(inp / "a.png", "--prompts", outside, "--out", other, "--force") == 2  # holds the prompt file
    assert "p.csv" in _one_error_line(capsys) and outside.exists()
    assert _predict(inp, "--prompts", prompts, "--out", inp / "predictions", "--force") == 0  # a folder of its own
    assert (inp / "predictions" / "masks" / "a.png").exists()
    assert sorted(p.name for p in inp.iterdir()) == sorted(before + ["predictions"])
    model = tmp_path / "onnx"  # an export folder as the model: refused before it is even loaded
    model.mkdir()
    (model / "manifest.json").write_text("{}")
    code = main(["predict", str(model), "--input", str(inp), "--prompts", str(prompts), "--out", str(model),
                 "--force", "--no-progress"])
    assert code == 2 and "--force would delete it" in _one_error_line(capsys) and (model / "manifest.json").exists()


def test_volume_flags_on_images_and_a_non_image_input_are_one_line_errors(tmp_path, capsys):
    """--box / --slice on 2-D images would be ignored silently; a text file as --input is "not an image", not
    "no prompt for it"."""
    inp = _folder(tmp_path, ["a.png"])
    prompts = _csv(tmp_path / "p.csv", ["a.png"])
    assert _predict(inp, "--prompts", prompts, "--box", "1,2,3,4", "--out", tmp_path / "o") == 2
    assert "--box and --slice are for volumes" in _one_error_line(capsys) and not (tmp_path / "o").exists()
    (tmp_path / "notes.txt").write_text("x")
    assert _predict(tmp_path / "notes.txt", "--prompts", prompts, "--out", tmp_path / "o") == 2
    assert "notes.txt is not an image" in _one_error_line(capsys)


def test_a_volume_goes_through_a_staged_folder(tmp_path, capsys):
    import nibabel as nib

    zz, yy, xx = np.mgrid[0:40, 0:48, 0:30]
    ball = (zz - 20) ** 2 + (yy - 24) ** 2 + (xx - 15) ** 2 <= 100
    nib.save(nib.Nifti1Image(np.where(ball, 300, 0).astype(np.int16), np.eye(4)), str(tmp_path / "v.nii.gz"))
    out = tmp_path / "o"
    out.mkdir()
    (out / "old.txt").write_text("x")
    base = [tmp_path / "v.nii.gz", "--slice", "15", "--out", out]
    assert _predict(*base, "--box", "14,10,34,30") == 2
    assert "not empty" in _one_error_line(capsys) and (out / "old.txt").exists()
    assert _predict(*base, "--box", "14,10,nan,30", "--force") == 2
    assert "finite" in _one_error_line(capsys) and (out / "old.txt").exists()
    assert _predict(*base, "--box", "14,10,34,30", "--force") == 0
    assert f"wrote {out / 'v_mask.nii.gz'}" in capsys.readouterr().out
    assert sorted(f.name for f in out.iterdir()) == ["v_mask.nii.gz", "volumes.csv"]
    assert [r["mask"] for r in csv.DictReader(open(out / "volumes.csv"))] == [str(out / "v_mask.nii.gz")]


def test_an_image_over_the_pixel_limit_is_refused_from_its_header_before_any_work(tmp_path, capsys):
    import warnings

    from tests.data.test_limits import png_header_only

    inp = _folder(tmp_path, ["a.png"])
    (inp / "b.png").write_bytes(png_header_only(20000, 20000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not reach the user
        rc = _predict(inp, "--prompts", _csv(tmp_path / "p.csv", ["a.png", "b.png"]), "--out", tmp_path / "o")
    line = _one_error_line(capsys)
    assert rc == 2 and "20000x20000" in line and "over the limit" in line and "b.png" in line
    assert not (tmp_path / "o").exists()
