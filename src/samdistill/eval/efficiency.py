"""Parameters, MACs (torch.utils.flop_counter) and latency, measured the same way for every model.

MACs = FLOPs / 2 at the model's input size, batch 1 (encoder; decoder per prompt). Latency: 3
warm-up runs then the median of >= 20, with the thread count stated (DESIGN.md section 8).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from samdistill.machine import num_threads


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def count_macs(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Multiply-accumulates of one call of ``fn`` (FLOPs/2 as counted by PyTorch's FlopCounterMode)."""
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops() // 2)


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def time_ms(fn: Callable[[], Any], *, warmup: int = 3, repeats: int = 20, device: str = "cpu") -> dict[str, float]:
    """Median, 10th and 90th percentile of ``repeats`` timed calls after ``warmup`` calls, in ms."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    q = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
    return {"median": statistics.median(times), "p10": q[0], "p90": q[-1], "n": len(times)}


@torch.no_grad()
def promptable_latency(model: nn.Module, *, warmup: int = 3, repeats: int = 20, device: str = "cpu") -> dict[str, float]:
    """Batch-1 latency (ms, medians of :func:`time_ms`) of a promptable model on a blank image at its input size:
    ``encoder_ms``, ``decoder_ms`` (one box, on the cached embedding) and ``encoder_plus_decoder_ms``."""
    s = model.input_size
    x = torch.zeros(1, 3, s, s, device=device)
    box = torch.tensor([[s * 0.25, s * 0.3, s * 0.7, s * 0.8]], device=device)
    emb = model.encode(x)
    enc = time_ms(lambda: model.encode(x), warmup=warmup, repeats=repeats, device=device)["median"]
    dec = time_ms(lambda: model.decode(emb, boxes=box), warmup=warmup, repeats=repeats, device=device)["median"]
    return {"encoder_ms": enc, "decoder_ms": dec, "encoder_plus_decoder_ms": enc + dec}


def latency_pair(teacher: nn.Module, student: nn.Module, *, threads: int | None = None, warmup: int = 3,
                 repeats: int = 20, device: str = "cpu") -> dict[str, dict[str, float]]:
    """:func:`promptable_latency` of teacher and student timed back to back in this process with the same
    ``threads``, and ``ratio``: teacher / student of each figure. Absolute times on a shared machine are noisy;
    the ratio of two timings taken together much less (DESIGN.md section 8)."""
    with num_threads(threads):
        out = {role: promptable_latency(m, warmup=warmup, repeats=repeats, device=device)
               for role, m in (("teacher", teacher), ("student", student))}
    out["ratio"] = {k: out["teacher"][k] / out["student"][k] for k in out["teacher"]}
    return out


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily set ``requires_grad=False`` on every parameter (FlopCounterMode's module tracker
    trips over views of trainable parameters taken under no_grad)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in flags:
            p.requires_grad_(f)


@torch.no_grad()
def promptable_macs(model: nn.Module) -> dict[str, float]:
    """GMACs of the encoder at the input size (batch 1) and of the decoder for one box prompt."""
    with frozen(model):
        return _promptable_macs(model)


@torch.no_grad()
def model_macs(model: nn.Module) -> dict[str, float]:
    """``promptable_macs`` for promptable models; ``{"total_gmacs"}`` of one forward for prompt-free ones."""
    if getattr(model, "kind", None) != "promptfree":
        return promptable_macs(model)
    with frozen(model):
        s = model.input_size
        x = torch.zeros(1, 3, s, s, device=next(model.parameters()).device)
        return {"encoder_gmacs": 0.0, "decoder_gmacs": 0.0, "total_gmacs": count_macs(model, x) / 1e9}


def _promptable_macs(model: nn.Module) -> dict[str, float]:
    dev = next(model.parameters()).device
    s = model.input_size
    x = torch.zeros(1, 3, s, s, device=dev)
    enc = count_macs(model.encode, x)
    emb = model.encode(x)
    box = torch.tensor([[s * 0.25, s * 0.25, s * 0.75, s * 0.75]], device=dev)
    dec = count_macs(model.decode, emb, boxes=box)
    return {"encoder_gmacs": enc / 1e9, "decoder_gmacs": dec / 1e9}


def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_memory_mb(fn: Callable[[], Any]) -> float | None:
    """Peak extra resident memory (MiB) while ``fn`` runs on CPU: resets the process's RSS high-water
    mark (Linux ``/proc/self/clear_refs``), runs ``fn``, reads ``VmHWM - VmRSS(before)``. None where
    the kernel does not offer it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return None
    before = _proc_status_kb("VmRSS")
    fn()
    peak = _proc_status_kb("VmHWM")
    if before is None or peak is None:
        return None
    return max(0, peak - before) / 1024
