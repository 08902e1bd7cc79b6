"""Device names: spelling checked when a config loads, availability when a job starts; one-line errors."""

import pytest
import torch

from samdistill.cli import main
from samdistill.config import load_config
from samdistill.devices import check_device, valid_device_name
from samdistill.errors import UserError


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("name", ["cpu", "cuda", "cuda:1", "mps"])
def test_valid_names_pass_the_spelling_check_on_any_machine(name):
    assert valid_device_name(name) == name


@pytest.mark.parametrize("name", ["gpu", "cuda0", "", "xla", "meta"])
def test_unknown_names_are_rejected(name):
    with pytest.raises(UserError, match="unknown device"):
        valid_device_name(name)


def test_cpu_is_always_there():
    assert check_device("cpu") == "cpu"


def test_cuda_without_a_gpu_is_one_clear_error(no_cuda):
    with pytest.raises(UserError, match="sees no CUDA GPU.*device=cpu"):
        check_device("cuda")


def test_cuda_index_beyond_the_gpus_is_rejected(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1") == "cuda:1"
    with pytest.raises(UserError, match=r"has 2 CUDA GPU\(s\)"):
        check_device("cuda:2")


def test_config_rejects_a_misspelt_device_naming_the_key():
    with pytest.raises(UserError, match="'device'.*unknown device 'gpu'"):
        load_config("kdsam", ["device=gpu"])
    assert load_config("kdsam", ["device=cuda"]).device == "cuda"  # a GPU run's config loads anywhere


@pytest.mark.parametrize("argv", [
    ["distill", "--method", "kdsam", "--data", "synthetic:n=4", "--out", "run", "device=cuda"],
    ["distill", "--method", "kdsam", "--data", "synthetic:n=4", "--out", "run", "--device", "gpu"],
    ["eval", "--model", "test_sam", "--data", "synthetic:n=4", "--out", "ev", "--device", "cuda"],
])
def test_cli_device_errors_are_one_line_and_start_nothing(tmp_path, monkeypatch, capsys, no_cuda, argv):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "device" in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "ev").exists()
