"""The machine a job runs on: its torch thread count, set for a block and restored, and what its timings mean."""

import pytest
import torch

from samdistill.machine import machine_info, num_threads


def test_num_threads_sets_and_restores():
    before = torch.get_num_threads()
    with num_threads(1) as t:
        assert t == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with num_threads(None) as t:  # None leaves the count as it is
        assert t == before == torch.get_num_threads()


def test_num_threads_restores_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), num_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_machine_info_names_what_a_timing_depends_on():
    with num_threads(1):
        info = machine_info()
    assert set(info) == {"cpu", "cores", "torch_threads", "torch", "python", "cuda"}
    assert info["torch_threads"] == 1 and info["torch"] == torch.__version__
    assert isinstance(info["cpu"], str) and info["cpu"] and info["cores"] >= 1
