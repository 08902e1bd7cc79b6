"""One run per run folder: <out>/.lock while a run writes it; a second run is a one-line error, a lock
left by a dead process is taken over, and --out that is a file is refused."""

import json
import os
import socket
import subprocess
import sys
from datetime import datetime

import pytest

from samdistill.cli import main
from samdistill.config import load_config
from samdistill.distill import distill
from samdistill.errors import UserError
from samdistill.train.runlock import acquire, release, run_lock

HOLD = """import sys, time
from samdistill.train.runlock import run_lock
with run_lock(sys.argv[1], "samdistill distill (held by a test)"):
    print("locked", flush=True)
    time.sleep(300)
"""


@pytest.fixture()
def holder():
    """Start a child process that holds the lock on a folder; yields (start(folder) -> pid)."""
    procs = []

    def start(folder):
        p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "locked"
        return p.pid

    yield start
    for p in procs:
        p.kill()
        p.wait()


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    with pytest.raises(ProcessLookupError):
        os.kill(p.pid, 0)
    return p.pid


def _write_lock(folder, **info):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".lock").write_text(json.dumps({"host": socket.gethostname(), "started": "2020-01-01T00:00:00+00:00",
                                              "command": "samdistill distill", **info}))


def test_lock_records_the_run_and_goes_away_after_it_also_on_error(tmp_path):
    out = tmp_path / "run"
    with run_lock(out, "samdistill distill --out run") as lock:
        info = json.loads((out / ".lock").read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        assert info["command"] == "samdistill distill --out run" and lock.took_over is None
        assert datetime.fromisoformat(info["started"]).tzinfo is not None
    assert not (out / ".lock").exists()
    with pytest.raises(RuntimeError, match="boom"):
        with run_lock(out):
            raise RuntimeError("boom")
    assert not (out / ".lock").exists()


def test_lock_held_by_a_live_process_is_refused_naming_it(tmp_path, holder):
    out = tmp_path / "run"
    pid = holder(out)
    with pytest.raises(UserError) as err:
        acquire(out)
    msg = str(err.value)
    assert f"{out} is in use by another run (pid {pid} on host {socket.gethostname()} since " in msg
    assert f"wait for it or choose another --out (delete {out / '.lock'} only if you are sure" in msg
    assert json.loads((out / ".lock").read_text())["pid"] == pid  # the holder's lock is left alone


def test_stale_lock_of_a_dead_pid_is_taken_over_with_a_note(tmp_path, capsys):
    out = tmp_path / "run"
    dead = _dead_pid()
    _write_lock(out, pid=dead)
    with run_lock(out) as lock:
        assert json.loads((out / ".lock").read_text())["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert f"was left by pid {dead} on host" in err and "no longer running; taking it over" in err
    assert err.count("\n") == 1 and lock.took_over in err
    assert not (out / ".lock").exists()


def test_live_pid_that_is_a_younger_process_is_stale(tmp_path):
    """The pid was reused (e.g. after a container restart): its process started at another time."""
    out = tmp_path / "run"
    _write_lock(out, pid=os.getpid(), proc_start="1")
    lock = acquire(out)
    assert lock.took_over is not None
    release(lock)


def test_lock_from_another_host_or_unreadable_is_never_taken_over(tmp_path):
    out = tmp_path / "run"
    _write_lock(out, pid=_dead_pid(), host="some-other-node")
    with pytest.raises(UserError, match="in use by another run .*on host some-other-node"):
        acquire(out)
    (out / ".lock").write_text("")
    with pytest.raises(UserError, match="unreadable"):
        acquire(out)
    assert (out / ".lock").read_text() == ""


def test_second_distill_on_a_locked_run_exits_2_and_leaves_the_first_untouched(tiny_run, holder, capsys):
    run, args = tiny_run
    before = {f: ((run / f).read_bytes(), (run / f).stat().st_mtime_ns) for f in ("config.yaml", "student.pt")}
    pid = holder(run)
    for extra in (["--resume"], []):
        capsys.readouterr()
        assert main([*args, "--out", str(run), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {run} is in use by another run (pid {pid} on host ") and "\n" not in err
    after = {f: ((run / f).read_bytes(), (run / f).stat().st_mtime_ns) for f in ("config.yaml", "student.pt")}
    assert after == before


def test_resume_into_a_run_with_a_stale_lock_goes_ahead(tiny_run, capsys):
    run, args = tiny_run
    _write_lock(run, pid=_dead_pid())
    assert main([*args, "--out", str(run), "--resume"]) == 0
    assert "no longer running; taking it over" in capsys.readouterr().err
    assert not (run / ".lock").exists()
    assert "taking it over" in (run / "log.txt").read_text()


def test_out_that_is_a_file_exits_2(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    for argv in (["distill", "--teacher", "test_sam", "--student", "test_resnet18", "--data", "synthetic:n=8"],
                 ["nas", "search", "--teacher", "test_sam", "--data", "synthetic:n=8"]):
        capsys.readouterr()
        assert main([*argv, "--out", str(f)]) == 2
        assert capsys.readouterr().err.strip() == f"error: --out {f} is an existing file; give a folder"
    assert f.read_text() == "x"


def test_nas_search_is_locked_and_refuses_a_distill_run(tiny_run, tmp_path, holder, capsys):
    run, _ = tiny_run
    search = ["nas", "search", "--teacher", "test_sam", "--data", "synthetic:n=8", "progress=false"]
    assert main([*search, "--out", str(run)]) == 2
    assert f"{run} holds a distill run (checkpoints/last.pt); choose a new --out" in capsys.readouterr().err
    assert not (run / "genotype.json").exists()
    busy = tmp_path / "search"
    pid = holder(busy)
    assert main([*search, "--out", str(busy)]) == 2
    assert f"in use by another run (pid {pid} " in capsys.readouterr().err
    assert not (busy / "config.yaml").exists()


@pytest.mark.parametrize("resume", [False, True])
def test_distill_never_takes_over_or_resumes_a_search_folder(tmp_path, capsys, resume):
    """A search writes checkpoints/last.pt too (a supernet's); search.csv, there from its start, tells them apart."""
    search = tmp_path / "search"
    (search / "checkpoints").mkdir(parents=True)
    (search / "checkpoints" / "last.pt").write_bytes(b"a supernet's training state")
    (search / "search.csv").write_text("step,epoch,w_loss\n")
    argv = ["distill", "--teacher", "test_sam", "--student", "test_resnet18", "--data", "synthetic:n=8",
            "progress=false", "--out", str(search)] + (["--resume"] if resume else [])
    assert main(argv) == 2
    assert f"{search} holds an architecture search (search.csv); choose a new --out" in capsys.readouterr().err
    assert sorted(p.name for p in search.iterdir()) == ["checkpoints", "search.csv"]  # nothing written


def test_torchrun_ranks_all_stop_when_rank0_finds_the_folder_locked(tmp_path, holder):
    """Only rank 0 takes the lock; its refusal reaches rank 1 too (no rank left waiting)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "run"
    pid = holder(out)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "samdistill", "distill", "--teacher", "test_sam", "--student", "test_resnet18",
           "--data", "synthetic:n=8,size=64", "--out", str(out), "progress=false", "threads=1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode != 0
    # rank 0's refusal; rank 1 raises the same one (torchrun may stop it before it prints)
    assert f"is in use by another run (pid {pid} " in r.stderr, r.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_a_call_that_fails_before_it_holds_a_run_leaves_out_as_it_was(tmp_path, tiny_run, monkeypatch, capsys):
    """Bad data, or a failure before the first checkpoint: the folders and files the call made go again, files that
    were there stay; a run that holds a checkpoint keeps everything (and a bad --data never touches its config)."""
    from samdistill.data.synthetic import write_folder

    bad = write_folder(tmp_path / "bad", 2, size=32)
    (bad / "masks" / "case_0001.png").unlink()  # an image without its mask
    base = ["--teacher", "test_sam", "--data", str(bad), "progress=false"]
    for argv in (["distill", "--student", "test_resnet18"], ["nas", "search"]):
        assert main([*argv, *base, "--out", str(tmp_path / "new" / "deeper" / "run")]) == 2
        assert "image without mask" in capsys.readouterr().err
        assert not (tmp_path / "new").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    assert main(["distill", "--student", "test_resnet18", *base, "--out", str(mine)]) == 2
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]

    def boom(*a, **k):  # a failure after config.yaml, log.txt and the cache, before any checkpoint
        raise RuntimeError("the machine fell over")

    monkeypatch.setattr("samdistill.distill.Trainer.fit", boom)
    cfg = load_config("kdsam", {"teacher": "test_sam", "student": {"name": "test_resnet18"}, "progress": False,
                                "data": {"path": "synthetic:n=8,size=64,seed=2"}, "cache": {"dir": str(tmp_path / "cache")}})
    with pytest.raises(RuntimeError, match="fell over"):
        distill(cfg, mine)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    run, args = tiny_run
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "log.txt"}
    with pytest.raises(RuntimeError, match="fell over"):
        distill(cfg, run, resume=True)  # a run with checkpoints: kept whole
    monkeypatch.undo()
    assert sorted(before) == sorted(p.name for p in run.iterdir() if p.is_file() and p.name != "log.txt")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "log.txt"}
    assert main([*args, "--out", str(run), "--resume", "--data", str(bad)]) == 2
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "log.txt"} == before
