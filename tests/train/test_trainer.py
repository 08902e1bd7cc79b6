"""The trainer on its own: schedule, NaN handling."""

import math

import pytest
import torch

from samdistill.config import OptimConfig
from samdistill.train.trainer import Phase, Trainer, TrainingDiverged, warmup_cosine


class ToySet(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return {"x": torch.tensor([float(i)]), "id": str(i)}


class ToyMethod:
    def __init__(self, model, nan_from_step=None):
        self.model, self.calls, self.nan_from = model, 0, nan_from_step

    def parameters(self):
        return list(self.model.parameters())

    def train(self):
        self.model.train()

    def eval(self):
        self.model.eval()

    def step(self, batch):
        self.calls += 1
        loss = (self.model(batch["x"]) - 1).pow(2).mean()
        if self.nan_from is not None and self.calls >= self.nan_from:
            loss = loss * float("nan")
        return {"loss": loss}

    def validate(self, loader):
        return {"dice": 1.0 - float(sum((self.model(b["x"]) - 1).pow(2).mean() for b in loader))}


def test_warmup_then_cosine():
    f = warmup_cosine(100, OptimConfig(warmup_steps=10, min_lr_ratio=0.0))
    assert f(0) == pytest.approx(1 / 11) and f(9) == pytest.approx(10 / 11)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5, abs=0.01) and f(100) == pytest.approx(0.0)


def test_trainer_lowers_loss_and_writes_metrics(tmp_path):
    model = torch.nn.Linear(1, 1)
    phase = Phase("p", ToyMethod(model), ToySet(), ToySet(), 3, 4, OptimConfig(lr=0.05, warmup_steps=0))
    res = Trainer(model=model, phases=[phase], out_dir=tmp_path, progress=False).fit()
    hist = res["history"]
    assert len(hist) == 3 and hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 4
    assert (tmp_path / "checkpoints" / "last.pt").exists()


def test_nan_steps_are_skipped_then_the_run_stops_without_nan_weights(tmp_path):
    model = torch.nn.Linear(1, 1)
    phase = Phase("p", ToyMethod(model, nan_from_step=2), ToySet(), None, 10, 1, OptimConfig(lr=0.01))
    with pytest.raises(TrainingDiverged, match="non-finite"):
        Trainer(model=model, phases=[phase], out_dir=tmp_path, progress=False).fit()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not math.isnan(float(model.weight.detach()))
