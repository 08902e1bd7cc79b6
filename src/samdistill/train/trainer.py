"""One training loop for every method.

A *method* is a small object: ``parameters()`` (what trains), ``train()``/``eval()``, ``step(batch) ->
{"loss": ..., other named terms}`` and ``validate(loader) -> {"dice": ...}``. A run is a list of
*phases* (e.g. KD SAM's stage 1 and stage 2), each with its own method, data, epochs and optimiser.

The loop: AdamW or SGD, linear warm-up then cosine decay per phase, gradient clipping, bf16 autocast
on CUDA (fp32 on CPU), seeded shuffles, NaN/Inf steps skipped and counted (stop after too many in a
row), validation every ``val_every`` epochs with best-checkpoint keeping, atomic checkpoints at every
epoch end so that ``resume=True`` continues exactly, ``metrics.csv``, and a progress bar.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from samdistill.config import OptimConfig
from samdistill.train.checkpoint import load_training_state, rng_state, save_training_state, set_rng_state

MAX_BAD_STEPS_IN_A_ROW = 5


class Method(Protocol):
    def parameters(self) -> list[torch.nn.Parameter]: ...
    def train(self) -> None: ...
    def eval(self) -> None: ...
    def step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]: ...
    def validate(self, loader: DataLoader) -> dict[str, float]: ...


@dataclass
class Phase:
    name: str
    method: Method
    train_set: Dataset
    val_set: Dataset | None
    epochs: int
    batch_size: int
    optim: OptimConfig
    #: optional ``generator -> batch sampler`` (e.g. two-stream labeled/unlabeled batches)
    batch_sampler: Callable[[torch.Generator], Any] | None = None


class TrainingDiverged(RuntimeError):
    pass


class _Interrupted(Exception):
    """Raised inside an epoch when ``stop_after_steps`` is reached (tests simulate a kill with it)."""


def make_optimizer(params: list[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def warmup_cosine(total_steps: int, cfg: OptimConfig) -> Callable[[int], float]:
    """LR multiplier: linear warm-up over ``warmup_steps``, then cosine down to ``min_lr_ratio``."""
    warm = min(cfg.warmup_steps, max(total_steps - 1, 0))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = (step - warm) / max(1, total_steps - warm)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return f


def warmup_linear(total_steps: int, cfg: OptimConfig) -> Callable[[int], float]:
    """LR multiplier: linear warm-up, then linear decay from 1 to ``min_lr_ratio`` at the last step."""
    warm = min(cfg.warmup_steps, max(total_steps - 1, 0))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = min((step - warm) / max(1, total_steps - warm), 1.0)
        return 1.0 - (1.0 - cfg.min_lr_ratio) * progress

    return f


def schedule(total_steps: int, cfg: OptimConfig) -> Callable[[int], float]:
    return warmup_linear(total_steps, cfg) if cfg.schedule == "linear" else warmup_cosine(total_steps, cfg)


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out


class Trainer:
    """Runs the phases; ``model`` is what gets checkpointed (the student)."""

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        phases: list[Phase],
        out_dir: str | Path,
        seed: int = 0,
        device: str = "cpu",
        val_every: int = 1,
        progress: bool = True,
        on_best: Callable[[torch.nn.Module, dict], None] | None = None,
        on_epoch_end: Callable[[list[dict]], None] | None = None,
        stop_after_steps: int | None = None,
    ) -> None:
        self.model, self.phases, self.out = model, phases, Path(out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.seed, self.device, self.val_every, self.progress = seed, device, val_every, progress
        self.on_best, self.on_epoch_end = on_best, on_epoch_end
        self.stop_after_steps = stop_after_steps  # for tests: simulate an interruption
        self.history: list[dict[str, Any]] = []
        self.best = {"dice": -1.0, "phase": None, "epoch": None}
        self.bad_steps = 0
        self.skipped_steps = 0
        self.global_step = 0

    # ------------------------------------------------------------------ helpers
    def _loader(self, ds: Dataset, bs: int, phase_idx: int, epoch: int, shuffle: bool, batch_sampler=None) -> DataLoader:
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + phase_idx * 10_007 + epoch)
        if batch_sampler is not None:
            return DataLoader(ds, batch_sampler=batch_sampler(g), num_workers=0, collate_fn=collate)
        return DataLoader(ds, batch_size=bs, shuffle=shuffle, generator=g, num_workers=0, collate_fn=collate)

    def _autocast(self):
        if torch.device(self.device).type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def _state(self, phase_idx, epoch_done, opts, scheds) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": [o.state_dict() for o in opts],
            "scheduler": [s.state_dict() for s in scheds],
            "phase": phase_idx,
            "epoch": epoch_done,
            "step": self.global_step,
            "best": dict(self.best),
            "history": list(self.history),
            "skipped_steps": self.skipped_steps,
            "rng": rng_state(),
        }

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = False) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(self.seed)
        start_phase, start_epoch, restored = 0, 0, None
        if resume:
            restored = load_training_state(self.ckpt_dir)
            if restored is not None:
                self.model.load_state_dict(restored["model"])
                start_phase, start_epoch = restored["phase"], restored["epoch"]
                self.global_step, self.best = restored["step"], restored["best"]
                self.history, self.skipped_steps = restored["history"], restored.get("skipped_steps", 0)
        t_run = time.perf_counter()
        for pi, phase in enumerate(self.phases):
            if pi < start_phase or phase.epochs == 0:
                continue
            opts, scheds = self._optimizers(phase)
            first_epoch = 0
            if restored is not None and pi == start_phase:
                first_epoch = start_epoch
                if start_epoch > 0:
                    for o, s in zip(opts, restored["optimizer"]):
                        o.load_state_dict(s)
                    for sc, s in zip(scheds, restored["scheduler"]):
                        sc.load_state_dict(s)
                set_rng_state(restored["rng"])
                restored = None
            for epoch in range(first_epoch, phase.epochs):
                try:
                    row = self._epoch(pi, phase, epoch, opts, scheds)
                except _Interrupted:  # like a kill: nothing of the unfinished epoch is saved
                    return {"interrupted": True, "step": self.global_step}
                self.history.append(row)
                self._write_metrics()
                save_training_state(self._state(pi, epoch + 1, opts, scheds), self.ckpt_dir)
                if self.on_epoch_end:
                    self.on_epoch_end(self.history)
        return {
            "interrupted": False,
            "best": self.best,
            "steps": self.global_step,
            "skipped_steps": self.skipped_steps,
            "seconds": time.perf_counter() - t_run,
            "history": self.history,
        }

    def steps_per_epoch(self, phase: Phase) -> int:
        if phase.batch_sampler is not None:
            return len(phase.batch_sampler(torch.Generator()))
        return math.ceil(len(phase.train_set) / phase.batch_size)

    def _optimizers(self, phase: Phase):
        """One optimiser + LR schedule per parameter group (``method.param_groups()`` when the method
        has several, e.g. SGD for students and Adam for SAM's adapters), else one for everything."""
        if hasattr(phase.method, "param_groups"):
            groups = [(ps, cfg) for _, ps, cfg in phase.method.param_groups()]
        else:
            groups = [([p for p in phase.method.parameters() if p.requires_grad], phase.optim)]
        total = self.steps_per_epoch(phase) * phase.epochs
        opts = [make_optimizer(ps, cfg) for ps, cfg in groups]
        scheds = [torch.optim.lr_scheduler.LambdaLR(o, schedule(total, cfg)) for o, (_, cfg) in zip(opts, groups)]
        self._clip = [cfg.clip_grad for _, cfg in groups]
        return opts, scheds

    def _epoch(self, pi: int, phase: Phase, epoch: int, opts, scheds) -> dict[str, Any]:
        method = phase.method
        method.train()
        loader = self._loader(phase.train_set, phase.batch_size, pi, epoch, shuffle=True,
                              batch_sampler=phase.batch_sampler)
        sums: dict[str, float] = {}
        n_batches, n_images = 0, 0
        t0 = time.perf_counter()
        bar = tqdm(loader, desc=f"{phase.name} epoch {epoch + 1}/{phase.epochs}", unit="batch",
                   disable=not self.progress, leave=False)
        for batch in bar:
            with self._autocast():
                losses = method.step(batch)
            loss = losses["loss"]
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                self.bad_steps += 1
                self.skipped_steps += 1
                if self.bad_steps >= MAX_BAD_STEPS_IN_A_ROW:
                    raise TrainingDiverged(
                        f"{self.bad_steps} non-finite losses in a row in {phase.name} epoch {epoch + 1}; "
                        "lower the learning rate or check the data (no NaN weights were written)"
                    )
                continue
            self.bad_steps = 0
            loss.backward()
            for opt, sched, clip in zip(opts, scheds, self._clip):
                if clip:
                    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], clip)
                opt.step()
                sched.step()
            self.global_step += 1
            n_batches += 1
            n_images += len(batch["id"])
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
            if self.stop_after_steps is not None and self.global_step >= self.stop_after_steps:
                raise _Interrupted
        train_s = time.perf_counter() - t0
        row: dict[str, Any] = {
            "phase": phase.name, "epoch": epoch + 1, "step": self.global_step,
            "lr": opts[0].param_groups[0]["lr"], "train_seconds": train_s,
            "images_per_s": n_images / train_s if train_s > 0 else 0.0,
            **{f"train_{k}": v / max(n_batches, 1) for k, v in sums.items()},
        }
        if phase.val_set is not None and len(phase.val_set) and ((epoch + 1) % self.val_every == 0 or epoch + 1 == phase.epochs):
            method.eval()
            with torch.no_grad(), self._autocast():
                val = method.validate(self._loader(phase.val_set, phase.batch_size, pi, 0, shuffle=False))
            row.update({f"val_{k}": v for k, v in val.items()})
            if val["dice"] > self.best["dice"]:
                self.best = {"dice": val["dice"], "phase": phase.name, "epoch": epoch + 1}
                if self.on_best:
                    self.on_best(self.model, dict(self.best))
        return row

    def _write_metrics(self) -> None:
        keys: list[str] = []
        for r in self.history:
            keys += [k for k in r if k not in keys]
        with open(self.out / "metrics.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(self.history)
