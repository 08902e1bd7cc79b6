"""The architecture-search job: a validated config -> ``genotype.json`` and its record.

``samdistill nas search`` builds the supernet for the teacher's input size, fills (or reuses) the
teacher-embedding cache, splits the train split into two seeded halves (operation weights learn on
one, architecture parameters on the other), alternates weight and architecture steps (first-order
DARTS) after ``warmup_epochs`` of weights only, and writes ``genotype.json`` (the most likely
architecture), ``search.csv`` (losses, expected MACs and every architecture probability over time),
``plots/arch_weights.png`` and ``summary.json`` (budget, expected and measured MACs of the result).
Under ``torchrun`` each rank searches on a disjoint share of each half and gradients are averaged
(weights and architecture alike), so every rank holds the same supernet; rank 0 writes.
"""

from __future__ import annotations

import csv
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from samdistill.atomic import atomic_torch_save, check_out_dir
from samdistill.config import DistillConfig, dump_config
from samdistill.data.cache import CachedSet
from samdistill.devices import check_device
from samdistill.distill import build_cache, seed_everything
from samdistill.errors import UserError
from samdistill.eval.efficiency import count_macs, frozen
from samdistill.machine import machine_info, num_threads
from samdistill.models.nas.genotype import GenotypeEncoder, write_genotype
from samdistill.models.nas.supernet import SearchSpace, SuperNet
from samdistill.models.zoo import load_model
from samdistill.train import distributed as dist_utils
from samdistill.train.runlock import held_run, run_lock
from samdistill.train.trainer import collate


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


def _loader(ds, bs: int, seed: int) -> torch.utils.data.DataLoader:
    """Seeded shuffle; under torchrun each rank gets a disjoint share (same number of batches)."""
    ctx = dist_utils.context()
    if ctx.enabled:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(ds, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed,
                                     drop_last=True)
        return torch.utils.data.DataLoader(ds, batch_size=bs, sampler=sampler, collate_fn=collate, drop_last=True)
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, generator=g, collate_fn=collate, drop_last=True)


#: a distill run's own files: a search into its folder would overwrite its config.yaml and summary.json
_DISTILL_RUN_FILES = ("checkpoints/last.pt", "checkpoints/last.prev.pt", "checkpoints/best.pt", "student.pt",
                      "metrics.csv")


def nas_search(cfg: DistillConfig, out_dir: str | os.PathLike, *, progress: bool = True) -> dict[str, Any]:
    """Search into ``out_dir`` (held under ``<out>/.lock``, one run per folder; a folder that holds a
    distill run is refused). Rerunning into a folder of an earlier search replaces its files."""
    out = check_out_dir(out_dir)
    check_device(cfg.device)
    ctx = dist_utils.init_from_env(cfg.device)

    def not_a_distill_run() -> None:
        marker = held_run(out, _DISTILL_RUN_FILES)
        if marker is not None:
            raise UserError(f"{out} holds a distill run ({marker.relative_to(out)}); choose a new --out for the search")

    with run_lock(out, check=not_a_distill_run):
        return _nas_search(cfg, out, ctx, progress=progress)


def _nas_search(cfg: DistillConfig, out: Path, ctx: dist_utils.DistContext, *, progress: bool) -> dict[str, Any]:
    from samdistill.methods.nas import SearchStep
    from samdistill.viz.plots import plot_arch_weights

    s = cfg.nas.search
    progress = progress and ctx.is_main
    out.mkdir(parents=True, exist_ok=True)
    if ctx.is_main:
        dump_config(cfg, out / "config.yaml")
    t0 = time.perf_counter()
    with num_threads(cfg.threads) as threads:
        seed_everything(cfg.seed)
        teacher = load_model(cfg.teacher, checkpoint=cfg.teacher_checkpoint, device=cfg.device)
        ds, cache, train_keys, _, _ = build_cache(cfg, teacher, out, progress)
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
        dist_utils.broadcast_module(net)
        step = SearchStep(net, teacher, beta=s.beta, budget_macs=budget, box_jitter=s.box_jitter, resource=s.resource,
                          device=cfg.device)
        w_opt = torch.optim.AdamW(net.weight_parameters(), lr=s.w_lr, weight_decay=1e-4)
        a_opt = torch.optim.Adam(net.arch_parameters(), lr=s.a_lr, betas=(0.5, 0.999), weight_decay=1e-3)
        rows: list[dict[str, Any]] = []
        it = 0
        for epoch in range(s.epochs):
            net.train()
            a_iter = iter(_loader(a_set, s.batch_size, cfg.seed * 7919 + epoch))
            bar = tqdm(_loader(w_set, s.batch_size, cfg.seed * 104729 + epoch), desc=f"search epoch {epoch + 1}/{s.epochs}",
                       unit="batch", disable=not progress, leave=False)
            for wb in bar:
                wl = step.weight_step(wb)
                w_opt.zero_grad(set_to_none=True)
                wl["loss"].backward()
                dist_utils.average_gradients(net.weight_parameters())
                torch.nn.utils.clip_grad_norm_(net.weight_parameters(), 5.0)
                w_opt.step()
                row: dict[str, Any] = {"step": it, "epoch": epoch + 1, "w_loss": float(wl["loss"].detach())}
                if epoch >= s.warmup_epochs:
                    try:
                        ab = next(a_iter)
                    except StopIteration:
                        a_iter = iter(_loader(a_set, s.batch_size, cfg.seed * 7919 + epoch + 10_000 * it))
                        ab = next(a_iter)
                    al = step.arch_step(ab)
                    a_opt.zero_grad(set_to_none=True)
                    al["loss"].backward()
                    dist_utils.average_gradients(net.arch_parameters())
                    a_opt.step()
                    row.update({"a_loss": float(al["loss"].detach()), "a_task": float(al["task"].detach())})
                with torch.no_grad():
                    row["expected_gmacs"] = float(net.expected_macs()) / 1e9
                    probs = net.probabilities()
                    for li, p in enumerate(probs["alpha"]):
                        row.update({f"alpha{li}_{o}": float(v) for o, v in zip(net.space.ops, p)})
                    for si, p in enumerate(probs["beta"]):
                        row.update({f"beta{si}_{w}": float(v) for w, v in zip(net.space.widths[si], p)})
                    for si, p in enumerate(probs["gamma"]):
                        row[f"gamma{si + 1}_keep"] = float(p[0])
                rows.append(row)
                bar.set_postfix(loss=f"{row['w_loss']:.3f}", gmacs=f"{row['expected_gmacs']:.2f}")
                it += 1
        if not ctx.is_main:  # every rank holds the same architecture; rank 0 writes it
            dist_utils.barrier()
            return {"rank": ctx.rank, "steps": it}
        genotype = net.derive(max_skip=s.max_skip)
        enc = GenotypeEncoder(genotype)
        found_macs = encoder_macs(enc, teacher.input_size)
        genotype["encoder_gmacs"] = found_macs / 1e9
        genotype["encoder_params"] = sum(p.numel() for p in enc.parameters())
        write_genotype(genotype, out / "genotype.json")
        with open(out / "search.csv", "w", newline="") as fh:
            keys_ = list(dict.fromkeys(k for r in rows for k in r))
            w = csv.DictWriter(fh, fieldnames=keys_)
            w.writeheader()
            w.writerows(rows)
        plot_arch_weights(rows, net.space, out / "plots" / "arch_weights.png")
        atomic_torch_save({"supernet": net.state_dict(), "space": dict(net.space.__dict__)}, out / "supernet.pt")
        summary = {
            "genotype": str(out / "genotype.json"), "encoder_gmacs": found_macs / 1e9,
            "expected_gmacs_final": rows[-1]["expected_gmacs"], "budget_gmacs": budget / 1e9,
            "teacher_encoder_gmacs": teacher_macs / 1e9, "teacher_over_student_macs": teacher_macs / max(found_macs, 1),
            "within_budget": found_macs <= budget, "beta": s.beta, "resource": s.resource, "sampling": s.sampling, "steps": it,
            "n_weight_half": half, "n_arch_half": len(keys) - half, "seconds": time.perf_counter() - t0,
            "threads": threads, "machine": machine_info(), "dataset": ds.name,
        }
        summary["world_size"] = ctx.world_size
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        dist_utils.barrier()
        return summary
