"""Kill a real `samdistill distill` process (SIGKILL, SIGTERM) and resume: same final weights as an
uninterrupted run with the same seed, bit for bit on CPU."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from samdistill.config import load_config
from samdistill.distill import distill

ARGS = ["--teacher", "test_sam", "--student", "test_resnet18", "--data", "synthetic:n=24,size=64,seed=5",
        "stage1.epochs=4", "stage2.epochs=2", "stage1.batch_size=2", "stage2.batch_size=2", "progress=false",
        "threads=1", "overlays=0", "checkpoint_every=3", "stage1.perceptual=0.1"]


def _overrides(tmp_path):
    return ARGS[6:] + [f"cache.dir={tmp_path / 'cache'}"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One uninterrupted reference run (and the cache every run of this module reuses)."""
    from samdistill.config import merge, parse_overrides

    root = tmp_path_factory.mktemp("kill")
    tree = merge({"teacher": "test_sam", "student": {"name": "test_resnet18"},
                  "data": {"path": "synthetic:n=24,size=64,seed=5"}}, parse_overrides(_overrides(root)))
    distill(load_config("kdsam", tree), root / "ref")
    return root, torch.load(root / "ref" / "checkpoints" / "last.pt", weights_only=True)


def _launch(tmp_path, out, resume=False):
    cmd = [sys.executable, "-m", "samdistill", "distill", *ARGS, f"cache.dir={tmp_path / 'cache'}", "--out", str(out)]
    if resume:
        cmd.append("--resume")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_checkpoint(proc, path, timeout=300):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, f"run ended before the first checkpoint: {proc.stderr.read()[-1500:]}"
        assert time.time() - t0 < timeout
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killed_run_resumes_to_identical_weights(tmp_path, shared, sig):
    cache_root, ref = shared
    out = tmp_path / "run"
    proc = _launch(cache_root, out)
    _wait_for_checkpoint(proc, out / "checkpoints" / "last.pt")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert not (out / "summary.json").exists()  # it really was stopped before the end
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] < ref["step"]
    if sig in (signal.SIGTERM, signal.SIGINT):  # Ctrl-C stops like SIGTERM: a checkpoint, then exit 130
        code = 143 if sig == signal.SIGTERM else 130
        assert proc.returncode == code and f"stopped by {sig.name}" in err and "--resume" in err
        assert not (out / ".lock").exists()  # a clean stop releases the run folder
    else:
        assert proc.returncode == -signal.SIGKILL
        assert (out / ".lock").exists()  # nothing could release it
    done = _launch(cache_root, out, resume=True)
    _, err = done.communicate(timeout=600)
    assert done.returncode == 0, err[-1500:]
    assert ("no longer running; taking it over" in err) == (sig == signal.SIGKILL)
    assert not (out / ".lock").exists()
    final = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert final["step"] == ref["step"]
    assert all(torch.equal(final["model"][k], ref["model"][k]) for k in ref["model"])


def test_sigterm_checkpoint_is_mid_epoch_and_resumable_in_process(tmp_path, shared):
    """SIGTERM inside an epoch: the checkpoint records the batch, and resume finishes that epoch."""
    from samdistill.config import merge, parse_overrides

    tree = merge({"teacher": "test_sam", "student": {"name": "test_resnet18"},
                  "data": {"path": "synthetic:n=24,size=64,seed=5"}},
                 parse_overrides(_overrides(shared[0]) + ["checkpoint_every=null"]))
    cfg = load_config("kdsam", tree)
    import samdistill.train.trainer as tr

    original = tr.Trainer._epoch
    calls = {"n": 0}

    def epoch_then_term(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # during the second epoch, after some steps, a SIGTERM arrives
            self.stop_after_steps = None
            orig_step = self.phases[0].method.step
            count = {"k": 0}

            def step(batch):
                count["k"] += 1
                if count["k"] == 3:
                    os.kill(os.getpid(), signal.SIGTERM)
                return orig_step(batch)

            self.phases[0].method.step = step
        return original(self, *a, **k)

    tr.Trainer._epoch = epoch_then_term
    try:
        r = distill(cfg, tmp_path / "t")
    finally:
        tr.Trainer._epoch = original
    assert r["interrupted"] and r["reason"] == "SIGTERM"
    state = torch.load(tmp_path / "t" / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and state["batch_in_epoch"] == 3
    distill(cfg, tmp_path / "t", resume=True)
    ref = shared[1]
    final = torch.load(tmp_path / "t" / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(final["model"][k], ref["model"][k]) for k in ref["model"])


# ---------------------------------------------------------------------------- nas search, the same way
SEARCH_ARGS = ["--teacher", "test_sam", "--data", "synthetic:n=24,size=64,seed=5", "nas.search.epochs=3",
               "nas.search.warmup_epochs=1", "nas.search.batch_size=2", "nas.search.widths=[[8,16],[16,24]]",
               "nas.search.layers=[1,1]", "nas.search.neck_width=16", "progress=false", "threads=1",
               "checkpoint_every=2"]


@pytest.fixture(scope="module")
def search_ref(tmp_path_factory):
    """One uninterrupted search (and the cache the killed ones reuse)."""
    from samdistill.config import merge, parse_overrides
    from samdistill.search import nas_search

    root = tmp_path_factory.mktemp("kill_search")
    tree = merge({"method": "nas", "teacher": "test_sam", "data": {"path": "synthetic:n=24,size=64,seed=5"}},
                 parse_overrides(SEARCH_ARGS[4:] + [f"cache.dir={root / 'cache'}"]))
    nas_search(load_config("nas", tree), root / "ref", progress=False)
    return root, torch.load(root / "ref" / "checkpoints" / "last.pt", weights_only=True)


def _launch_search(root, out, resume=False):
    cmd = [sys.executable, "-m", "samdistill", "nas", "search", *SEARCH_ARGS, f"cache.dir={root / 'cache'}",
           "--out", str(out)] + (["--resume"] if resume else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_nas_search_resumes_to_the_same_genotype_and_supernet(tmp_path, search_ref, sig):
    root, ref = search_ref
    out = tmp_path / "search"
    proc = _launch_search(root, out)
    _wait_for_checkpoint(proc, out / "checkpoints" / "last.pt")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert not (out / "genotype.json").exists() and not (out / "summary.json").exists()  # stopped before the end
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert 0 < state["step"] < ref["step"] and len(state["method"]["rows"]) == state["step"]
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and "stopped by SIGTERM" in err
        assert not (out / ".lock").exists()
    else:
        assert proc.returncode == -signal.SIGKILL and (out / ".lock").exists()
    done = _launch_search(root, out, resume=True)
    _, err = done.communicate(timeout=600)
    assert done.returncode == 0, err[-1500:]
    assert ("no longer running; taking it over" in err) == (sig == signal.SIGKILL)
    assert (out / "genotype.json").read_text() == (root / "ref" / "genotype.json").read_text()
    assert (out / "search.csv").read_text() == (root / "ref" / "search.csv").read_text()  # every step's record
    final = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert final["step"] == ref["step"]
    assert all(torch.equal(final["model"][k], ref["model"][k]) for k in ref["model"])  # weights and alpha/beta/gamma
    sn, sn_ref = (torch.load(p / "supernet.pt", weights_only=True)["supernet"] for p in (out, root / "ref"))
    assert sn.keys() == sn_ref.keys() and all(torch.equal(sn[k], sn_ref[k]) for k in sn_ref)
    assert any(k.startswith("alpha") for k in sn_ref)
