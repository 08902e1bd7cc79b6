"""Training state loads with weights_only=True: a planted pickle never runs, a foreign file is refused
(not skipped), a torn one still falls back to last.prev.pt, and the RNG states round-trip exactly."""

import pickle
import random

import numpy as np
import pytest
import torch

from samdistill.cli import main
from samdistill.errors import CheckpointError
from samdistill.train.checkpoint import load_training_state, rng_state, save_training_state, set_rng_state


class MakesAFile:
    """A pickle payload: loading it with a full unpickler calls open(path, "w"), creating the file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _state(step: int) -> dict:
    return {"model": {"w": torch.full((2,), float(step))}, "phase": 0, "epoch": step, "step": step, "rng": rng_state()}


def test_payload_is_live_without_weights_only(tmp_path):
    """Guard for the tests below: the payload really creates its file under a full unpickler."""
    pickle.loads(pickle.dumps(MakesAFile(tmp_path / "made")))
    assert (tmp_path / "made").exists()


@pytest.mark.parametrize("writer", ["torch.save", "pickle-2", "pickle-default"])
def test_planted_pickle_is_refused_and_never_runs(tmp_path, writer, recwarn):
    ckpt = tmp_path / "checkpoints"
    save_training_state(_state(1), ckpt)
    save_training_state(_state(2), ckpt)  # an intact last.prev.pt that must NOT be fallen back to
    marker = tmp_path / "pwned"
    payload = {"model": MakesAFile(marker), "phase": 0}
    with open(ckpt / "last.pt", "wb") as fh:
        if writer == "torch.save":
            torch.save(payload, fh)
        else:
            pickle.dump(payload, fh, protocol=2 if writer == "pickle-2" else pickle.DEFAULT_PROTOCOL)
    with pytest.raises(CheckpointError) as err:
        load_training_state(ckpt)
    msg = str(err.value)
    assert "last.pt is not a samdistill training state and was refused" in msg and "may hold code" in msg
    assert "torn" not in msg and "truncated" not in msg and "\n" not in msg
    if writer != "pickle-default":
        assert "open" in msg  # names what it would have imported
    assert not marker.exists()
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]  # the refusal alone, no torch warning


def test_foreign_but_harmless_file_is_refused_not_skipped(tmp_path):
    ckpt = tmp_path / "checkpoints"
    save_training_state(_state(1), ckpt)
    save_training_state(_state(2), ckpt)
    torch.save({"state_dict": {"w": torch.zeros(2)}}, ckpt / "last.pt")  # e.g. a model file copied over it
    with pytest.raises(CheckpointError, match="not a samdistill training state and was refused.*state_dict"):
        load_training_state(ckpt)


def test_torn_last_falls_back_to_previous(tmp_path):
    ckpt = tmp_path / "checkpoints"
    save_training_state(_state(1), ckpt)
    save_training_state(_state(2), ckpt)
    last = ckpt / "last.pt"
    last.write_bytes(last.read_bytes()[:300])
    assert load_training_state(ckpt)["step"] == 1
    (ckpt / "last.prev.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no usable checkpoint.*torn or truncated"):
        load_training_state(ckpt)


def test_state_is_weights_only_and_rng_round_trips(tmp_path):
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    np.random.standard_normal()  # numpy holds a cached gaussian now
    random.gauss(0, 1)  # and python its gauss_next
    save_training_state(_state(3), tmp_path)
    expect = (torch.rand(3), np.random.rand(3), np.random.standard_normal(), random.random(), random.gauss(0, 1))
    raw = torch.load(tmp_path / "last.pt", weights_only=True)  # plain torch, no allow-list
    assert isinstance(raw["rng"]["numpy"]["keys"], torch.Tensor)
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    set_rng_state(load_training_state(tmp_path)["rng"])
    got = (torch.rand(3), np.random.rand(3), np.random.standard_normal(), random.random(), random.gauss(0, 1))
    assert torch.equal(got[0], expect[0]) and np.array_equal(got[1], expect[1]) and got[2:] == expect[2:]


def test_state_written_before_plain_rng_still_resumes(tmp_path):
    """last.pt of an older samdistill (numpy RNG as a tuple with an ndarray) loads and restores."""
    np.random.seed(11)
    old = {"model": {}, "phase": 0, "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                                            "python": random.getstate()}}
    expect = np.random.rand(4)
    torch.save(old, tmp_path / "last.pt")
    np.random.seed(0)
    set_rng_state(load_training_state(tmp_path)["rng"])
    assert np.array_equal(np.random.rand(4), expect)


def test_cli_resume_with_planted_last_pt_exits_2_and_runs_nothing(tiny_run, tmp_path, capsys):
    run, args = tiny_run
    marker = tmp_path / "created_by_pickle"
    student = (run / "student.pt").read_bytes()
    torch.save({"model": MakesAFile(marker), "phase": 0, "epoch": 1}, run / "checkpoints" / "last.pt")
    capsys.readouterr()
    assert main([*args, "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "last.pt is not a samdistill training state and was refused" in err and "may hold code" in err
    assert "truncated" not in err
    assert not marker.exists()
    assert (run / "student.pt").read_bytes() == student and not (run / ".lock").exists()


def test_cli_resume_into_another_architecture_is_one_line(tiny_run, capsys):
    """A run resumed with settings that build another model (a wider neck here; a kdsam run from before
    student.detail existed is the same case) is refused in one line, not with load_state_dict's traceback."""
    run, args = tiny_run
    student = (run / "student.pt").read_bytes()
    capsys.readouterr()
    assert main([*args, "student.neck_width=24", "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "holds the training state of another model than this config builds" in err
    assert "student.detail=false" in err
    assert (run / "student.pt").read_bytes() == student and not (run / ".lock").exists()
