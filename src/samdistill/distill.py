"""The distill job: a validated config -> a run directory with a loadable ``student.pt``.

Run directory: ``config.yaml``, ``metrics.csv``, ``checkpoints/`` (``last.pt``, ``best.pt``),
``student.pt``, ``plots/curves.png``, ``overlays/*.png``, ``summary.json``, ``log.txt``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Literal

import torch

from samdistill._version import __version__
from samdistill.atomic import check_out_dir
from samdistill.config import DistillConfig, added_neutral_keys, dump_config, flatten
from samdistill.data.cache import build_cache, check_unlabeled, open_run_dataset
from samdistill.devices import check_device
from samdistill.errors import UserError
from samdistill.machine import machine_info, num_threads
from samdistill.methods import METHODS
from samdistill.models.zoo import load_model, save_model
from samdistill.train import distributed as dist_utils
from samdistill.train.runlock import SEARCH_FILES, RunLock, held_run, run_lock, undo_if_failed_early
from samdistill.train.seeding import seed_everything
from samdistill.train.trainer import Trainer
from samdistill.viz.overlays import save_side_by_side
from samdistill.viz.plots import plot_curves


def _logger(out: Path) -> logging.Logger:
    log = logging.getLogger(f"samdistill.run.{out.resolve()}")
    log.setLevel(logging.INFO)
    for h in list(log.handlers):  # a handler whose log.txt a failed call removed (undo_if_failed_early) is dropped
        if not Path(h.baseFilename).exists():
            h.close()
            log.removeHandler(h)
    if not log.handlers:
        h = logging.FileHandler(out / "log.txt")
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(h)
    return log


# settings that do not change what a run trains: a finished run that differs only in these is still that run
RUN_FREE_KEYS = ("progress", "threads")


def finished_run(out: Path, cfg: DistillConfig) -> tuple[dict[str, Any] | None, list[str]]:
    """``(summary, [])`` when ``out`` holds a run trained to the end with ``cfg`` (``RUN_FREE_KEYS`` aside; a key
    added since, marked ``added_neutral``, that its config.yaml lacks counts as that key's default), else
    ``(None, keys)``: the dotted config keys in which a finished run there differs (``[]`` if none is).

    Finished = ``summary.json`` and ``student.pt`` present and ``summary.json`` no older than ``config.yaml``
    (every call that trains rewrites ``config.yaml`` before it trains, so a later call that was cut short is not read as
    finished).
    """
    summary, saved = out / "summary.json", out / "config.yaml"
    if not (summary.is_file() and saved.is_file() and (out / "student.pt").is_file()):
        return None, []
    if summary.stat().st_mtime_ns < saved.stat().st_mtime_ns:
        return None, []
    old, now = _configs(out, cfg)
    diff = sorted(k for k in set(old) | set(now) if old.get(k, ...) != now.get(k, ...))
    if diff:
        return None, diff
    return json.loads(summary.read_text()), []


def _configs(out: Path, cfg: DistillConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(the config.yaml in out, cfg)`` as dotted keys, ``RUN_FREE_KEYS`` left out; a key added since that run
    (marked ``added_neutral``) that its config.yaml lacks counts as that key's default ({} when there is none)."""
    import yaml

    saved = out / "config.yaml"
    if not saved.is_file():
        return {}, {}
    old = flatten({k: v for k, v in (yaml.safe_load(saved.read_text()) or {}).items() if k not in RUN_FREE_KEYS})
    old = {**{k: v for k, v in added_neutral_keys(cfg).items() if k not in RUN_FREE_KEYS}, **old}
    return old, flatten({k: v for k, v in cfg.model_dump(mode="json").items() if k not in RUN_FREE_KEYS})


def _check_same_images(out: Path, cfg: DistillConfig) -> None:
    """A resumed run trains on the images and labels it started with: a differing ``data.*`` key, teacher, or
    ``labeled`` / ``unlabeled`` key of its method is one ``UserError`` naming each (schedule keys may change)."""
    old, now = _configs(out, cfg)
    keys = [k for k in sorted(set(old) | set(now))
            if k.startswith("data.") or k == "teacher" or k.rsplit(".", 1)[-1] in ("labeled", "unlabeled")]
    changed = [f"{k} {old.get(k)!r} (the run) vs {now.get(k)!r} (now)" for k in keys if old.get(k) != now.get(k)]
    if old and changed:
        raise UserError(f"{out} holds a run trained on other images or labels: {'; '.join(changed)}; resume it with its "
                        "own settings (see its config.yaml) or choose a new --out")


def distill(
    cfg: DistillConfig, out_dir: str | os.PathLike, *, resume: bool | Literal["auto"] = False,
    stop_after_steps: int | None = None,
) -> dict[str, Any]:
    """Run a method end to end (cache -> training phases -> student.pt). Returns the summary.

    ``kdsam``: stage 1 + stage 2 into a promptable student; ``knowsam``: semi-supervised distillation
    into a prompt-free UNet + VNet student.

    One run per folder: ``<out>/.lock`` is held while the run writes (a second run on the same ``--out``
    is a ``UserError``), and a fresh run (no ``resume``) into a folder that holds a run is refused
    rather than mixed into it.

    ``resume="auto"``: a run in ``out`` that finished with this config (:func:`finished_run`) is read, not
    redone: its ``summary.json`` is returned with ``already_finished: True``, nothing is loaded, trained or
    written. Otherwise the run resumes when ``out`` holds a checkpoint (an interrupted run, or a finished one
    whose config differs, e.g. more epochs: the Trainer continues from ``last.pt``, as ``resume=True`` does;
    the differing keys are noted in ``log.txt``) and starts fresh when it holds none (refused like
    ``resume=False`` when other run files are there).
    """
    out = check_out_dir(out_dir)
    check_device(cfg.device)
    METHODS.refuse_unlabeled(cfg)
    if cfg.data.unlabeled and out.resolve().is_relative_to(Path(cfg.data.unlabeled).resolve()):
        raise UserError(f"--out {out} lies inside --unlabeled {cfg.data.unlabeled}: its overlays and plots would be read "
                        "as unlabeled images; choose an --out outside it")
    ctx = dist_utils.init_from_env(cfg.device)
    if resume == "auto":
        done, differs = finished_run(out, cfg)
        if done is not None:
            return {**done, "already_finished": True}
        resume = held_run(out, ("checkpoints/last.pt", "checkpoints/last.prev.pt")) is not None
        if resume and differs and ctx.is_main:
            _logger(out).info("resuming a finished run whose config differs in %s", ", ".join(differs))
    elif not isinstance(resume, bool):
        raise UserError(f"resume must be True, False or 'auto', not {resume!r}")
    if resume:
        _check_same_images(out, cfg)

    def fresh_folder_only() -> None:
        search = held_run(out, SEARCH_FILES)  # (its checkpoints are a supernet's: not a run to resume either)
        if search is not None:
            raise UserError(f"{out} holds an architecture search ({search.name}); choose a new --out for the run")
        marker = None if resume else held_run(out)
        if marker is None:
            return
        raise UserError(f"{out} holds a run ({marker.relative_to(out)}); add --resume to continue it or choose a "
                        "new --out")

    with run_lock(out, check=fresh_folder_only) as lock, undo_if_failed_early(out, ctx.is_main):
        return _distill(cfg, out, ctx, lock, resume=resume, stop_after_steps=stop_after_steps)


def _distill(cfg: DistillConfig, out: Path, ctx: dist_utils.DistContext, lock: RunLock | None, *, resume: bool,
             stop_after_steps: int | None) -> dict[str, Any]:
    """:func:`distill` with the run folder locked."""
    out.mkdir(parents=True, exist_ok=True)
    ds = open_run_dataset(cfg)  # bad files and folders are refused before the teacher loads
    check_unlabeled(cfg, ds)
    log = _logger(out) if ctx.is_main else logging.getLogger("samdistill.run.worker")
    if lock is not None and lock.took_over:
        log.info(lock.took_over)
    t0 = time.perf_counter()
    with num_threads(cfg.threads) as threads:
        seed_everything(cfg.seed)
        teacher = load_model(cfg.teacher, checkpoint=cfg.teacher_checkpoint, device=cfg.device)
        log.info("teacher %s loaded; building cache", cfg.teacher)
        ds, cache, train_keys, val_keys, val_ids = build_cache(cfg, teacher, out, cfg.progress, ds=ds)

        seed_everything(cfg.seed)
        built = METHODS.get(cfg.method)(cfg, teacher, cache, train_keys, val_keys)  # (+ data.unlabeled's entries)
        cache_stats = cache.stats.as_dict()
        log.info("cache: %s", cache_stats)
        model, student, phases, extra = built.model, built.student, built.phases, dict(built.extra)
        if ctx.is_main:  # (only now: a call that fails on its data never rewrites a run's config.yaml)
            dump_config(cfg, out / "config.yaml")
        if built.labeled_ids is not None and ctx.is_main:  # which train images kept their labels (semi-supervised)
            (out / "labeled.json").write_text(json.dumps(built.labeled_ids, indent=0))

        ckpt = out / "checkpoints"
        zoomed = {"zoom": cfg.data.zoom} if cfg.data.zoom else {}  # the Predictor zooms the same (zoom="auto")
        trainer = Trainer(
            model=model, phases=phases, out_dir=out, seed=cfg.seed, device=cfg.device, val_every=cfg.val_every,
            progress=cfg.progress,
            on_best=lambda m, best: save_model(student, ckpt / "best.pt", provenance={"best": best, **zoomed}),
            on_epoch_end=lambda h: plot_curves(h, out / "plots" / "curves.png"),
            stop_after_steps=stop_after_steps, checkpoint_every=cfg.checkpoint_every, precision=cfg.precision,
            resume_hint=built.resume_hint,
        )
        result = trainer.fit(resume=resume)
        if result["interrupted"]:
            log.info("stopped (%s) after %s steps (resume with --resume)", result["reason"], result["step"])
            return {"interrupted": True, "reason": result["reason"], "step": result["step"]}
        if not ctx.is_main:  # rank 0 writes the student, overlays and summary
            dist_utils.barrier()
            return {"rank": ctx.rank, "best": result["best"], "steps": result["steps"]}

        final = load_model(ckpt / "best.pt") if (ckpt / "best.pt").exists() else student.eval()
        student_name = built.student_name
        provenance = {
            "method": cfg.method, "teacher": cfg.teacher, "teacher_id": cache.teacher_id, "data": str(cfg.data.path),
            "train_split": cfg.data.train_split, "best": result["best"], "samdistill": __version__, **extra,
            **zoomed,
        }
        save_model(final, out / "student.pt", provenance=provenance)
        _overlays(final, teacher, ds, val_ids[: cfg.overlays], out / "overlays", names=(cfg.teacher, student_name))
        summary = {
            "student": student_name, "teacher": cfg.teacher, "dataset": ds.name, "method": cfg.method,
            "n_train_images": len({sid for sid, _ in train_keys}), **extra,
            "n_val": len(val_ids), "cache": cache_stats, "cache_dir": str(cache.dir), "best": result["best"],
            "steps": result["steps"], "skipped_steps": result["skipped_steps"],
            "train_seconds": result["seconds"], "epoch_seconds": result["epoch_seconds"], "total_seconds": time.perf_counter() - t0,
            "threads": threads, "device": cfg.device, "machine": machine_info(),
            "params": final.parameter_counts(), "student_path": str(out / "student.pt"),
        }
        if result["run_seconds"] is not None:  # unknown after resuming a checkpoint written before it was recorded
            # a resumed run: its training loop over every call (each to its last checkpoint), and that plus this
            # call's time outside the loop (cache, student.pt, overlays); train/total_seconds are this call's
            summary["train_seconds_all_calls"] = result["run_seconds"]
            summary["total_seconds_all_calls"] = summary["total_seconds"] - result["seconds"] + result["run_seconds"]
        summary["world_size"] = ctx.world_size
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        log.info("done: %s", json.dumps(summary["best"]))
        dist_utils.barrier()
        return summary


@torch.no_grad()
def _overlays(student, teacher, ds, ids, folder: Path, names: tuple[str, str] = ("", "")) -> None:
    """Validation images, one PNG each: ground truth, teacher and student (``names``) under the tight box,
    each panel in its own colour with its title and Dice vs the ground truth."""
    from samdistill.data.prompts import tight_box
    from samdistill.eval.metrics import dice
    from samdistill.viz.overlays import GROUND_TRUTH, STUDENT, TEACHER, Panel

    folder.mkdir(parents=True, exist_ok=True)
    for sample in ds.iter_samples(ids):
        if not sample.mask.any():
            continue
        box = tight_box(sample.mask)[None]
        t = teacher.predict(sample.image, box)[0]
        s = student.predict(sample.image, box)[0]
        save_side_by_side(folder / f"{sample.id.replace('/', '__')}.png", sample.image, [
            Panel("ground truth", [sample.mask], GROUND_TRUTH, note="prompt: its tight box"),
            Panel(f"teacher {names[0]}".strip(), [t], TEACHER, dice=dice(t, sample.mask)),
            Panel(f"student {names[1]}".strip(), [s], STUDENT, dice=dice(s, sample.mask)),
        ])
