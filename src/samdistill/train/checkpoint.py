"""Atomic training checkpoints: write a temp file, fsync, rename; keep the previous one.

``last.pt`` holds everything ``--resume`` needs (model, optimiser, scheduler, RNG states, phase,
epoch, step, best score, history). A torn or corrupt ``last.pt`` is detected on load and the previous
one (``last.prev.pt``) is used instead.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samdistill.atomic import atomic_torch_save
from samdistill.errors import CheckpointError


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(state: dict[str, Any], ckpt_dir: Path) -> Path:
    """Write ``last.pt``; the one it replaces becomes ``last.prev.pt``."""
    last = ckpt_dir / "last.pt"
    if last.exists():
        os.replace(last, ckpt_dir / "last.prev.pt")
    atomic_torch_save(state, last)
    return last


def load_training_state(ckpt_dir: Path) -> dict[str, Any] | None:
    """The newest readable training state in ``ckpt_dir`` (``last.pt``, else ``last.prev.pt``), or None."""
    errors = []
    for name in ("last.pt", "last.prev.pt"):
        p = ckpt_dir / name
        if not p.exists():
            continue
        try:
            state = torch.load(p, map_location="cpu", weights_only=False)
            if isinstance(state, dict) and "model" in state and "phase" in state:
                return state
            errors.append(f"{p}: not a training state")
        except Exception as exc:
            errors.append(f"{p}: {type(exc).__name__}")
    if errors:
        raise CheckpointError(f"no usable checkpoint to resume from in {ckpt_dir} ({'; '.join(errors)})")
    return None
