"""The torch device a run asks for (``device=cpu|cuda|cuda:N|mps``), checked before any work starts.

``valid_device_name`` checks the spelling (config validation, works on any machine, so a GPU run's
config still loads on a laptop); ``check_device`` also checks that this machine has it, and is called
where a job starts (distill, nas search, eval). Both raise :class:`UserError` with one line.
"""

from __future__ import annotations

import torch

from samdistill.errors import UserError

KINDS = ("cpu", "cuda", "mps")


def valid_device_name(name: str) -> str:
    """``name`` if torch parses it as a cpu / cuda / mps device, else a one-line :class:`UserError`."""
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        dev = None
    if dev is None or dev.type not in KINDS:
        raise UserError(f"unknown device {name!r}; use cpu, cuda, cuda:N or mps")
    return name


def check_device(name: str) -> str:
    """``name`` when this machine has that device; else a one-line :class:`UserError` saying what it has."""
    dev = torch.device(valid_device_name(name))
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r}: torch {torch.__version__} sees no CUDA GPU on this machine; "
                            "use device=cpu")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise UserError(f"device {name!r}: this machine has {n} CUDA GPU(s) (cuda:0..cuda:{n - 1})")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {name!r}: Apple's MPS backend is not available here; use device=cpu")
    return name


PRECISIONS = ("auto", "fp32", "bf16")


def training_dtype(device: str, precision: str = "auto") -> torch.dtype:
    """The arithmetic of a run's training and validation forwards on ``device`` (the ``precision`` key): bf16
    autocast for ``bf16``, and for ``auto`` on CUDA; fp32 otherwise. Weights stay fp32 either way. ``bf16`` on
    mps (no bf16 autocast there) or an unknown precision is a one-line :class:`UserError`."""
    if precision not in PRECISIONS:
        raise UserError(f"precision must be auto, fp32 or bf16, not {precision!r}")
    kind = torch.device(valid_device_name(device)).type
    if precision == "bf16" and kind == "mps":
        raise UserError("precision=bf16 trains on cpu or cuda; on mps use precision=auto (fp32)")
    return torch.bfloat16 if precision == "bf16" or (precision == "auto" and kind == "cuda") else torch.float32
