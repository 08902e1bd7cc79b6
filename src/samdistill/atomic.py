"""Atomic outputs: a reader sees the old file (or folder) or the new one, never half of one."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temp file in the same folder, fsync, rename over ``path``, fsync the folder."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f"{p.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)
    dfd = os.open(p.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return p


def check_out_dir(out: str | os.PathLike, flag: str = "--out") -> Path:
    """``UserError`` unless ``out`` can be a folder we write: not an existing file, and the nearest
    existing folder above it (or itself) writable. Returns ``out`` as a ``Path``."""
    from samdistill.errors import UserError

    p = Path(out)
    if p.exists() and not p.is_dir():
        raise UserError(f"{flag} {p} is an existing file; give a folder")
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UserError(f"{flag} {p}: {probe} is a file, so no folder can be made under it")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {p}: {probe} is not writable (read-only mount or no permission)")
    return p


def check_replace_target(out: str | os.PathLike, *, keep: Iterable[str | os.PathLike | None] = (),
                         force: bool = False, flag: str = "--out", sub: str = "out") -> None:
    """``UserError`` when replacing the folder ``out`` would remove what the command reads or the user stands in:
    the current folder (or one above it), or, with ``force``, a folder that is or holds one of ``keep`` (the
    model, its checkpoint, the input images, the prompt file). ``sub`` names the subfolder the message suggests."""
    from samdistill.errors import UserError

    out = Path(out)
    target = out.resolve()
    cwd = Path.cwd().resolve()
    if cwd == target or target in cwd.parents:
        raise UserError(f"{flag} {out} is the current folder or one above it; give a folder of its own, "
                        f"e.g. {flag} {out / sub}")
    if not force:
        return  # a non-empty out is refused by staged_dir anyway
    for k in keep:
        if k is None or not Path(k).exists():
            continue
        kp = Path(k).resolve()
        if kp == target or target in kp.parents:
            what = "is the folder" if kp == target else "holds"
            raise UserError(f"{flag} {out} {what} {k}, which this command reads; --force would delete it. "
                            f"Choose another folder, e.g. {flag} {out / sub}")


def check_staged_target(out: str | os.PathLike, *, force: bool = False, flag: str = "--out",
                        owned_by: str | None = None, keep: Iterable[str | os.PathLike | None] = (),
                        sub: str = "out") -> Path:
    """The checks :func:`staged_dir` makes before any work, for a command to make them before it loads anything:
    ``out`` can be written (:func:`check_out_dir`), is empty unless ``force``, and may be replaced
    (:func:`check_replace_target`). Returns ``out`` as a ``Path``."""
    from samdistill.errors import UserError

    p = check_out_dir(out, flag)
    check_replace_target(p, keep=keep, force=force, flag=flag, sub=sub)
    if p.is_dir() and any(p.iterdir()) and not force:
        who = f" (written by {owned_by} or something else)" if owned_by else ""
        raise UserError(f"{flag} {p} is not empty{who}; choose a new folder or pass --force to replace it")
    return p


@contextmanager
def staged_dir(out: str | os.PathLike, *, force: bool = False, flag: str = "--out",
               owned_by: str | None = None, keep: Iterable[str | os.PathLike | None] = (),
               sub: str = "out") -> Iterator[Path]:
    """Build an output folder whole or not at all.

    Yields a temporary sibling of ``out``; when the block succeeds it is renamed into place, when it
    raises (or is interrupted) it is removed and ``out`` is left as it was. An existing non-empty
    ``out`` is refused unless ``force`` (then it is replaced as a whole, after the new one is complete),
    and never replaced when it is the current folder or holds one of ``keep`` (what the command reads:
    :func:`check_replace_target`). ``owned_by`` names the command in the refusal message.
    """
    p = check_staged_target(out, force=force, flag=flag, owned_by=owned_by, keep=keep, sub=sub)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".partial", dir=p.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if p.exists():  # replace as a whole: move the old folder aside first, drop it once the new one is in
        old = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".old", dir=p.parent))
        os.rmdir(old)
        os.replace(p, old)
        os.replace(tmp, p)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, p)
