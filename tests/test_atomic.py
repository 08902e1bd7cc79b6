import os

import pytest

from samdistill.atomic import check_out_dir, staged_dir
from samdistill.errors import UserError


def test_staged_dir_moves_into_place_only_on_success(tmp_path):
    out = tmp_path / "pred"
    with staged_dir(out) as tmp:
        (tmp / "a.txt").write_text("x")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["pred"]


def test_staged_dir_failure_leaves_old_folder_as_it_was(tmp_path):
    out = tmp_path / "pred"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_dir(out, force=True) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("boom")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["pred"]


def test_staged_dir_refuses_non_empty_without_force_and_replaces_with_it(tmp_path):
    out = tmp_path / "pred"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(UserError, match="not empty"):
        with staged_dir(out):
            pass
    with staged_dir(out, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]


def test_check_out_dir_rejects_a_file_and_a_path_under_a_file(tmp_path):
    f = tmp_path / "f.txt"
    f.write_text("x")
    with pytest.raises(UserError, match="existing file"):
        check_out_dir(f)
    with pytest.raises(UserError, match="is a file"):
        check_out_dir(f / "sub")
    assert check_out_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"


def test_check_out_dir_rejects_read_only_parent(tmp_path, monkeypatch):
    # Root writes through permission bits, so a read-only mount is stood in for by os.access.
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.fspath(p) == os.fspath(ro) else real(p, mode))
    with pytest.raises(UserError, match="not writable"):
        check_out_dir(ro / "out")
