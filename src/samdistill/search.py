"""The architecture-search job: a validated config -> ``genotype.json`` and its record.

``samdistill nas search`` builds the supernet for the teacher's input size, fills (or reuses) the
teacher-embedding cache, splits the train split into two seeded halves (operation weights learn on
one, architecture parameters on the other), alternates weight and architecture steps (first-order
DARTS) after ``warmup_epochs`` of weights only, and writes ``genotype.json`` (the most likely
architecture), ``search.csv`` (losses, expected MACs and every architecture probability over time),
``plots/arch_weights.png``, ``supernet.pt`` and ``summary.json`` (budget, expected and measured MACs of
the result).

The search runs through the one :class:`~samdistill.train.trainer.Trainer`: the method is
:class:`~samdistill.methods.nas.SearchStep` (its ``updates`` do the weight step, then the architecture
step, each with its recipe optimiser ``nas.search.w_optim`` / ``a_optim``), one phase whose batches pair
a weight-half batch with an architecture-half batch. So the search has what every run has: atomic
checkpoints (``checkpoints/last.pt``, with the per-step record) that ``resume=True`` continues exactly,
a checkpoint and a clean stop on SIGTERM, NaN/Inf steps skipped and counted, bf16 autocast on CUDA (or on the
CPU with ``precision=bf16``) and
``metrics.csv``. Under ``torchrun`` each rank searches on a disjoint share of the batches and gradients
are averaged (weights and architecture alike), so every rank holds the same supernet; rank 0 writes.
"""

from __future__ import annotations

import csv
import json
import os
import random
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from samdistill.atomic import atomic_torch_save, check_out_dir
from samdistill.config import DistillConfig, dump_config
from samdistill.data.cache import CachedSet, build_cache, open_run_dataset
from samdistill.devices import check_device
from samdistill.errors import UserError
from samdistill.eval.efficiency import count_macs, frozen
from samdistill.machine import machine_info, num_threads
from samdistill.methods import METHODS
from samdistill.models.nas.genotype import GenotypeEncoder, write_genotype
from samdistill.models.nas.supernet import SearchSpace, SuperNet
from samdistill.models.zoo import load_model
from samdistill.train import distributed as dist_utils
from samdistill.train.runlock import SEARCH_FILES, held_run, run_lock, undo_if_failed_early
from samdistill.train.seeding import seed_everything
from samdistill.train.trainer import Phase, Trainer


def _space(cfg: DistillConfig, input_size: int) -> SearchSpace:
    s = cfg.nas.search
    kw: dict[str, Any] = {"input_size": input_size}
    if s.widths is not None:
        kw["widths"] = s.widths
    if s.layers is not None:
        kw["layers"] = s.layers
    if s.neck_width is not None:
        kw["neck_width"] = s.neck_width
    space = SearchSpace(**kw)
    if len(space.widths) != len(space.layers):
        raise UserError(f"nas.search.widths has {len(space.widths)} stages but nas.search.layers {len(space.layers)}")
    if input_size % (4 * 2 ** (len(space.widths) - 1)):
        raise UserError(f"input size {input_size} is not divisible by {4 * 2 ** (len(space.widths) - 1)}")
    return space


def encoder_macs(encoder: torch.nn.Module, input_size: int) -> int:
    with frozen(encoder), torch.no_grad():
        was = encoder.training
        encoder.eval()
        macs = count_macs(encoder, torch.zeros(1, 3, input_size, input_size, device=next(encoder.parameters()).device))
        encoder.train(was)
    return macs


class PairedSet(torch.utils.data.Dataset):
    """Index ``(i, j)``: item ``i`` of the weight half, and item ``j`` of the architecture half (``j`` not
    None) beside it under ``arch_`` keys (:data:`~samdistill.methods.nas.ARCH`)."""

    def __init__(self, weight_half: torch.utils.data.Dataset, arch_half: torch.utils.data.Dataset) -> None:
        self.w, self.a = weight_half, arch_half

    def __len__(self) -> int:
        return len(self.w)

    def __getitem__(self, ij: tuple[int, int | None]) -> dict[str, Any]:
        from samdistill.methods.nas import ARCH

        i, j = ij
        item = dict(self.w[i])
        if j is not None:
            item.update({ARCH + k: v for k, v in self.a[j].items()})
        return item


class PairedBatches:
    """One epoch of search batches: a seeded shuffle of each half; batch ``b`` holds weight items
    ``b*bs ... (b+1)*bs - 1`` of that order (the last incomplete batch dropped) and, when ``arch``, as many
    architecture items (wrapping round if that half were shorter)."""

    def __init__(self, n_weight: int, n_arch: int, batch_size: int, generator: torch.Generator | None,
                 arch: bool = True) -> None:
        g = generator if generator is not None else torch.Generator()
        self.w = torch.randperm(n_weight, generator=g).tolist()
        self.a = torch.randperm(n_arch, generator=g).tolist()
        self.bs, self.arch = batch_size, arch

    def __len__(self) -> int:
        return len(self.w) // self.bs

    def __iter__(self) -> Iterator[list[tuple[int, int | None]]]:
        for b in range(len(self)):
            pos = range(b * self.bs, (b + 1) * self.bs)
            yield [(self.w[p], self.a[p % len(self.a)] if self.arch else None) for p in pos]


def _write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    """``search.csv``: one row per step (header only before the first epoch ends)."""
    keys = list(dict.fromkeys(k for r in rows for k in r)) or ["step", "epoch", "w_loss"]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


#: a distill run's own files: a search into its folder would overwrite its config.yaml and summary.json
_DISTILL_RUN_FILES = ("checkpoints/last.pt", "checkpoints/last.prev.pt", "checkpoints/best.pt", "student.pt",
                      "metrics.csv")


def nas_search(cfg: DistillConfig, out_dir: str | os.PathLike, *, resume: bool = False, progress: bool = True,
               stop_after_steps: int | None = None) -> dict[str, Any]:
    """Search into ``out_dir`` (held under ``<out>/.lock``, one run per folder; a folder that holds a
    distill run is refused). ``resume``: continue the search there from its last checkpoint (a fresh
    search when it has none); without it, a search into the folder of an earlier search replaces its files.

    Returns the summary, or ``{"interrupted": True, "reason", "step"}`` after SIGTERM (a checkpoint was
    written; resume it) or ``stop_after_steps`` (tests: nothing written at that step, as if killed).
    """
    out = check_out_dir(out_dir)
    check_device(cfg.device)
    METHODS.refuse_unlabeled(cfg, job="the architecture search")
    ctx = dist_utils.init_from_env(cfg.device)

    def not_a_distill_run() -> None:
        marker = held_run(out, _DISTILL_RUN_FILES)
        if marker is not None and held_run(out, SEARCH_FILES) is None:
            raise UserError(f"{out} holds a distill run ({marker.relative_to(out)}); choose a new --out for the search")

    with run_lock(out, check=not_a_distill_run), undo_if_failed_early(out, ctx.is_main):
        return _nas_search(cfg, out, ctx, resume=resume, progress=progress, stop_after_steps=stop_after_steps)


def _nas_search(cfg: DistillConfig, out: Path, ctx: dist_utils.DistContext, *, resume: bool, progress: bool,
                stop_after_steps: int | None) -> dict[str, Any]:
    from samdistill.methods.nas import SearchStep
    from samdistill.viz.plots import plot_arch_weights

    s = cfg.nas.search
    progress = progress and ctx.is_main
    out.mkdir(parents=True, exist_ok=True)
    ds = open_run_dataset(cfg)  # bad files and folders are refused before the teacher loads or anything is written
    t0 = time.perf_counter()
    with num_threads(cfg.threads) as threads:
        seed_everything(cfg.seed)
        teacher = load_model(cfg.teacher, checkpoint=cfg.teacher_checkpoint, device=cfg.device)
        ds, cache, train_keys, _, _ = build_cache(cfg, teacher, out, progress, ds=ds)
        if ctx.is_main:  # the data read: the folder becomes a search's (search.csv marks it from here on)
            dump_config(cfg, out / "config.yaml")
            if not (resume and (out / "search.csv").exists()):
                _write_rows([], out / "search.csv")
        keys = sorted(k for k in train_keys.values() if k not in cache.empty_keys)
        if len(keys) < 2 * s.batch_size:
            raise UserError(f"the search needs at least {2 * s.batch_size} prompted train images, got {len(keys)}")
        random.Random(cfg.seed).shuffle(keys)
        half = len(keys) // 2
        w_set, a_set = CachedSet(cache, keys[:half], cfg.cache.in_memory), CachedSet(cache, keys[half:], cfg.cache.in_memory)
        teacher_macs = encoder_macs(teacher.image_encoder, teacher.input_size)
        budget = s.macs_budget * 1e9 if s.macs_budget else teacher_macs / 30
        net = SuperNet(_space(cfg, teacher.input_size)).to(cfg.device)
        net.sampling, net.tau = s.sampling, s.tau
        step = SearchStep(net, teacher, beta=s.beta, budget_macs=budget, box_jitter=s.box_jitter, resource=s.resource,
                          device=cfg.device, warmup_epochs=s.warmup_epochs, w_optim=s.w_optim, a_optim=s.a_optim)

        def batches(g: torch.Generator) -> PairedBatches:  # architecture items only once the warm-up is over
            return PairedBatches(half, len(keys) - half, s.batch_size, g, arch=step.searching)

        phase = Phase("search", step, PairedSet(w_set, a_set), None, s.epochs, s.batch_size, s.w_optim,
                      batch_sampler=batches)
        trainer = Trainer(model=net, phases=[phase], out_dir=out, seed=cfg.seed, device=cfg.device, progress=progress,
                          on_epoch_end=lambda _: _write_rows(step.rows, out / "search.csv"),
                          stop_after_steps=stop_after_steps, checkpoint_every=cfg.checkpoint_every, precision=cfg.precision)
        result = trainer.fit(resume=resume)
        if result["interrupted"]:
            return {"interrupted": True, "reason": result["reason"], "step": result["step"]}
        rows, it = step.rows, len(step.rows)
        if not ctx.is_main:  # every rank holds the same architecture; rank 0 writes it
            dist_utils.barrier()
            return {"rank": ctx.rank, "steps": it}
        genotype = net.derive(max_skip=s.max_skip)
        enc = GenotypeEncoder(genotype)
        found_macs = encoder_macs(enc, teacher.input_size)
        genotype["encoder_gmacs"] = found_macs / 1e9
        genotype["encoder_params"] = sum(p.numel() for p in enc.parameters())
        write_genotype(genotype, out / "genotype.json")
        _write_rows(rows, out / "search.csv")
        plot_arch_weights(rows, net.space, out / "plots" / "arch_weights.png")
        atomic_torch_save({"supernet": net.state_dict(), "space": dict(net.space.__dict__)}, out / "supernet.pt")
        summary = {
            "genotype": str(out / "genotype.json"), "encoder_gmacs": found_macs / 1e9,
            "expected_gmacs_final": rows[-1]["expected_gmacs"], "budget_gmacs": budget / 1e9,
            "teacher_encoder_gmacs": teacher_macs / 1e9, "teacher_over_student_macs": teacher_macs / max(found_macs, 1),
            "within_budget": found_macs <= budget, "beta": s.beta, "resource": s.resource, "sampling": s.sampling, "steps": it,
            "skipped_steps": result["skipped_steps"],
            "n_weight_half": half, "n_arch_half": len(keys) - half, "seconds": time.perf_counter() - t0,
            "threads": threads, "machine": machine_info(), "dataset": ds.name,
        }
        summary["world_size"] = ctx.world_size
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        dist_utils.barrier()
        return summary
