"""Shared fixtures: tiny models and synthetic data made in tmp_path. Everything offline."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

warnings.filterwarnings("ignore", category=FutureWarning)
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def tiny_model():
    from samdistill.models.zoo import load_model

    return load_model("test_sam")


@pytest.fixture(scope="session")
def litemedsam():
    from samdistill.models.zoo import load_model

    return load_model("litemedsam")


@pytest.fixture()
def synth_folder(tmp_path):
    from samdistill.data.synthetic import write_folder

    return write_folder(tmp_path / "synth", 20, seed=3, size=96)


def disk_mask(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
