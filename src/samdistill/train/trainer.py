"""One training loop for every method.

A *method* is a small object: ``parameters()`` (what trains), ``train()``/``eval()``, ``step(batch) ->
{"loss": ..., other named terms}`` and ``validate(loader) -> {"dice": ...}``. A run is a list of
*phases* (e.g. KD SAM's stage 1 and stage 2), each with its own method, data, epochs and optimiser.

Optional hooks a method may have (the loop names no method; it looks for these):

- ``param_groups() -> [(name, params, OptimConfig)]``: one optimiser + schedule per group;
- ``updates(batch)``, instead of ``step``: a generator of ``(group name, losses)``, several updates per
  batch, each back-propagated and applied to its group's optimiser before the generator goes on, so a later
  update sees the earlier one's weights (first-order DARTS: a weight step, then an architecture step).
  Its loss terms are reported as ``<group>_<term>``; its gradients are averaged over ranks (no DDP
  wrapper, which assumes one backward per forward);
- ``set_epoch(epoch)``: called before each epoch's data is drawn (also the one a resume continues);
- ``after_step()``: called after each applied optimiser step (not after a skipped non-finite one), e.g. to
  move an EMA teacher (Mean Teacher) towards the new weights;
- ``state_dict()`` / ``load_state_dict(state)``: the method's own record (plain values), kept in the
  checkpoint so that a resumed run carries on with it.

A phase runs ``epochs`` epochs (more whole ones where ``min_steps`` batches need them), or, with ``max_steps``,
exactly that many batches (optimiser steps): as many epochs as that takes, the last one cut short, and the LR
schedule spans ``max_steps``.

The loop: AdamW or SGD, linear warm-up then cosine decay per phase, gradient clipping, bf16 autocast
on CUDA (fp32 on CPU unless ``precision="bf16"``), seeded shuffles, NaN/Inf steps skipped and counted (stop after too many in a
row), validation every ``val_every`` epochs with best-checkpoint keeping, atomic checkpoints at every
epoch end (and every ``checkpoint_every`` steps) so that ``resume=True`` continues exactly, also from
inside an epoch; SIGTERM saves a checkpoint at the next step boundary and stops cleanly;
``metrics.csv``, and a progress bar. Under ``torchrun`` the epoch is sharded across ranks, the
trainable model is wrapped in DDP, metrics are all-reduced, and only rank 0 writes files.
"""

from __future__ import annotations

import csv
import itertools
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from samdistill.config import OptimConfig
from samdistill.devices import training_dtype
from samdistill.errors import CheckpointError
from samdistill.train import distributed as dist_utils
from samdistill.train.checkpoint import load_training_state, plain, rng_state, save_training_state, set_rng_state

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
    #: a budget of optimiser steps (batches) in place of ``epochs``: the phase runs
    #: ceil(max_steps / steps per epoch) epochs, the last one cut short, and its schedule spans max_steps
    max_steps: int | None = None
    #: at least this many batches, in whole epochs (ignored with ``max_steps``): see :meth:`floored_epochs`
    min_steps: int | None = None

    def floored_epochs(self) -> int:
        """``epochs``, or more whole epochs where ``min_steps`` batches need them; 0 epochs stay 0 (a phase left
        off). Batches are counted at one process (ceil(len(train_set) / batch_size) an epoch), so a torchrun run
        trains as many epochs as a single-process one."""
        n = len(self.train_set)
        if self.min_steps is None or self.epochs == 0 or n == 0:
            return self.epochs
        return max(self.epochs, math.ceil(self.min_steps / math.ceil(n / self.batch_size)))


class TrainingDiverged(RuntimeError):
    pass


class _Interrupted(Exception):
    """Raised inside an epoch when ``stop_after_steps`` is reached (tests simulate a kill with it) or
    after SIGTERM (then a checkpoint has been written first)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def make_optimizer(params: list[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    betas = {"betas": tuple(cfg.betas)} if cfg.betas is not None else {}
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **betas)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **betas)


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
    """Runs the phases; ``model`` is what gets checkpointed (everything that trains)."""

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
        checkpoint_every: int | None = None,
        precision: str = "auto",
        resume_hint: str = "",
    ) -> None:
        self.model, self.phases, self.out = model, phases, Path(out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.seed, self.device, self.val_every = seed, device, val_every
        self.on_best, self.on_epoch_end = on_best, on_epoch_end
        self.stop_after_steps = stop_after_steps  # for tests: simulate a kill (nothing saved)
        self.checkpoint_every = checkpoint_every
        self.dtype = training_dtype(device, precision)  # the forwards' arithmetic (bf16 autocast or fp32)
        self.resume_hint = resume_hint  # the method's likely cause of a checkpoint of another architecture
        self.ctx = dist_utils.context()
        self.progress = progress and self.ctx.is_main
        self.history: list[dict[str, Any]] = []
        # wall time of the loops of earlier calls of a resumed run, to their last checkpoint (None: a checkpoint from
        # before this was recorded, so the run's time over all calls is unknown)
        self.seconds_before: float | None = 0.0
        self._t_run: float | None = None
        self.best = {"dice": -1.0, "phase": None, "epoch": None}
        self.bad_steps = 0
        self.skipped_steps = 0
        self.global_step = 0
        self._stop_signal: str | None = None  # "SIGTERM" / "SIGINT" once a signal asked the run to stop

    # ------------------------------------------------------------------ helpers
    def _epoch_generator(self, phase_idx: int, epoch: int) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + phase_idx * 10_007 + epoch)
        return g

    def _train_loader(self, phase: Phase, phase_idx: int, epoch: int) -> DataLoader:
        """This rank's share of the epoch, in a seeded order (disjoint across ranks)."""
        g = self._epoch_generator(phase_idx, epoch)
        ctx = self.ctx
        if phase.batch_sampler is not None:
            bs = phase.batch_sampler(g)
            if ctx.enabled:
                bs = dist_utils.ShardedBatchSampler(bs, ctx.rank, ctx.world_size)
            return DataLoader(phase.train_set, batch_sampler=bs, num_workers=0, collate_fn=collate)
        if ctx.enabled:
            from torch.utils.data.distributed import DistributedSampler

            sampler = DistributedSampler(phase.train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                         seed=int(torch.randint(0, 2**31 - 1, (1,), generator=g)), drop_last=True)
            return DataLoader(phase.train_set, batch_size=phase.batch_size, sampler=sampler, num_workers=0,
                              collate_fn=collate)
        return DataLoader(phase.train_set, batch_size=phase.batch_size, shuffle=True, generator=g, num_workers=0,
                          collate_fn=collate)

    def _val_loader(self, phase: Phase) -> DataLoader:
        # every rank validates the whole set: identical scores, identical best-checkpoint decisions
        return DataLoader(phase.val_set, batch_size=phase.batch_size, shuffle=False, num_workers=0, collate_fn=collate)

    def _autocast(self):
        """bf16 autocast where ``training_dtype`` says so (CUDA or CPU), else a no-op context."""
        kind = torch.device(self.device).type
        bf16 = self.dtype == torch.bfloat16
        return torch.autocast(kind if bf16 else "cpu", dtype=torch.bfloat16, enabled=bf16)

    def _state(self, phase_idx, epoch, opts, scheds, batch_in_epoch: int = 0, partial: dict | None = None) -> dict[str, Any]:
        """``epoch``: epochs finished in this phase; ``batch_in_epoch`` > 0 for a mid-epoch state.

        Only tensors and plain values (``plain`` for what methods report), so that ``--resume`` can
        load it with ``weights_only=True``."""
        return {
            "model": self.model.state_dict(),
            "optimizer": [o.state_dict() for o in opts],
            "scheduler": [s.state_dict() for s in scheds],
            "phase": phase_idx,
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "partial": plain(partial),
            "step": self.global_step,
            "best": plain(dict(self.best)),
            "history": plain(list(self.history)),
            "skipped_steps": self.skipped_steps,
            "seconds": self._run_seconds(),
            "rng": rng_state(),
            "method": plain(self.phases[phase_idx].method.state_dict())
            if hasattr(self.phases[phase_idx].method, "state_dict") else None,
        }

    def _run_seconds(self) -> float | None:
        """The training loop's wall time over every call of this run, each earlier call to its last checkpoint;
        None after resuming a checkpoint that did not record it."""
        if self.seconds_before is None:
            return None
        return self.seconds_before + (0.0 if self._t_run is None else time.perf_counter() - self._t_run)

    def _save(self, state: dict[str, Any]) -> None:
        if self.ctx.is_main:
            save_training_state(state, self.ckpt_dir)
        dist_utils.barrier()

    def steps_per_epoch(self, phase: Phase) -> int:
        w = self.ctx.world_size
        if phase.batch_sampler is not None:
            return len(phase.batch_sampler(torch.Generator())) // w
        return math.ceil((len(phase.train_set) // w if w > 1 else len(phase.train_set)) / phase.batch_size)

    def phase_epochs(self, phase: Phase) -> int:
        """Epochs the phase runs: as many as ``max_steps`` batches need, else ``epochs`` raised to ``min_steps``."""
        if phase.max_steps is None:
            return phase.floored_epochs()
        return math.ceil(phase.max_steps / max(self.steps_per_epoch(phase), 1))

    def phase_steps(self, phase: Phase) -> int:
        """Optimiser steps (batches) the phase runs; its LR schedule spans them."""
        if phase.max_steps is not None:
            return phase.max_steps
        return self.steps_per_epoch(phase) * self.phase_epochs(phase)

    def _optimizers(self, phase: Phase):
        """One optimiser + LR schedule per parameter group (``method.param_groups()`` when the method
        has several, e.g. SGD for students and Adam for SAM's adapters), else one for everything."""
        if hasattr(phase.method, "param_groups"):
            named = phase.method.param_groups()
            groups = [(ps, cfg) for _, ps, cfg in named]
            self._group_index = {name: i for i, (name, _, _) in enumerate(named)}
        else:
            groups = [([p for p in phase.method.parameters() if p.requires_grad], phase.optim)]
            self._group_index = {}
        total = self.phase_steps(phase)
        opts = [make_optimizer(ps, cfg) for ps, cfg in groups]
        scheds = [torch.optim.lr_scheduler.LambdaLR(o, schedule(total, cfg)) for o, (_, cfg) in zip(opts, groups)]
        self._clip = [cfg.clip_grad for _, cfg in groups]
        return opts, scheds

    def _on_stop_signal(self, signum, frame) -> None:
        """SIGTERM, or a first Ctrl-C (SIGINT): checkpoint at the next step boundary and stop; a second Ctrl-C
        interrupts at once (the default handler is back)."""
        self._stop_signal = signal.Signals(signum).name
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = False) -> dict[str, Any]:
        if self.ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        old_handlers = {}
        if threading.current_thread() is threading.main_thread():
            old_handlers = {sig: signal.signal(sig, self._on_stop_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            return self._fit(resume)
        except _Interrupted as exc:  # SIGTERM / Ctrl-C (checkpoint written) or a simulated kill (nothing written)
            return {"interrupted": True, "reason": exc.reason, "step": self.global_step}
        finally:
            for sig, old in old_handlers.items():
                signal.signal(sig, old)

    def _fit(self, resume: bool) -> dict[str, Any]:
        torch.manual_seed(self.seed)
        start_phase, start_epoch, start_batch, restored = 0, 0, 0, None
        if resume:
            restored = load_training_state(self.ckpt_dir)
            if restored is not None:
                try:
                    self.model.load_state_dict(restored["model"])
                except RuntimeError as exc:  # missing/unexpected keys or shapes: another architecture
                    first = str(exc).strip().splitlines()[0]
                    raise CheckpointError(
                        f"{self.ckpt_dir} holds the training state of another model than this config builds "
                        f"({first[:160]}); resume with the settings the run started with (its config.yaml)"
                        + (f", e.g. {self.resume_hint}" if self.resume_hint else "")) from None
                start_phase, start_epoch = restored["phase"], restored["epoch"]
                start_batch = restored.get("batch_in_epoch", 0)
                self.global_step, self.best = restored["step"], restored["best"]
                self.history, self.skipped_steps = restored["history"], restored.get("skipped_steps", 0)
                self.seconds_before = restored.get("seconds")
        t_run = self._t_run = time.perf_counter()
        for pi, phase in enumerate(self.phases):
            n_epochs = self.phase_epochs(phase)
            if pi < start_phase or n_epochs == 0:
                continue
            opts, scheds = self._optimizers(phase)
            several = hasattr(phase.method, "updates")
            runner = dist_utils.wrap(self.model, phase.method, self.device) if self.ctx.enabled and not several else None
            if self.ctx.enabled and several:  # no DDP to do it: every rank starts from rank 0's weights
                dist_utils.broadcast_module(self.model)
            first_epoch, skip, partial, rng = 0, 0, None, None
            if restored is not None and pi == start_phase:
                first_epoch, skip, partial = start_epoch, start_batch, restored.get("partial")
                if start_epoch > 0 or start_batch > 0:
                    for o, s in zip(opts, restored["optimizer"]):
                        o.load_state_dict(s)
                    for sc, s in zip(scheds, restored["scheduler"]):
                        sc.load_state_dict(s)
                rng = restored["rng"]
                if start_batch == 0:
                    set_rng_state(rng)
                    rng = None  # (inside an epoch: _epoch sets it once that epoch's batches are drawn)
                if restored.get("method") is not None and hasattr(phase.method, "load_state_dict"):
                    phase.method.load_state_dict(restored["method"])
                restored = None
            for epoch in range(first_epoch, n_epochs):
                row = self._epoch(pi, phase, epoch, opts, scheds, runner, skip, partial, rng)
                skip, partial, rng = 0, None, None
                self.history.append(row)
                if self.ctx.is_main:
                    self._write_metrics()
                self._save(self._state(pi, epoch + 1, opts, scheds))
                if self.on_epoch_end and self.ctx.is_main:
                    self.on_epoch_end(self.history)
        return {
            "interrupted": False,
            "best": self.best,
            "steps": self.global_step,
            "skipped_steps": self.skipped_steps,
            "seconds": time.perf_counter() - t_run,  # this call
            "run_seconds": self._run_seconds(),
            "epoch_seconds": sum(r["train_seconds"] for r in self.history),  # every epoch, across resumes
            "history": self.history,
        }

    def _epoch(self, pi: int, phase: Phase, epoch: int, opts, scheds, runner=None, skip: int = 0,
               partial: dict | None = None, rng: dict | None = None) -> dict[str, Any]:
        """One epoch; ``skip`` batches already trained (resume inside it, with the RNG state ``rng`` saved then)."""
        method = phase.method
        method.train()
        if hasattr(method, "set_epoch"):
            method.set_epoch(epoch)
        loader = self._train_loader(phase, pi, epoch)
        acc = dict(partial or {"sums": {}, "n_batches": 0, "n_images": 0, "seconds": 0.0})
        sums: dict[str, float] = dict(acc["sums"])
        t0 = time.perf_counter() - acc["seconds"]
        batches = iter(loader)  # a loader without a generator (batch samplers) draws its base seed from torch's RNG here
        if rng is not None:  # so a resume inside the epoch restores the RNG after that draw, as it was at the stop
            set_rng_state(rng)
        n_epochs, spe = self.phase_epochs(phase), self.steps_per_epoch(phase)
        # with max_steps the last epoch stops after the budget's remaining batches
        budget = len(loader) if phase.max_steps is None else min(len(loader), phase.max_steps - epoch * spe)
        bar = tqdm(itertools.islice(batches, budget), total=budget, desc=f"{phase.name} epoch {epoch + 1}/{n_epochs}",
                   unit="batch", disable=not self.progress, leave=False)  # skipped batches pass through it too
        for b, batch in enumerate(bar):
            if b < skip:  # resuming inside this epoch: these batches were trained before the stop
                continue
            if hasattr(method, "updates"):
                losses, loss = self._updates(method, batch, opts, scheds)
            else:
                with self._autocast():
                    losses = runner(batch) if runner is not None else method.step(batch)
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
            if not hasattr(method, "updates"):  # (updates() applied its own steps)
                loss.backward()
                for opt, sched, clip in zip(opts, scheds, self._clip):
                    if clip:
                        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], clip)
                    opt.step()
                    sched.step()
            if hasattr(method, "after_step"):
                method.after_step()
            self.global_step += 1
            acc["n_batches"] += 1
            acc["n_images"] += len(batch["id"])
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
            if self.stop_after_steps is not None and self.global_step >= self.stop_after_steps:
                raise _Interrupted("stop_after_steps")
            stop = dist_utils.any_rank(self._stop_signal is not None)
            due = self.checkpoint_every and self.global_step % self.checkpoint_every == 0
            if stop or due:
                acc["sums"], acc["seconds"] = dict(sums), time.perf_counter() - t0
                self._save(self._state(pi, epoch, opts, scheds, batch_in_epoch=b + 1, partial=acc))
            if stop:
                raise _Interrupted(self._stop_signal or "SIGTERM")  # (another rank's signal: SIGTERM)
        train_s = time.perf_counter() - t0
        totals = dist_utils.all_reduce_sum({**{f"sum_{k}": v for k, v in sums.items()},
                                            "n_batches": acc["n_batches"], "n_images": acc["n_images"]})
        n_batches = max(totals.pop("n_batches"), 1)
        n_images = totals.pop("n_images")
        row: dict[str, Any] = {
            "phase": phase.name, "epoch": epoch + 1, "step": self.global_step,
            "lr": opts[0].param_groups[0]["lr"], "train_seconds": train_s,
            "images_per_s": n_images / train_s if train_s > 0 else 0.0,
            "threads": torch.get_num_threads(),  # a run resumed on other threads shows it per epoch
            **{f"train_{k[4:]}": v / n_batches for k, v in totals.items()},
        }
        if phase.val_set is not None and len(phase.val_set) and ((epoch + 1) % self.val_every == 0 or epoch + 1 == n_epochs):
            method.eval()
            with torch.no_grad(), self._autocast():
                val = method.validate(self._val_loader(phase))
            row.update({f"val_{k}": v for k, v in val.items()})
            if val["dice"] > self.best["dice"]:
                self.best = {"dice": val["dice"], "phase": phase.name, "epoch": epoch + 1}
                if self.on_best and self.ctx.is_main:
                    self.on_best(self.model, dict(self.best))
        return row

    def _updates(self, method: Method, batch: dict[str, Any], opts, scheds) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Run ``method.updates(batch)``: each yielded loss is back-propagated, its gradients averaged over
        ranks and clipped, and its group's optimiser stepped before the next update is computed. Returns the
        losses (``<group>_<term>``) and the first non-finite loss (the batch's remaining updates are then not
        run, and the loop counts the step as skipped) or else the first update's loss."""
        losses: dict[str, torch.Tensor] = {}
        first: torch.Tensor | None = None
        updates = method.updates(batch)
        while True:
            with self._autocast():  # the method's forward runs inside next()
                try:
                    name, part = next(updates)
                except StopIteration:
                    break
            if name not in self._group_index:
                raise KeyError(f"update for parameter group {name!r}; the method's groups are {list(self._group_index)}")
            i = self._group_index[name]
            opts[i].zero_grad(set_to_none=True)
            loss = part["loss"]
            if not torch.isfinite(loss):
                updates.close()
                return losses, loss
            first = loss if first is None else first
            loss.backward()
            params = [p for g in opts[i].param_groups for p in g["params"]]
            dist_utils.average_gradients(params)
            if self._clip[i]:
                torch.nn.utils.clip_grad_norm_(params, self._clip[i])
            opts[i].step()
            scheds[i].step()
            losses.update({f"{name}_{k}": v for k, v in part.items()})
        if first is None:
            raise RuntimeError("the method's updates() yielded no update")
        return losses, first

    def _write_metrics(self) -> None:
        keys: list[str] = []
        for r in self.history:
            keys += [k for k in r if k not in keys]
        with open(self.out / "metrics.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(self.history)
