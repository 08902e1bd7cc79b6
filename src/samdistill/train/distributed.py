"""Data-parallel training with PyTorch's own engine (``torch.distributed`` + DDP), under ``torchrun``.

``torchrun --nproc_per_node N -m samdistill distill ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``;
:func:`init_from_env` then joins the process group (``nccl`` on CUDA, ``gloo`` on CPU). The trainer
shards every epoch across ranks (disjoint, seeded), wraps only what trains in
:class:`~torch.nn.parallel.DistributedDataParallel` (teachers stay outside), all-reduces the epoch's
metrics, and lets rank 0 alone write files. Without ``torchrun`` everything here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(device: str = "cpu") -> DistContext:
    """Join the process group when launched by torchrun (idempotent); returns this rank's context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        cuda = torch.device(device).type == "cuda"
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return context()


def context() -> DistContext:
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return DistContext()


def barrier() -> None:
    if context().enabled:
        dist.barrier()


def all_reduce_sum(values: dict[str, float]) -> dict[str, float]:
    """Sum each value over ranks (same keys, same order, on every rank)."""
    if not context().enabled or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any rank (e.g. one rank got SIGTERM)."""
    if not context().enabled:
        return flag
    t = torch.tensor([1 if flag else 0])
    dist.all_reduce(t)
    return bool(t.item())


def broadcast_module(module: nn.Module) -> None:
    """Give every rank rank 0's parameters and buffers."""
    if context().enabled:
        for t in module.state_dict().values():
            dist.broadcast(t, 0)


def average_gradients(params: list[nn.Parameter]) -> None:
    """All-reduce (mean) the gradients of ``params`` over ranks, in one flat buffer (for loops that
    step several parameter sets separately, e.g. the architecture search's two optimisers)."""
    ctx = context()
    if not ctx.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    i = 0
    for g in grads:
        g.copy_(flat[i : i + g.numel()].view_as(g))
        i += g.numel()


class ShardedBatchSampler:
    """Rank ``r`` of ``w`` takes batches ``r, r + w, ...`` of a batch sampler; every rank gets the same
    number of batches (the remainder is dropped) so that they stay in lockstep."""

    def __init__(self, base: Any, rank: int, world_size: int) -> None:
        self.base, self.rank, self.world = base, rank, world_size

    def __len__(self) -> int:
        return len(self.base) // self.world

    def __iter__(self) -> Iterator[list[int]]:
        n = len(self)
        for i, batch in enumerate(self.base):
            if i >= n * self.world:
                return
            if i % self.world == self.rank:
                yield batch


class StepModule(nn.Module):
    """What DDP wraps: the trainable model, whose forward is the method's training step."""

    def __init__(self, model: nn.Module, method: Any) -> None:
        super().__init__()
        self.model = model
        self._method = method

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self._method.step(batch)


def wrap(model: nn.Module, method: Any, device: str) -> nn.Module:
    """DDP around the trainable model (gradients all-reduced during backward)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [torch.cuda.current_device()] if torch.device(device).type == "cuda" else None
    return DDP(StepModule(model, method), device_ids=ids, find_unused_parameters=True)
