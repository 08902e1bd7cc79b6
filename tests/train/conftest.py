"""A finished tiny run (CLI `distill`, test_sam teacher, 8 synthetic images) that tests copy and tamper with."""

import shutil

import pytest

from samdistill.cli import main


def tiny_args(cache) -> list[str]:
    return ["distill", "--teacher", "test_sam", "--student", "test_resnet18", "--data", "synthetic:n=8,size=64,seed=2",
            f"cache.dir={cache}", "stage1.epochs=1", "stage2.epochs=1", "stage1.batch_size=4", "stage2.batch_size=4",
            "progress=false", "threads=1", "overlays=0"]


@pytest.fixture(scope="session")
def _tiny_run_once(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_run")
    assert main([*tiny_args(root / "cache"), "--out", str(root / "run")]) == 0
    return root


@pytest.fixture()
def tiny_run(_tiny_run_once, tmp_path):
    """(a private copy of the finished run folder, the CLI args that made it, without --out)."""
    run = tmp_path / "run"
    shutil.copytree(_tiny_run_once / "run", run)
    return run, tiny_args(_tiny_run_once / "cache")
