"""Image size limits: checked from the header before any pixel is decoded, one DataError naming the file, its
size and the limit; PIL's own DecompressionBombWarning/Error never reaches the user; overridable with
SAMDISTILL_MAX_PIXELS; stated in the --help of every verb that reads images."""

from __future__ import annotations

import re
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from samdistill.cli import main
from samdistill.data.images import MAX_PIXELS, PIXELS_ENV, decode_image, env_limit, read_image, read_mask
from samdistill.errors import DataError, UserError


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header says ``width x height`` (1-bit grey) but whose pixel data is a few bytes: a few
    hundred bytes to make, and decoding it could only fail (so an error that names its size proves that
    nothing was decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


@pytest.fixture()
def no_decoding(monkeypatch):
    """Any pixel decoding fails the test."""
    def load(self):
        raise AssertionError(f"pixels of a {self.size} image were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


@pytest.mark.parametrize("size", [(20000, 20000), (10000, 10000)])  # over PIL's error / warning threshold
def test_huge_image_is_refused_from_its_header_without_a_pil_warning(tmp_path, monkeypatch, no_decoding, size):
    monkeypatch.delenv(PIXELS_ENV, raising=False)
    w, h = size
    path = tmp_path / "huge.png"
    path.write_bytes(png_header_only(w, h))
    assert path.stat().st_size < 1000
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for read, what in ((read_image, "image"), (read_mask, "mask")):
            with pytest.raises(DataError) as exc:
                read(path)
            msg = str(exc.value)
            assert msg == (f"{what} {path} is {w}x{h} = {w * h / 1e6:.1f} MP, over the limit of 67.1 MP "
                           f"(set {PIXELS_ENV} to change it)")
            assert exc.value.path == str(path)
        with pytest.raises(DataError, match=rf"^upload\.png is {w}x{h} = .* over the limit of 67\.1 MP"):
            decode_image(path.read_bytes(), "upload.png")
    assert not [c for c in caught if issubclass(c.category, Image.DecompressionBombWarning)], caught


def test_env_variable_sets_the_limit_and_a_bad_value_is_one_line(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(tmp_path / "a.png")  # 40x30 = 1200 px
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(tmp_path / "b.png")  # 900 px
    monkeypatch.setenv(PIXELS_ENV, "1000")
    with pytest.raises(DataError, match=r"a\.png is 40x30 = 0\.0 MP, over the limit of 0\.0 MP"):
        read_image(tmp_path / "a.png")
    assert read_image(tmp_path / "b.png").shape == (30, 30, 3)
    monkeypatch.setenv(PIXELS_ENV, "1_000")
    assert read_mask(tmp_path / "b.png").shape == (30, 30)
    monkeypatch.setenv(PIXELS_ENV, "lots")
    with pytest.raises(UserError, match=rf"{PIXELS_ENV}='lots' is not a positive whole number"):
        read_image(tmp_path / "b.png")


@pytest.mark.parametrize("raw,want", [("1e8", 100_000_000), (" 200_000 ", 200_000), ("", 7), ("12", 12)])
def test_env_limit_accepts_whole_numbers(monkeypatch, raw, want):
    monkeypatch.setenv("SAMDISTILL_TEST_LIMIT", raw)
    assert env_limit("SAMDISTILL_TEST_LIMIT", 7) == want


@pytest.mark.parametrize("raw", ["0", "-5", "1.5", "inf", "nan", "abc", "10MP"])
def test_env_limit_refuses_what_is_not_a_positive_whole_number(monkeypatch, raw):
    monkeypatch.setenv("SAMDISTILL_TEST_LIMIT", raw)
    with pytest.raises(UserError, match="SAMDISTILL_TEST_LIMIT=.* is not a positive whole number"):
        env_limit("SAMDISTILL_TEST_LIMIT", 7)


def test_cli_with_a_bad_env_value_is_a_one_line_error(tmp_path, monkeypatch, capsys, synth_folder):
    monkeypatch.setenv(PIXELS_ENV, "-1")
    assert main(["eval", "--model", "test_sam", "--data", str(synth_folder), "--split", "all", "--limit", "1",
                 "--out", str(tmp_path / "e"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and f"{PIXELS_ENV}='-1'" in err and "\n" not in err


def test_our_limit_governs_not_pils(tmp_path, monkeypatch):
    """PIL's global limit set lower than ours (by other code) neither warns nor refuses an image we accept;
    it is raised to ours, so PIL's threshold and ours agree."""
    monkeypatch.delenv(PIXELS_ENV, raising=False)
    Image.fromarray(np.full((120, 160), 200, np.uint8)).save(tmp_path / "x.png")  # 19200 px > 2 x 1000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would fail here
        out = read_image(tmp_path / "x.png")
    assert out.shape == (120, 160, 3) and int(out[0, 0, 0]) == 200
    assert Image.MAX_IMAGE_PIXELS == MAX_PIXELS


@pytest.mark.parametrize("verb,needs", [
    ("eval", ["67 MP", PIXELS_ENV]), ("distill", ["67 MP", PIXELS_ENV]), ("cache", ["67 MP", PIXELS_ENV]),
    ("bench", ["67 MP", PIXELS_ENV]), ("predict", ["67 MP", PIXELS_ENV, "268 M voxels", "SAMDISTILL_MAX_VOXELS"]),
    ("demo", ["40 MP", "134 M voxels", PIXELS_ENV, "SAMDISTILL_MAX_VOXELS"]),
])
def test_help_states_the_limits(capsys, verb, needs):
    from samdistill.demo.service import MAX_IMAGE_MP, MAX_VOLUME_VOXELS
    from samdistill.deploy.volumes import MAX_VOXELS

    # the numbers in the help are the ones in force
    assert (round(MAX_PIXELS / 1e6), round(MAX_VOXELS / 1e6), MAX_IMAGE_MP, round(MAX_VOLUME_VOXELS / 1e6)) == \
        (67, 268, 40, 134)
    assert main([verb, "--help"]) == 0
    text = re.sub(r"[\s│]+", " ", capsys.readouterr().out)
    for s in needs:
        assert s in text, (verb, s)


def test_header_only_open_gives_the_size_without_decoding(tmp_path, monkeypatch, no_decoding):
    from samdistill.data.images import open_image

    monkeypatch.delenv(PIXELS_ENV, raising=False)
    (tmp_path / "a.png").write_bytes(png_header_only(3000, 2000))
    with open_image(tmp_path / "a.png", "image a.png", decode=False) as im:
        assert im.size == (3000, 2000)
    with pytest.raises(DataError, match=r"^image a\.png is 3000x2000 = 6\.0 MP, over the limit of 5\.0 MP"):
        open_image(tmp_path / "a.png", "image a.png", 5_000_000, decode=False)
