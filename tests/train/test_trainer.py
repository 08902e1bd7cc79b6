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


class TwoUpdates:
    """A method with two parameter groups updated one after the other on each batch (``updates``), like
    the architecture search's weight step then architecture step."""

    def __init__(self, nan_b_from=None):
        self.model = torch.nn.ParameterDict({"a": torch.nn.Parameter(torch.zeros(())),
                                             "b": torch.nn.Parameter(torch.zeros(()))})
        self.seen, self.epochs, self.nan_b_from = [], [], nan_b_from

    def param_groups(self):
        sgd = OptimConfig(name="sgd", lr=0.5, momentum=0.0, weight_decay=0.0, warmup_steps=0, min_lr_ratio=1.0,
                          clip_grad=None)
        return [("a", [self.model["a"]], sgd), ("b", [self.model["b"]], sgd)]

    def parameters(self):
        return list(self.model.parameters())

    def train(self):
        pass

    def eval(self):
        pass

    def set_epoch(self, epoch):
        self.epochs.append(epoch)

    def updates(self, batch):
        a, b = self.model["a"], self.model["b"]
        yield "a", {"loss": (a - 1).pow(2)}
        self.seen.append(float(a.detach()))  # what the second update sees: a after its step
        loss = (b - a.detach()).pow(2)
        if self.nan_b_from is not None and len(self.seen) >= self.nan_b_from:
            loss = loss * float("nan")
        yield "b", {"loss": loss}

    def state_dict(self):
        return {"seen": list(self.seen)}

    def load_state_dict(self, state):
        self.seen = list(state["seen"])


def test_updates_are_applied_in_turn_each_to_its_group_and_the_method_state_is_checkpointed(tmp_path):
    m = TwoUpdates()
    phase = Phase("p", m, ToySet(), None, 2, 4, OptimConfig())
    res = Trainer(model=m.model, phases=[phase], out_dir=tmp_path, progress=False).fit()
    # a = 0 -> 1 after its first SGD step (grad -2, lr 0.5): the b update already sees the new a
    assert m.seen[0] == 1.0 and float(m.model["b"].detach()) == pytest.approx(1.0) and res["steps"] == 4
    assert m.epochs == [0, 1] and {"train_a_loss", "train_b_loss"} <= set(res["history"][0])
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["method"] == {"seen": m.seen} and len(m.seen) == 4


def test_a_non_finite_update_skips_the_rest_of_its_batch_and_counts(tmp_path):
    m = TwoUpdates(nan_b_from=3)  # from the third batch on, the b update's loss is NaN
    phase = Phase("p", m, ToySet(), None, 10, 4, OptimConfig())
    with pytest.raises(TrainingDiverged):
        Trainer(model=m.model, phases=[phase], out_dir=tmp_path, progress=False).fit()
    assert math.isfinite(float(m.model["b"].detach())) and len(m.seen) == 2 + 5  # two good batches, then five bad in a row


class DtypeMethod(ToyMethod):
    """Records the dtype the model's matmul gives inside the trainer's step and validation."""

    def __init__(self, model):
        super().__init__(model)
        self.step_dtypes, self.val_dtypes = set(), set()

    def step(self, batch):
        y = self.model(batch["x"])
        self.step_dtypes.add(y.dtype)
        return {"loss": (y.float() - 1).pow(2).mean()}

    def validate(self, loader):
        self.val_dtypes.update(self.model(b["x"]).dtype for b in loader)
        return super().validate(loader)


@pytest.mark.parametrize(("precision", "dtype"), [("auto", torch.float32), ("fp32", torch.float32),
                                                  ("bf16", torch.bfloat16)])
def test_precision_picks_the_cpu_arithmetic_and_weights_stay_fp32(tmp_path, precision, dtype):
    model = torch.nn.Linear(1, 1)
    method = DtypeMethod(model)
    phase = Phase("p", method, ToySet(), ToySet(), 2, 4, OptimConfig(lr=0.05, warmup_steps=0))
    res = Trainer(model=model, phases=[phase], out_dir=tmp_path, progress=False, precision=precision).fit()
    assert method.step_dtypes == {dtype} and method.val_dtypes == {dtype}
    assert model.weight.dtype == torch.float32 and res["history"][-1]["train_loss"] < res["history"][0]["train_loss"]


def test_an_unknown_precision_or_bf16_on_mps_is_refused(tmp_path):
    from samdistill.devices import training_dtype
    from samdistill.errors import UserError

    model = torch.nn.Linear(1, 1)
    phase = Phase("p", ToyMethod(model), ToySet(), ToySet(), 1, 4, OptimConfig())
    with pytest.raises(UserError, match="precision must be auto, fp32 or bf16"):
        Trainer(model=model, phases=[phase], out_dir=tmp_path, progress=False, precision="fp16")
    with pytest.raises(UserError, match="precision=bf16 trains on cpu or cuda"):
        training_dtype("mps", "bf16")
    # one rule for every device string, no GPU needed to ask it
    assert training_dtype("cuda:1") == training_dtype("cuda", "bf16") == torch.bfloat16
    assert training_dtype("cpu") == training_dtype("mps") == training_dtype("cuda", "fp32") == torch.float32


def test_resume_into_another_architecture_names_the_methods_hint_only(tmp_path):
    from samdistill.errors import CheckpointError

    model = torch.nn.Linear(1, 1)
    Trainer(model=model, phases=[Phase("p", ToyMethod(model), ToySet(), ToySet(), 1, 4, OptimConfig())],
            out_dir=tmp_path, progress=False).fit()
    for hint in ("", "toy.width=1 for a run started before toy.width existed"):
        wider = torch.nn.Linear(1, 2)
        trainer = Trainer(model=wider, phases=[Phase("p", ToyMethod(wider), ToySet(), ToySet(), 2, 4, OptimConfig())],
                          out_dir=tmp_path, progress=False, resume_hint=hint)
        with pytest.raises(CheckpointError, match="holds the training state of another model") as exc:
            trainer.fit(resume=True)
        assert str(exc.value).endswith(f"(its config.yaml), e.g. {hint}" if hint else "(its config.yaml)")
