"""Atomic training checkpoints: write a temp file, fsync, rename; keep the previous one.

``last.pt`` holds everything ``--resume`` needs (model, optimiser, scheduler, RNG states, phase,
epoch, step, best score, history), all of it tensors and plain Python values so that it loads with
``torch.load(weights_only=True)``: a run folder is data, and a file placed in it must not be able to
run code on ``--resume``. A torn or truncated ``last.pt`` is detected on load and the previous one
(``last.prev.pt``) is used instead; a file that is readable but not a training state (or that asks to
import code) is refused outright, never skipped over.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samdistill.atomic import atomic_torch_save
from samdistill.errors import CheckpointError

#: the numpy pieces that a RandomState tuple pickles to; allowed (with ``weights_only=True``) only so
#: that ``last.pt`` files written before the RNG state was stored as tensors still resume
_LEGACY_NUMPY_GLOBALS = [np.ndarray, np.dtype, type(np.dtype(np.uint32)),
                         (np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct]


def rng_state() -> dict[str, Any]:
    """Every RNG the training touches, as tensors and plain values (``weights_only`` loadable)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "internal": [int(v) for v in internal], "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state` (also the tuple form of checkpoints written before it was plain)."""
    torch.set_rng_state(state["torch"])
    npy = state["numpy"]
    if isinstance(npy, dict):
        npy = (npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
               npy["cached_gaussian"])
    np.random.set_state(npy)
    py = state["python"]
    if isinstance(py, dict):
        py = (py["version"], tuple(py["internal"]), py["gauss_next"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def plain(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays turned into Python numbers/tensors, which ``weights_only``
    loading accepts (for what methods report: history rows, best score, partial sums)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj) if type(obj) in (list, tuple) else [plain(v) for v in obj]
    return obj


def save_training_state(state: dict[str, Any], ckpt_dir: Path) -> Path:
    """Write ``last.pt``; the one it replaces becomes ``last.prev.pt``."""
    last = ckpt_dir / "last.pt"
    if last.exists():
        os.replace(last, ckpt_dir / "last.prev.pt")
    atomic_torch_save(state, last)
    return last


def _refused(p: Path, why: str) -> CheckpointError:
    then = " (--resume then falls back to last.prev.pt)" if p.name == "last.pt" else ""
    return CheckpointError(
        f"{p} is not a samdistill training state and was refused ({why}); nothing was resumed: delete it "
        f"only if you know where it came from{then}, or start the run again with a new --out"
    )


def _load_one(p: Path) -> dict[str, Any]:
    """The training state in ``p``; ``CheckpointError`` for a foreign file, other errors for a torn one."""
    allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    try:
        with warnings.catch_warnings():
            # a raw pickle of another protocol than torch.save's: torch warns before its weights_only unpickler
            # reads it; the refusal below is what the user needs to see, not that warning
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            if allow is not None:
                with allow(_LEGACY_NUMPY_GLOBALS):
                    state = torch.load(p, map_location="cpu", weights_only=True)
            else:
                state = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refused an instruction or a global: the file wants to build arbitrary objects,
        # which is how a pickle runs code; a torn zip fails earlier, as RuntimeError/EOFError
        m = re.search(r"GLOBAL (\S+) was not an allowed global", str(exc))
        what = f"loading it would import {m.group(1)}" if m else "it is a pickle that weights_only loading rejects"
        raise _refused(p, f"{what}, so it may hold code; it was not loaded") from None
    if not (isinstance(state, dict) and "model" in state and "phase" in state):
        kind = f"a dict with keys {sorted(map(str, state))[:6]}" if isinstance(state, dict) else type(state).__name__
        raise _refused(p, f"it holds {kind}, not model/phase/optimiser state")
    return state


def load_training_state(ckpt_dir: Path) -> dict[str, Any] | None:
    """The newest readable training state in ``ckpt_dir`` (``last.pt``, else ``last.prev.pt``), or None.

    A torn file (truncated, empty, not a zip) is skipped for the previous one; a foreign one (readable
    but not a training state, or a pickle that asks for code) raises ``CheckpointError`` at once.
    """
    errors = []
    for name in ("last.pt", "last.prev.pt"):
        p = ckpt_dir / name
        if not p.exists():
            continue
        try:
            return _load_one(p)
        except CheckpointError:
            raise
        except Exception as exc:  # torn / truncated: fall back to the previous checkpoint
            errors.append(f"{p}: unreadable, likely torn or truncated ({type(exc).__name__})")
    if errors:
        raise CheckpointError(f"no usable checkpoint to resume from in {ckpt_dir} ({'; '.join(errors)})")
    return None
