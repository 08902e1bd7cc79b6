"""The machine a job runs on: the CPU thread count it uses (``num_threads``) and what a reader needs to
interpret its timings (``machine_info``). Every job records both; they sit beside ``devices.py``, below
``eval/``, ``deploy/`` and the jobs, so none of those imports another for them."""

from __future__ import annotations

import contextlib
import os
import platform
from typing import Any, Iterator

import torch


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[int]:
    """Run a block with ``torch.set_num_threads(n)`` (``None``: leave as is); yields the count used."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


def machine_info() -> dict[str, Any]:
    """What a reader needs to interpret a timing: CPU, cores, threads, torch, device."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info
