"""One run per run folder: ``<out>/.lock`` while a run writes it.

Two ``distill`` (or ``nas``) processes on one ``--out`` would interleave checkpoints, metrics and the
student and leave a folder that belongs to neither. :func:`run_lock` creates ``<out>/.lock``
atomically (``O_CREAT | O_EXCL``) holding ``{pid, host, started, command}`` (and ``proc_start``, the
kernel's start time of that pid where ``/proc`` has it, to recognise a reused pid) and removes it when the
block ends, also on exceptions and on the trainer's SIGTERM stop. A lock whose process is gone (same
host, pid not running, or the pid now belongs to a younger process) is stale, e.g. after SIGKILL: it
is taken over with a one-line note. Any other lock is a ``UserError`` naming its holder.

Under ``torchrun`` only rank 0 takes the lock (the ranks of one run must not lock each other out);
whatever rank 0 decides (locked, in use, refused by ``check``) is broadcast, so every rank goes on or
stops with the same one-line error instead of waiting for a rank that has left.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from samdistill.errors import UserError

LOCK_NAME = ".lock"

#: files that mean a folder already holds a (trained or finished) run, not just a started one
RUN_FILES = ("checkpoints/last.pt", "checkpoints/last.prev.pt", "checkpoints/best.pt", "student.pt", "metrics.csv",
             "summary.json", "genotype.json")
#: files that only an architecture search writes (``search.csv`` from its start): a folder holding one is a
#: search's, which ``nas search --resume`` continues and a distill run never takes over (nor resumes)
SEARCH_FILES = ("genotype.json", "search.csv")


@dataclass(frozen=True)
class RunLock:
    path: Path
    info: dict[str, Any]
    #: one line when a stale lock was taken over (also printed to stderr), else None
    took_over: str | None = None
    #: the folders ``acquire`` made (``out`` first, then parents made with it): ``release`` removes them again
    #: while they are empty (a call that failed before it wrote anything)
    made_dirs: tuple[Path, ...] = ()


def held_run(out: Path, files: tuple[str, ...] = RUN_FILES) -> Path | None:
    """The first of ``files`` present in ``out`` (it holds a run), or None."""
    return next((out / f for f in files if (out / f).exists()), None)


def _proc_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), to tell a reused pid from the one that locked."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def _alive(info: dict[str, Any]) -> bool:
    pid = int(info["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    try:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False  # exited, not yet reaped by its parent
    except (OSError, IndexError):
        pass
    then, now = info.get("proc_start"), _proc_start(pid)
    return not (then is not None and now is not None and str(then) != now)


def _holder(info: dict[str, Any]) -> str:
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')} since {info.get('started', '?')}"


def _read(path: Path, wait_s: float = 1.0) -> dict[str, Any] | None:
    """The lock's contents; None if it vanished; {} if it stays unreadable (a writer between create
    and write gets ``wait_s`` to finish)."""
    t0 = time.monotonic()
    while True:
        try:
            info = json.loads(path.read_text())
            if isinstance(info, dict) and isinstance(info.get("pid"), int):
                return info
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            pass
        if time.monotonic() - t0 > wait_s:
            return {}
        time.sleep(0.05)


def _create(path: Path, info: dict[str, Any]) -> None:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        os.write(fd, json.dumps(info).encode())
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _serialised(folder: Path) -> Iterator[None]:
    """Exclusive ``flock`` on the folder itself while a stale lock is judged and replaced, so two
    runs that both find it stale cannot both take it over (the second then sees the first's lock)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): takeovers are not serialised
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def acquire(out: str | os.PathLike, command: str | None = None, flag: str = "--out") -> RunLock:
    """Create ``<out>/.lock`` (``out`` is made if missing); ``UserError`` if a live run holds it."""
    out = Path(out)
    made = tuple(d for d in (out, *out.parents) if not d.exists())
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": command or shlex.join(["samdistill", *sys.argv[1:]]), "proc_start": _proc_start(os.getpid())}
    busy = (f"{out} is in use by another run ({{}}); wait for it or choose another {flag} "
            f"(delete {path} only if you are sure no run is using it)")
    for _ in range(3):
        try:
            _create(path, info)
            return RunLock(path, info, made_dirs=made)
        except FileExistsError:
            pass
        with _serialised(out):
            held = _read(path)
            if held is None:  # released meanwhile: try again
                continue
            if not held:
                raise UserError(busy.format(f"{path} exists but is unreadable"))
            if held.get("host") != info["host"] or _alive(held):
                raise UserError(busy.format(_holder(held)))
            note = (f"note: {path} was left by {_holder(held)}, which is no longer running; taking it over")
            os.unlink(path)
            try:
                _create(path, info)
            except FileExistsError:  # a run that did not need the takeover got in first
                now = _read(path) or {}
                raise UserError(busy.format(_holder(now))) from None
            print(note, file=sys.stderr)
            return RunLock(path, info, took_over=note)
    raise UserError(busy.format(f"{path} keeps coming and going"))


def release(lock: RunLock) -> None:
    """Remove the lock if it is still ours (not one that someone deleted and another run re-made)."""
    held = _read(lock.path, wait_s=0)
    if held and held.get("pid") == lock.info["pid"] and held.get("started") == lock.info["started"]:
        try:
            lock.path.unlink()
        except FileNotFoundError:
            pass
        for d in lock.made_dirs:
            try:
                d.rmdir()  # only when empty: nothing but the lock was ever written there
            except OSError:
                break


@contextmanager
def run_lock(out: str | os.PathLike, command: str | None = None, *, check: Callable[[], None] | None = None,
             flag: str = "--out") -> Iterator[RunLock | None]:
    """Hold ``<out>/.lock`` for the block (rank 0 only under torchrun; other ranks get None).

    ``check`` runs on rank 0 with the lock held, before anything is written (e.g. "this folder holds
    a run; add --resume"); if it raises, the lock is released and every rank raises.
    """
    from samdistill.train import distributed as dist_utils

    ctx = dist_utils.context()
    lock: RunLock | None = None
    failure: BaseException | None = None
    if ctx.is_main:
        try:
            lock = acquire(out, command, flag)
            if check is not None:
                check()
        except Exception as exc:  # noqa: BLE001 - told to the other ranks, then re-raised
            failure = exc
            if lock is not None:
                release(lock)
    if ctx.enabled:
        import torch.distributed as dist

        msg = [None if failure is None else (isinstance(failure, UserError), str(failure))]
        dist.broadcast_object_list(msg, src=0)
        if not ctx.is_main and msg[0] is not None:
            is_user, text = msg[0]
            raise UserError(text) if is_user else RuntimeError(f"rank 0 failed to start the run: {text}")
    if failure is not None:
        raise failure
    try:
        yield lock
    finally:
        if lock is not None:
            release(lock)


#: what a run or search writes before it holds a checkpoint: undone when that first call fails
PRE_RUN_FILES = ("config.yaml", "log.txt", "split.json", "labeled.json", "search.csv")


@contextmanager
def undo_if_failed_early(out: Path, main: bool = True) -> Iterator[None]:
    """Inside :func:`run_lock`, around a job writing into ``out``: when the job fails (bad data, a wrong folder,
    Ctrl-C) while ``out`` holds no checkpoint or run file, the ``PRE_RUN_FILES`` and the empty folders this call made
    there go again, so ``out`` is left as it was (``release`` then removes ``out`` itself when ``acquire`` made it).
    Files that were there before are kept. ``main``: only rank 0 tidies (under torchrun)."""
    def present() -> tuple[set[str], set[Path]]:
        if not out.is_dir():
            return set(), set()
        return {n for n in PRE_RUN_FILES if (out / n).exists()}, {d for d in out.iterdir() if d.is_dir()}

    files_before, dirs_before = present()
    try:
        yield
    except BaseException:
        if main and out.is_dir() and held_run(out, ("checkpoints/last.pt", *RUN_FILES)) is None:
            files_now, dirs_now = present()
            for name in files_now - files_before:
                (out / name).unlink(missing_ok=True)
            for d in dirs_now - dirs_before:  # (checkpoints/, plots/: made empty, or left alone)
                if not any(d.iterdir()):
                    d.rmdir()
        raise
