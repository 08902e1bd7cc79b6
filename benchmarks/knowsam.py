"""Claim: KnowSAM closes at least half of the gap between training on the labeled 10 % alone and
training with all labels (same prompt-free UNet + VNet student, same optimiser steps), and its SAM-induced
distillation (SKD) lifts a standard semi-supervised rival, Mean Teacher (issue 24).

For each dataset and training seed, five runs on the train split, every one given exactly the same number
of optimiser steps (`--max-steps`: `knowsam.max_steps` / `meanteacher.max_steps`; LR decay and ramp-ups
follow it):
(a) `supervised`: the labeled subset alone (knowsam.unlabeled=false, knowsam.sam=false, no
    co-training/entropy/mixing terms), (b) `knowsam`: labeled subset + the rest unlabeled, the full
    method with the frozen-encoder variant (adapters=none, cached LiteMedSAM embeddings),
(c) `all_labels`: every train image labeled, supervised only (the upper bound),
(d) `meanteacher`: `--method meanteacher` (EMA teacher, consistency on the unlabeled images) on KnowSAM's
    UNet, same labeled subset, (e) `meanteacher_skd`: (d) + SAM-induced KD (`meanteacher.skd=true`).
The labeled subset of (a), (b), (d), (e) is the same seeded pick. Semi-supervised batches are 8 = 4 labeled
+ 4 unlabeled; (a) and (c) use batches of `--baseline-batch` labeled images (default 4: the same labeled
images per step). Convergence of (c) is measured: its validation Dice (validated often enough for >= 10
points) must gain < 0.01 over the last 20 % of its steps; the curve is drawn next to the results
(`knowsam_<dataset>_c_curve.png`). Each student is evaluated with `samdistill eval` (prompt-free) on the
full test split; the LiteMedSAM teacher with tight boxes is read from the teachers benchmark (same split) or
evaluated if missing. Writes benchmarks/results/knowsam_<dataset>.{json,md} (`_steps<N>` in the name at another
--max-steps than 4000, `_seed<N>` for other seeds than 0): `{"dataset", "machine",
"rows": [{"run", "seed", "dice", "iou", "hd95", "steps", "train_minutes", "images_per_s", "device"}],
"c_converged": {"<seed>": bool}, "targets": ...}` (+ each run's details under "runs"). Runs resume: call
the same command again and a finished run is read, an interrupted one continues from its checkpoint.

    python benchmarks/knowsam.py --datasets kvasir_seg --threads 2 --max-steps 4000 --input-size 128
    python benchmarks/knowsam.py --datasets kvasir_seg --variants all_labels --train-only   # one row
    python benchmarks/knowsam.py --datasets kvasir_seg --smoke   # 30 steps per run, *_smoke stems
    # the targets on the mean over seeds, one comparison per seed (each at the budget where its (c) converged)
    python benchmarks/knowsam.py --combine knowsam_kvasir_seg knowsam_kvasir_seg_steps6000_seed1

`--variants knowsam` re-runs KnowSAM alone and takes the other rows from an earlier results file of the
dataset and seed (a comparison, or a `--train-only` rows file) whose recorded configuration equals the one this
script would run now (the md says which rows were reused and from where); otherwise it stops and asks for the run. `--baseline-batch 8` writes
`knowsam_<dataset>_baseline8.{json,md}`. Results files written before the step budget (rows a-c,
`--steps` rounded to epochs) keep their own rendering.

On a GPU, the full method as published (adapters in SAM's image encoder, the teacher encoder runs every
step; students at 256 px; KD constant; SAM decoded per class) writes `knowsam_<dataset>_gpu.{json,md}`:

    python benchmarks/knowsam.py --device cuda --adapters encoder --input-size 0 --kd-rampup 0 \
        --sam-decode per_class --max-steps 2000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import time
from pathlib import Path

from _common import (RESULTS, data_note, device_tag, markdown_table, render_only, rows_carry_threads, shared_dataset,
                     threads_used, throughput, write_results)

SUPERVISED_ONLY = {"sam": False, "consistency": 0.0, "entropy": 0.0, "mix": 0.0, "kd": 0.0}
VARIANTS = ("supervised", "knowsam", "all_labels", "meanteacher", "meanteacher_skd")
RUN = dict(zip(VARIANTS, "abcde"))  # the row names
NAMES = {"supervised": "(a) labeled subset alone", "knowsam": "(b) KnowSAM", "all_labels": "(c) all labels (upper bound)",
         "meanteacher": "(d) Mean Teacher", "meanteacher_skd": "(e) Mean Teacher + SKD"}
SMOKE_STEPS = 30  # --smoke: a pipeline check, never a result
DEFAULT_STEPS = 4000  # --max-steps; a comparison at another budget gets its own file (knowsam_<dataset>_steps<N>*)
CONVERGED_GAIN, CONVERGED_TAIL, MIN_VAL_POINTS = 0.01, 0.2, 10


def section(cfg):
    """The method's own config section (``cfg.knowsam`` / ``cfg.meanteacher``)."""
    return getattr(cfg, cfg.method)


def precision_tag(args) -> str:
    """``_bf16`` / ``_fp32`` when ``--precision`` makes the runs train in another arithmetic than the recipe's
    default on this device (fp32 on a CPU, bf16 on CUDA): their own run dirs and results files."""
    effective = _dtype(args.device, args.precision)
    return "" if effective == _dtype(args.device, "auto") else f"_{effective}"


def run_root(name: str, args) -> Path:
    """The folder of this protocol's run dirs: a new step budget (or --smoke, or another precision) never resumes
    another's runs."""
    return RESULTS / "runs" / (f"knowsam_{name}_steps{args.max_steps}" + ("_smoke" if args.smoke else "")
                               + precision_tag(args) + device_tag(args.device))


def val_curve(run_dir: Path) -> list[tuple[int, float]]:
    """``(optimiser step, validation Dice)`` of every validated epoch, from the run's metrics.csv."""
    import csv

    with open(run_dir / "metrics.csv", newline="") as fh:
        return [(int(r["step"]), float(r["val_dice"])) for r in csv.DictReader(fh) if r.get("val_dice") not in (None, "")]


def convergence(curve: list[tuple[int, float]], steps: int) -> dict:
    """The rule for (c): the best validation Dice reached in the last ``CONVERGED_TAIL`` of the ``steps`` gains
    less than ``CONVERGED_GAIN`` over the best reached before it. The best-so-far (what best-checkpoint keeping
    sees) instead of two single points, so one noisy validation neither makes nor breaks it. Fewer than
    ``MIN_VAL_POINTS`` points, or none before the tail: not assessable; a curve whose best never rose
    ``CONVERGED_GAIN`` above its first point has not learned, which is no convergence either (``converged``
    False, ``reason`` says)."""
    start = (1 - CONVERGED_TAIL) * steps
    before = [d for s, d in curve if s <= start]
    tail = [d for s, d in curve if s > start]
    out = {"val_points": len(curve), "tail_from_step": round(start), "steps": steps}
    if len(curve) < MIN_VAL_POINTS or not before or not tail:
        return {**out, "gain": None, "converged": False,
                "reason": f"{len(curve)} validation points ({len(before)} before step {round(start)}, {len(tail)} "
                          f"after); the rule needs >= {MIN_VAL_POINTS} with some on both sides"}
    gain = max(before + tail) - max(before)
    learned = max(before + tail) - curve[0][1] >= CONVERGED_GAIN
    return {**out, "gain": gain, "converged": gain < CONVERGED_GAIN and learned,
            "reason": "" if learned else f"flat from its first validation ({curve[0][1]:.4f}): not learning"}


def targets(rows: list[dict], c_converged: dict[str, bool]) -> dict:
    """The issue's targets on the mean test Dice over the seeds run: (c) converged and (c) - (a) >= 0.10,
    (b) closes >= 50 % of (c) - (a), (b) > (d), (e) > (d). A target whose rows are missing is None."""
    mean = {}
    for run in "abcde":
        ds = [x["dice"] for x in rows if x["run"] == run]
        mean[run] = sum(ds) / len(ds) if ds else None
    a, b, c, d, e = (mean[k] for k in "abcde")
    width = None if a is None or c is None else c - a
    closed = None if width is None or b is None or width <= 0 else (b - a) / width
    return {
        "mean_dice": mean,
        "c_converged": {"value": all(c_converged.values()) if c_converged else None, "met": bool(c_converged)
                        and all(c_converged.values())},
        "c_minus_a": {"value": width, "target": 0.10, "met": width is not None and width >= 0.10},
        "gap_closed": {"value": closed, "target": 0.5, "met": closed is not None and closed >= 0.5},
        "b_minus_d": {"value": None if b is None or d is None else b - d, "target": 0.0,
                      "met": b is not None and d is not None and b > d},
        "e_minus_d": {"value": None if e is None or d is None else e - d, "target": 0.0,
                      "met": e is not None and d is not None and e > d},
    }


def plot_c_curves(curves: dict[str, list[tuple[int, float]]], conv: dict[str, dict], path: Path, title: str) -> None:
    """(c)'s validation Dice against the optimiser step, one line per seed, the rule's tail window shaded."""
    from samdistill.viz.plots import plot_validation_curves

    notes = {seed: (f"gain in last {CONVERGED_TAIL:.0%}: {conv[seed]['gain']:+.3f} -> "
                    + ("converged" if conv[seed]["converged"] else "NOT converged")) if conv[seed]["gain"] is not None
             else "not assessable" for seed in curves}
    plot_validation_curves({f"seed {seed} ({notes[seed]})": pts for seed, pts in curves.items()}, path,
                           title=title, ylabel="validation Dice (prompt-free, input frame)",
                           shade_from=min(c["tail_from_step"] for c in conv.values()))


def variant_config(name: str, data: Path, variant: str, args, seed: int = 0):
    """The distillation config of one variant (also used to check that reused rows still match)."""
    from samdistill.config import load_config
    split = json.loads((data / "split.json").read_text())
    n_train = len(split["train"])
    n_lab = max(1, round(n_train * args.labeled))
    semi = variant in ("knowsam", "meanteacher", "meanteacher_skd")
    bs = 8 if semi else args.baseline_batch
    k = {"labeled": args.labeled, "batch_size": bs, "labeled_bs": 4 if semi else min(4, bs - 1),
         "input_size": args.input_size or None, "max_steps": args.max_steps}
    if variant in ("meanteacher", "meanteacher_skd"):
        k["skd"] = variant == "meanteacher_skd"
        if k["skd"]:
            k["sam_decode"] = args.sam_decode
            k["decoder_adapters"] = not args.no_decoder_adapters
    else:
        k.update(sam_decode=args.sam_decode, adapters=args.adapters)
    if semi:
        per_epoch = max(1, (n_train - n_lab) // 4)
        if variant == "knowsam":
            k.update(kd_rampup=args.kd_rampup, decoder_adapters=not args.no_decoder_adapters)
    else:
        k.update(SUPERVISED_ONLY)
        if variant == "supervised":
            k["unlabeled"] = False
            per_epoch = math.ceil(n_lab / bs)
        else:
            k["labeled"] = 1.0
            per_epoch = math.ceil(n_train / bs)
    epochs = math.ceil(args.max_steps / per_epoch)  # what max_steps takes; the last epoch is cut short
    k["epochs"] = epochs
    method = "meanteacher" if variant.startswith("meanteacher") else "knowsam"
    return epochs, load_config(method, {
        "data": {"path": str(data)}, "threads": args.threads, method: k, "seed": seed,
        "cache": {"dir": str(args.cache_dir)}, "progress": not args.quiet,
        "val_every": max(1, epochs // MIN_VAL_POINTS),  # >= 10 validation points (every epoch below 20 epochs)
        # the arithmetic auto gives on this device is written as auto, so --precision fp32 on a CPU is the same run
        "overlays": 2, "device": args.device, "precision": args.precision if precision_tag(args) else "auto",
    })


def file_seeds(stem: str) -> list[int]:
    """The training seeds a knowsam results file holds, from its name: ``..._seed1`` -> [1], ``..._seed0_1`` ->
    [0, 1], no seed tag -> [0]."""
    m = re.search(r"_seed(\d+(?:_\d+)*)(?:_|$)", stem)
    return [int(x) for x in m.group(1).split("_")] if m else [0]


def reused_variant(name: str, data: Path, variant: str, args, seed: int = 0) -> dict:
    """A row of this seed from an earlier results file of this dataset (rows or comparison), on the same kind of
    device and the same data (a copy made by shrink_dataset.py is other data), whose config is the one we would
    run now (the config holds the step budget; the seed is the file's and the row's)."""
    _, cfg = variant_config(name, data, variant, args, seed)
    now = section(cfg).model_dump(mode="json")
    tried = []
    tag, note = device_tag(args.device), data_note(data)
    for old in sorted(RESULTS.glob(f"knowsam_{name}*.json")):
        if (old.stem.endswith("_gpu") != bool(tag) or seed not in file_seeds(old.stem) or "_smoke" in old.stem
                or next((t for t in ("_bf16", "_fp32") if t in old.stem), "") != precision_tag(args)
                or "_speed" in old.stem):
            continue
        prev = json.loads(old.read_text())
        key = f"{RUN[variant]}_seed{seed}" if "rows" in prev else f"{variant}_seed{seed}" if seed else variant
        row = prev.get("runs", {}).get(key)
        if row is None or prev.get("data_note", "") != note:
            continue
        # keys added to the config since that run must not apply to this variant (SAM options when sam=false)
        diff = sorted(k for k in row["config"] if row["config"][k] != now.get(k))
        new_keys = sorted(set(now) - set(row["config"]))
        if not diff and not (new_keys and now.get("sam")):
            row = {**row, "machine": row_machine(row, prev)}
            if row.get("reused_from"):  # a reused row keeps its origin
                return row
            # when the row was trained (rows from before that was recorded: when its file was written)
            when = f"trained {row['trained']}" if row.get("trained") else f"file written {prev.get('written', '?')}"
            return {**row, "reused_from": f"{old.name}, {when}, {row['machine']}"}
        tried.append(f"{old.name}: differs in {diff or new_keys}")
    raise SystemExit(f"no earlier ({variant}) run of seed {seed} with this config "
                     f"({'; '.join(tried) or 'no results file'}): run it (add it to --variants)")


def row_machine(row: dict, prev: dict) -> str:
    """The CPU a row of results file ``prev`` was trained on: its own, or the file's for a row from before rows
    recorded their own."""
    return row.get("machine", prev.get("machine", "unknown CPU"))


def merge_rows(prev: dict, rows: dict) -> dict:
    """This call's rows over an earlier rows file's ``prev``: rows of other variants stay (e.g. two processes
    training variants in parallel), each with the CPU it was trained on, since the file's machine becomes this
    call's."""
    kept = {v: {**x, "machine": row_machine(x, prev)} for v, x in prev.get("runs", {}).items() if v not in rows}
    return {**kept, **rows}


def run_variant(name: str, data: Path, variant: str, args, seed: int = 0) -> dict:
    from samdistill.api import distill, evaluate_model

    run_dir = run_root(name, args) / (variant + (f"_seed{seed}" if seed else ""))
    epochs, cfg = variant_config(name, data, variant, args, seed)
    t0 = time.time()
    resumed = (run_dir / "checkpoints" / "last.pt").exists()  # taken up from an earlier call (e.g. --train-only)
    # a run trained to the end with this config (threads/progress aside) is read, not redone; a differing config
    # or an interrupted run continues from its checkpoint
    run = distill(cfg, run_dir, resume="auto")
    if run.get("interrupted"):  # SIGTERM (e.g. to move the run to more threads): its checkpoint is on disk
        raise SystemExit(f"({RUN[variant]}) {variant} stopped ({run['reason']}) after {run['step']} steps; call the "
                         "same command again to resume it")
    finished = bool(run.get("already_finished"))
    wall = run["total_seconds"] if finished else time.time() - t0  # a run read: its own wall time
    evaluated = run_dir / "eval" / "summary.json"
    if finished and evaluated.exists():  # trained and evaluated before: read both
        ev = json.loads(evaluated.read_text())
    else:
        ev = evaluate_model(str(run_dir / "student.pt"), data, out_dir=run_dir / "eval", split="test", force=True,
                            threads=args.threads, progress=not args.quiet, device=args.device)
    # epoch_seconds: every epoch's training time, also across resumes (train_seconds: this call only)
    curve = val_curve(run_dir)
    return {"variant": variant, "run": RUN[variant], "seed": seed, "method": cfg.method, "epochs": epochs,
            "steps": run["steps"], "train_seconds": run.get("epoch_seconds", run["train_seconds"]),
            "wall_seconds": wall, "resumed": resumed or finished, "best_val": run["best"],
            "trained": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime((run_dir / "student.pt").stat().st_mtime)),
            "throughput": throughput(run_dir)[cfg.method]["images_per_s"], "threads": threads_used(run_dir),
            "n_labeled": run["n_labeled"], "machine": (run.get("machine") or {}).get("cpu", "unknown CPU"),
            "n_unlabeled": run["n_unlabeled"], "config": section(cfg).model_dump(mode="json"),
            "val_every": cfg.val_every, "val_curve": curve, "run_dir": str(run_dir),
            "test": {k: ev[k] for k in ("dice", "iou", "hd95", "nsd", "n", "dice_std", "total_gmacs", "params",
                                        "latency_ms") if k in ev}}


def speed_results(name: str, data: Path, args, machine: dict) -> dict:
    """Training images/s of each of ``--variants`` in fp32 and in bf16 autocast: ``--speed`` optimiser steps per
    run with the protocol's config (so mixing is on after its 20 %), in throwaway run dirs (nothing is kept but
    the figures); validation and loading excluded (the trainer's own ``images_per_s``). With ``--speed-base COMMIT``
    the code of that commit (a temporary git worktree, its ``samdistill distill`` in a subprocess, fp32) trains the
    same config first, so before and after are timed in one call, back to back."""
    import tempfile

    from samdistill.api import distill

    base = _base_worktree(args.speed_base) if args.speed_base else None
    rows, load_start = [], os.getloadavg()[0]
    try:
        for v in args.variants:
            for prec in ("base", "fp32", "bf16") if base else ("fp32", "bf16"):
                a = argparse.Namespace(**{**vars(args), "max_steps": args.speed, "quiet": True,
                                          "precision": "fp32" if prec == "base" else prec})
                _, cfg = variant_config(name, data, v, a)
                cfg = cfg.model_copy(update={"val_every": 10**6, "overlays": 0})
                with tempfile.TemporaryDirectory(prefix="knowsam_speed_") as tmp:
                    if prec == "base":
                        _distill_at(base[0], cfg, Path(tmp) / v)
                    else:
                        distill(cfg, Path(tmp) / v, resume=False)
                    tp = throughput(Path(tmp) / v)[cfg.method]
                rows.append({"variant": v, "run": RUN[v], "precision": "fp32" if prec == "base" else prec,
                             **({"code": "base"} if prec == "base" else {}), "steps": args.speed,
                             "images_per_s": tp["images_per_s"], "seconds_per_step": tp["train_seconds"] / args.speed})
                print(f"{v} {prec}: {tp['images_per_s']:.2f} images/s")
    finally:
        if base:
            base[1]()
    return {"dataset": name, "machine": machine.get("cpu", "unknown CPU"), "threads": args.threads,
            "device": args.device, "steps": args.speed, "variants": list(args.variants),
            "baseline_batch": args.baseline_batch, "input_size": args.input_size or None,
            "sam_decode": args.sam_decode, "rows": rows, "load_average": [load_start, os.getloadavg()[0]],
            **({"base": base[2]} if base else {}),
            "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _base_worktree(commit: str):
    """A detached git worktree of ``commit`` in a temporary folder: ``(its src path, remove(), "<short> <subject>")``."""
    import subprocess
    import tempfile

    repo = Path(__file__).resolve().parents[1]
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True, text=True).stdout
    try:
        label = git("log", "-1", "--format=%h %s", commit).strip()
        label = label if len(label) <= 100 else label[:99] + "…"
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"--speed-base {commit}: not a commit of this repository ({exc.stderr.strip()})") from None
    tmp = tempfile.mkdtemp(prefix="knowsam_base_")
    git("worktree", "add", "--detach", tmp, commit)
    return Path(tmp) / "src", lambda: git("worktree", "remove", "--force", tmp), label


def _distill_at(src: Path, cfg, out: Path) -> None:
    """``samdistill distill`` of the code under ``src`` with ``cfg``'s method section and run keys as overrides
    (the keys that differ from that method's defaults, so an older config that lacks a newer key still parses)."""
    import subprocess
    import sys

    from samdistill.config import flatten, load_config

    now = flatten(cfg.model_dump(mode="json"))
    default = flatten(load_config(cfg.method, {}).model_dump(mode="json"))
    keep = {k: v for k, v in now.items() if v != default.get(k, object()) and k != "method"}
    overrides = [f"{k}={'null' if v is None else str(v).lower() if isinstance(v, bool) else v}" for k, v in keep.items()]
    cmd = [sys.executable, "-m", "samdistill", "distill", "--method", cfg.method, "--out", str(out), *overrides]
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the base commit's distill failed ({done.returncode}): {done.stderr.strip()[-500:]}")


def speed_markdown(r: dict) -> str:
    by = {(x["variant"], x.get("code", "now"), x["precision"]): x for x in r["rows"]}
    base = "base" in r
    table = []
    for v in dict.fromkeys(x["variant"] for x in r["rows"]):
        fp32, bf16 = by[v, "now", "fp32"], by[v, "now", "bf16"]
        row = [NAMES[v]]
        if base:
            b = by[v, "base", "fp32"]
            row += [f"{b['images_per_s']:.2f}", f"{b['seconds_per_step']:.2f}"]
        row += [f"{fp32['images_per_s']:.2f}", f"{fp32['seconds_per_step']:.2f}", f"{bf16['images_per_s']:.2f}",
                f"{bf16['seconds_per_step']:.2f}", f"{bf16['images_per_s'] / fp32['images_per_s']:.2f}x"]
        if base:
            row += [f"{fp32['images_per_s'] / b['images_per_s']:.2f}x", f"{bf16['images_per_s'] / b['images_per_s']:.2f}x"]
        table.append(row)
    columns = ["run", "fp32 images/s", "fp32 s/step", "bf16 images/s", "bf16 s/step", "bf16 speed-up"]
    if base:
        columns = (["run", "before: fp32 images/s", "before: s/step"] + columns[1:]
                   + ["fp32 vs before", "bf16 vs before"])
    return "\n".join([
        f"# KnowSAM training speed on {r['dataset']}: fp32 against bf16 autocast"
        + (" and against the code before" if base else ""), "",
        f"Machine: {r['machine']}, {r['threads']} torch threads, device {r['device']}. Each run trains {r['steps']} "
        f"optimiser steps of the protocol's config (students at {r['input_size'] or 'the teacher-sized'} px, SAM decode "
        f"{r['sam_decode']}, cached embeddings; batch 8 = 4 + 4 for (b), (d), (e), {r.get('baseline_batch', 4)} for "
        "(a), (c)); images/s is the trainer's (data, forward, backward and optimiser; validation excluded), first step "
        f"included. Written {r['written']} by `python benchmarks/knowsam.py --datasets {r['dataset']} --speed "
        f"{r['steps']}" + (f" --variants {' '.join(r['variants'])} --threads {r['threads']}" if "variants" in r else "")
        + (f" --baseline-batch {r['baseline_batch']}" if r.get("baseline_batch", 4) != 4 else "")
        + (f" --speed-base {r['base'].split()[0]}" if base else "") + "`."
        + (f" Before = the code of commit {r['base'].split()[0]} (\"{r['base'].split(' ', 1)[1]}\") in fp32, timed in "
           "the same call just before today's fp32 and bf16 runs of each row." if base else "")
        + (" Load average (1 min) at the start / end: {:.1f} / {:.1f} (other jobs on the machine show here; fp32 and "
           "bf16 of a run are timed back to back, so they share the load).".format(*r["load_average"])
           if "load_average" in r else ""), "",
        markdown_table(table, columns), ""])


def teacher_reference(name: str, data: Path, args) -> dict:
    smoke = "_smoke" if args.smoke else ""  # a shrunk copy's teacher figures never stand for the dataset's
    ref = RESULTS / "runs" / f"teacher_litemedsam_{name}{smoke}{device_tag(args.device)}" / "summary.json"
    if ref.exists():
        s = json.loads(ref.read_text())
        source = str(ref.relative_to(RESULTS.parent))
    else:
        from samdistill.api import evaluate_model

        s = evaluate_model("litemedsam", data, out_dir=ref.parent, split="test", force=True, threads=args.threads,
                           progress=not args.quiet, device=args.device)
        source = "evaluated in this run"
    return {"dice": s["dice"], "iou": s["iou"], "hd95": s["hd95"], "n": s["n"], "source": source,
            "prompt": s["prompt"]["description"]}


def markdown(r: dict) -> str:
    """The results file: seeds combined from several comparisons (``"sources"``), the step-budget protocol (five
    rows, ``"rows"``) or, for files written before it, the three-row epoch protocol (rendered as it was)."""
    if "sources" in r:
        return combined_markdown(r)
    return protocol_markdown(r) if "rows" in r else _epoch_markdown(r)


def combined_results(stems: list[str]) -> dict:
    """The issue's targets on the mean over the training seeds, from one comparison file per seed (``stems``,
    e.g. seed 0 at 4000 steps and seed 1 at 6000, each at the budget where its own (c) converged). The files
    must be comparisons of the step-budget protocol on one dataset and label fraction, none a smoke run, no
    seed in two of them; each row keeps its file's step budget and CPU."""
    if len(set(stems)) != len(stems) or len(stems) < 2:
        raise SystemExit(f"--combine: give two or more different comparison files, one per seed (got {stems})")
    files = {}
    for stem in stems:
        path = RESULTS / f"{stem}.json"
        if not path.exists():
            raise SystemExit(f"--combine: no results file {path.name}")
        r = json.loads(path.read_text())
        if "rows" not in r or "sources" in r or "_rows" in stem or r.get("smoke"):
            raise SystemExit(f"--combine: {path.name} is not a comparison of the step-budget protocol "
                             "(the file a call without --train-only writes)")
        files[stem] = r
    first = next(iter(files.values()))
    for key in ("dataset", "labeled", "input_size", "adapters", "gpu"):
        values = {stem: r.get(key) for stem, r in files.items()}
        if len(set(map(str, values.values()))) > 1:
            raise SystemExit(f"--combine: the files differ in {key}: {values}")
    seen = {}
    for stem, r in files.items():
        for seed in {x["seed"] for x in r["rows"]}:
            if seed in seen:
                raise SystemExit(f"--combine: seed {seed} is in both {seen[seed]} and {stem}")
            seen[seed] = stem
    rows, conv = [], {}
    for stem, r in files.items():
        runs = r["runs"]
        rows += [{**x, "machine": row_machine(runs.get(f"{x['run']}_seed{x['seed']}", {}), r), "source": stem}
                 for x in r["rows"]]
        conv.update(r["convergence"])
    rows.sort(key=lambda x: (x["seed"], x["run"]))
    c_converged = {seed: c["converged"] for seed, c in conv.items()}
    return {"dataset": first["dataset"], "machine": ", ".join(sorted({x["machine"] for x in rows})), "rows": rows,
            "c_converged": c_converged, "targets": targets(rows, c_converged), "convergence": conv,
            "per_seed_targets": {str(seed): targets([x for x in rows if x["seed"] == seed],
                                                    {str(seed): c_converged.get(str(seed), False)})
                                 for seed in sorted(seen)},
            "sources": [{"file": f"{stem}.md", "seeds": sorted({x["seed"] for x in r["rows"]}),
                         "max_steps": r["max_steps"], "c_curve": r["c_curve"], "written": r.get("written")}
                        for stem, r in files.items()],
            "labeled": first["labeled"], "input_size": first["input_size"], "adapters": first["adapters"],
            "gpu": first.get("gpu"), "teacher": first["teacher"],
            "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def combined_markdown(r: dict) -> str:
    """Every seed's five rows at its own step budget, (c)'s convergence per seed, the targets on the means."""
    t = r["targets"]
    lines = [f"# KnowSAM and Mean Teacher on {r['dataset']} ({r['labeled'] * 100:g} % labels), "
             f"training seeds {', '.join(r['per_seed_targets'])} combined", "",
             "Each seed's rows come from its own comparison file, trained for the step budget at which that seed's "
             "(c) converged by the rule (every row of a seed has the same budget); the targets below are on the "
             "mean test Dice over the seeds. Sources: " + "; ".join(
                 f"`{s['file']}` (seed {', '.join(map(str, s['seeds']))}, {s['max_steps']} steps, written "
                 f"{s['written']})" for s in r["sources"]) + ". "
             + ("Device: " + r["gpu"] + ". " if r.get("gpu") else "No GPU; ")
             + f"students at {r['input_size'] or 'the teacher-sized'} px; test split, prompt-free, metrics at original "
             "resolution (MONAI). Train min and the machine are each row's (see the source files for threads).", ""]
    table = [[NAMES[VARIANTS["abcde".index(x["run"])]], x["seed"], x["steps"], f"{x['train_minutes']:.1f}",
              x["machine"], f"{x['images_per_s']:.2f}", f"{x['dice']:.4f}", f"{x['iou']:.4f}", f"{x['hd95']:.1f}"]
             for x in r["rows"]]
    lines.append(markdown_table(table, ["run", "seed", "steps", "train min", "machine", "train images/s", "test Dice",
                                        "IoU", "HD95 px"]))
    lines += _convergence_lines({**r, "c_curve": ", ".join(s["c_curve"] for s in r["sources"])})
    lines += _target_lines(t)
    lines += ["", "Per seed: " + "; ".join(
        f"seed {seed}: (c) - (a) {_fmt(p['c_minus_a']['value'])}, gap closed {_fmt(p['gap_closed']['value'], '.2f')}, "
        f"(b) - (d) {_fmt(p['b_minus_d']['value'])}, (e) - (d) {_fmt(p['e_minus_d']['value'])}"
        for seed, p in r["per_seed_targets"].items()) + "."]
    return "\n".join(lines) + "\n"


def _epoch_markdown(r: dict) -> str:
    rows = r["runs"]
    lines = [
        f"# KnowSAM on {r['dataset']} ({r['labeled'] * 100:g} % labels)",
        "",
        (f"Machine: {r['machine']}, {r['threads']} torch threads, no GPU. " if not r.get("gpu") else
         f"Device: {r['gpu']} (bf16 autocast), host CPU {r['machine']}. ")
        + (f"Data: {r['data_note']} " if r.get("data_note") else "") + "Wall time of this invocation "
        f"{r['wall_seconds'] / 60:.1f} min (reused rows: see their source"
        + ("; runs marked * were trained by an earlier call, e.g. `benchmarks/gpu.sh knowsam` trains (a) + (c) and "
           "(b) in parallel with --train-only, and were taken up from their run dirs here; train min is their training"
           if any(x.get("resumed") for x in rows.values()) else "") + ").",
        f"Test split: {rows['knowsam']['test']['n']} images, prompt-free students (no prompt), metrics at original "
        "resolution (MONAI; empty vs empty = Dice 1).",
        "",
    ]
    full = rows["knowsam"]["config"].get("adapters") == "encoder"
    names = {"supervised": "(a) labeled subset alone",
             "knowsam": "(b) KnowSAM (adapters in SAM's encoder)" if full else "(b) KnowSAM (frozen encoder, cached)",
             "all_labels": "(c) all labels (upper bound)"}
    table = []
    for v in ("supervised", "knowsam", "all_labels"):
        x = rows[v]
        t = x["test"]
        reused = (f" (reused from {x['reused_from']})" if x.get("reused_from") else "") + ("*" if x.get("resumed") else "")
        table.append([names[v] + reused, f"{x['n_labeled']} / {x['n_unlabeled']}", f"{x['steps']} ({x['epochs']})",
                      f"{x['train_seconds'] / 60:.1f}", f"{t['dice']:.4f}", f"{t['iou']:.4f}", f"{t['hd95']:.1f}"])
    te = r["teacher"]
    table.append(["LiteMedSAM teacher, tight box (reference)", "-", "-", "-", f"{te['dice']:.4f}", f"{te['iou']:.4f}",
                  f"{te['hd95']:.1f}"])
    lines.append(markdown_table(table, ["run", "labeled / unlabeled train images", "steps (epochs)", "train min",
                                        "test Dice", "IoU", "HD95 px"]))
    width = rows["all_labels"]["test"]["dice"] - rows["supervised"]["test"]["dice"]  # (c) - (a)
    kc = rows["knowsam"]["config"]
    sam_parts = "prompt generator" + (" + adapters in its mask decoder" if kc.get("decoder_adapters") else "")
    ramp = (f"KD and entropy ramped in over the first {kc['kd_rampup']:.0%} of the run" if kc.get("kd_rampup")
            else "KD and entropy constant (as published)")
    lines += [
        "",
        (f"Gap closed by KnowSAM: (b - a) / (c - a) = {r['gap_closed']:.2f} (target >= 0.5: "
         f"{'met' if r['gap_closed'] >= 0.5 else 'NOT met'}); (c) - (a) = {width:.4f}"
         + (" — under 0.02, so at this schedule the upper bound hardly beats the baseline and the ratio says little"
            if width < 0.02 else "") + "." if width > 0
         else "Gap closed by KnowSAM: undefined — the all-labels upper bound (c) scored below the labeled-subset "
              "baseline (a), so at this schedule the students are not trained far enough to rank the methods "
              "(target >= 0.5: NOT met, not measurable here)."),
        "",
        f"Student: UNet {rows['knowsam']['test']['params']['unet'] / 1e6:.2f} M + VNet "
        f"{rows['knowsam']['test']['params']['vnet'] / 1e6:.2f} M + fusion {rows['knowsam']['test']['params']['fusion'] / 1e6:.3f} M "
        f"parameters, {rows['knowsam']['test']['total_gmacs']:.2f} GMACs per image at its {r['input_size'] or 'teacher-sized'} px "
        "input (SAM keeps its own 256 px frame) "
        f"(the LiteMedSAM teacher needs a box; the student needs none).",
        "",
        ("Compute: GPU, the full method (`knowsam.adapters=encoder`: adapters in LiteMedSAM's image encoder train, "
         f"the encoder runs every step; SAM's {sam_parts} train too)" if full else
         "Compute: CPU only, frozen-encoder variant (`knowsam.adapters=none`: LiteMedSAM's image encoder is not "
         f"adapted, its cached embeddings are used; SAM's {sam_parts} trained)")
        + f", {ramp}, SAM decoded as `{r['sam_decode']}`, "
        f"a short schedule (about the same number of optimiser steps per run; KnowSAM's batch 8 = 4 labeled + 4 "
        f"unlabeled, (a) and (c) batches of {rows['supervised']['config']['batch_size']} labeled images), student "
        f"optimiser {r['optim']}. "
        + ("Training throughput (images/s, validation excluded): " + ", ".join(
            f"{v} {rows[v]['throughput']:.0f}" for v in ("supervised", "knowsam", "all_labels")
            if rows[v].get("throughput")) + ". " if any(rows[v].get("throughput") for v in rows) else "")
        + ("The published schedule (tens of thousands of iterations) was not run. " if full else
           "The published schedule (tens of thousands of iterations, adapters in the encoder, GPU) was not run here. ")
        + "Teacher figures: " + te["source"] + ".",
    ]
    return "\n".join(lines) + "\n"


def _fmt(x, spec: str = "+.4f") -> str:
    return "-" if x is None else format(x, spec)


def _arithmetic(r: dict) -> str | None:
    """``fp32`` / ``bf16 autocast``: how the runs of a results file trained, where it records ``precision``; None
    for files written before the key (they trained in the recipe's default and keep their rendering)."""
    if "precision" not in r:
        return None
    return "bf16 autocast" if _dtype("cuda" if r.get("gpu") else "cpu", r["precision"]) == "bf16" else "fp32"


def _dtype(device: str, precision: str) -> str:
    """``bf16`` / ``fp32``: what ``precision`` trains in on ``device`` (samdistill's one rule for it)."""
    import torch

    from samdistill.devices import training_dtype

    return "bf16" if training_dtype(device, precision) == torch.bfloat16 else "fp32"


def protocol_markdown(r: dict) -> str:
    """Five rows per seed, each with the same optimiser-step budget; (c)'s convergence; the issue's targets."""
    runs, t = r["runs"], r["targets"]
    resumed = any(x.get("resumed") for x in runs.values())
    per_row = rows_carry_threads(runs.values())
    mixed = several_machines(runs.values())
    lines = [
        f"# KnowSAM and Mean Teacher on {r['dataset']} ({r['labeled'] * 100:g} % labels, {r['max_steps']} steps per run)"
        + (" — SMOKE RUN, not a result" if r.get("smoke") else ""),
        "",
        (f"Machine: {MACHINES_NOTE if mixed else r['machine']}, "
         f"{THREADS_NOTE if per_row else str(r['threads']) + ' torch threads'}, no GPU"
         + (f", {_arithmetic(r)}" if _arithmetic(r) else "") + ". " if not r.get("gpu") else
         f"Device: {r['gpu']} ({_arithmetic(r) or 'bf16 autocast'}), host CPU {r['machine']}. ")
        + (f"Data: {r['data_note']} " if r.get("data_note") else "")
        + f"Wall time of this invocation {r['wall_seconds'] / 60:.1f} min"
        + (" (runs marked * were trained, wholly or partly, by an earlier call and taken up from their run dirs; "
           "train min is their own training time across calls)" if resumed else "") + ". "
        + f"Students at {r['input_size'] or 'the teacher-sized'} px (SAM keeps its own 256 px frame); test split "
        f"{r['rows'][0]['n'] if r['rows'] and 'n' in r['rows'][0] else '?'} images, prompt-free, metrics at original "
        "resolution (MONAI; empty vs empty = Dice 1).",
        "",
    ]
    table = []
    for x in r["rows"]:
        v = runs[f"{x['run']}_seed{x['seed']}"]
        mark = (f" (reused from {v['reused_from']})" if v.get("reused_from") else "") + ("*" if v.get("resumed") else "")
        table.append([NAMES[v["variant"]] + mark, x["seed"], f"{v['n_labeled']} / {v['n_unlabeled']}",
                      f"{x['steps']} (batch {v['config']['batch_size']})", f"{x['train_minutes']:.1f}",
                      *([v.get("machine", "not recorded")] if mixed else []),
                      *([v.get("threads", "not recorded")] if per_row else []), f"{x['images_per_s']:.2f}",
                      f"{x['dice']:.4f}", f"{x['iou']:.4f}", f"{x['hd95']:.1f}"])
    te = r["teacher"]
    table.append(["LiteMedSAM teacher, tight box (reference)", "-", "-", "-", "-", *(["-"] if mixed else []),
                  *(["-"] if per_row else []), "-",
                  f"{te['dice']:.4f}", f"{te['iou']:.4f}", f"{te['hd95']:.1f}"])
    lines.append(markdown_table(table, ["run", "seed", "labeled / unlabeled train images", "steps", "train min",
                                        *(["machine"] if mixed else []),
                                        *(["torch threads"] if per_row else []), "train images/s", "test Dice",
                                        "IoU", "HD95 px"]))
    lines += _convergence_lines(r)
    lines += _target_lines(t) + [
        "",
        "Compute: " + ("the full method on a GPU (adapters in LiteMedSAM's image encoder)" if r["adapters"] == "encoder"
                       else "frozen-encoder variant (`adapters=none`: cached LiteMedSAM embeddings; SAM's prompt "
                            "generator + decoder adapters train)")
        + f"; SAM decoded as `{r['sam_decode']}`; KnowSAM's KD and entropy ramped in over {r['kd_rampup']:.0%} of the run; "
        "students: SGD 0.01 momentum 0.9, linear decay over the step budget (as published); (b) is UNet + VNet + fusion, "
        "(d) and (e) KnowSAM's UNet alone; semi-supervised batches 8 = 4 labeled + 4 unlabeled. "
        "Teacher figures: " + te["source"] + ".",
    ]
    return "\n".join(lines) + "\n"


def rows_markdown(r: dict) -> str:
    """The rows file of --train-only: each variant's result, no comparison. A file of the step-budget protocol
    (``max_steps`` recorded) adds each row's training minutes and images/s, and (c)'s convergence where (c) ran."""
    if "max_steps" not in r:  # rows written before the step budget: rendered as they were
        table = markdown_table([[v, f"{x['steps']} ({x['epochs']})", x["config"]["batch_size"],
                                 f"{x['test']['dice']:.4f}", f"{x['test']['iou']:.4f}", f"{x['test']['hd95']:.1f}"]
                                for v, x in r["runs"].items()],
                               ["run", "steps (epochs)", "batch", "test Dice", "IoU", "HD95 px"])
        return f"# KnowSAM benchmark rows on {r['dataset']} (seed {r['seed']}, no comparison)\n\n{table}\n"
    per_row = rows_carry_threads(r["runs"].values())
    mixed = several_machines(r["runs"].values())
    table = markdown_table([[NAMES[x["variant"]] + ("*" if x.get("resumed") else ""), x["seed"],
                             f"{x['n_labeled']} / {x['n_unlabeled']}", f"{x['steps']} (batch {x['config']['batch_size']})",
                             f"{x['train_seconds'] / 60:.1f}", *([x.get("machine", "not recorded")] if mixed else []),
                             *([x.get("threads", "not recorded")] if per_row else []),
                             _fmt(x.get("throughput"), ".2f"),
                             f"{x['test']['dice']:.4f}", f"{x['test']['iou']:.4f}", f"{x['test']['hd95']:.1f}"]
                            for x in sorted(r["runs"].values(), key=lambda x: (x["seed"], x["run"]))],
                           ["run", "seed", "labeled / unlabeled train images", "steps", "train min",
                            *(["machine"] if mixed else []),
                            *(["torch threads"] if per_row else []), "train images/s", "test Dice", "IoU", "HD95 px"])
    threads = (THREADS_NOTE if per_row else f"{r['threads']} torch threads per run")
    lines = [f"# KnowSAM benchmark rows on {r['dataset']} ({r['max_steps']} steps per run; rows only: the comparison "
             f"is knowsam_{r['dataset']}.md, written by a call without --train-only once a seed has all five)", "",
             f"Machine: {MACHINES_NOTE if mixed else r['machine']}, {threads}"
             f"{', ' + _arithmetic(r) if _arithmetic(r) else ''}. Rows trained by "
             "separate `--train-only` calls, possibly side by side on the same cores (train min is each run's own "
             "training time; runs marked * were taken up from their run dirs). Test split, prompt-free, metrics at "
             "original resolution.", "", table]
    lines += _convergence_lines(r)
    rows = [{"run": x["run"], "seed": x["seed"], "dice": x["test"]["dice"]} for x in r["runs"].values()]
    if len({x["run"] for x in rows}) >= 2:  # what the rows so far say of the targets (the same rule as the comparison)
        lines += _target_lines(targets(rows, {str(k): v for k, v in r.get("c_converged", {}).items()}), pending=True)
    return "\n".join(lines) + "\n"


THREADS_NOTE = ("torch threads per row (each run's, per epoch from its metrics.csv; a run whose epochs predate "
                "that record shows its last training call's)")
MACHINES_NOTE = "CPU per row (the machine of the call that finished each run)"


def several_machines(runs) -> bool:
    """Rows trained on different CPUs (e.g. a row taken from an earlier session's file): a machine column then."""
    return len({x["machine"] for x in runs if x.get("machine")}) > 1


def _target_lines(t: dict, pending: bool = False) -> list[str]:
    """The issue's targets as a list; ``pending`` (a rows file): a target whose rows are not all there yet says
    so instead of NOT met."""
    m = t["mean_dice"]

    def met(k: str) -> str:
        if pending and t[k]["value"] is None:
            return "waits for its rows"
        return "met" if t[k]["met"] else "NOT met"
    return [
        "",
        "Targets (issue 24; mean test Dice over the seeds run: " + ", ".join(
            f"({k}) {_fmt(m[k], '.4f')}" for k in "abcde") + "):",
        "",
        f"- (c) converged by the rule: {met('c_converged')}",
        f"- (c) - (a) >= 0.10: {_fmt(t['c_minus_a']['value'])} -> {met('c_minus_a')}",
        f"- (b) closes >= 50 % of (c) - (a): (b - a) / (c - a) = {_fmt(t['gap_closed']['value'], '.2f')} -> "
        f"{met('gap_closed')}" + ("" if t["c_minus_a"]["value"] is None or t["c_minus_a"]["value"] > 0 else
                                   " (undefined: (c) did not beat (a))"),
        f"- (b) > (d): {_fmt(t['b_minus_d']['value'])} -> {met('b_minus_d')}",
        f"- (e) > (d): {_fmt(t['e_minus_d']['value'])} -> {met('e_minus_d')}",
    ]


def _convergence_lines(r: dict) -> list[str]:
    """(c)'s convergence under the rule, one line per seed (none when (c) is not in ``r``)."""
    if not r.get("convergence"):
        return []
    lines = ["", f"Convergence of (c) (rule: the best validation Dice of the last {CONVERGED_TAIL:.0%} of its steps "
                 f"gains < {CONVERGED_GAIN} over the best before; >= {MIN_VAL_POINTS} validation points; curve: "
                 f"`{r['c_curve']}`):", ""]
    for seed, c in r["convergence"].items():
        lines.append(f"- seed {seed}: " + (f"gain {c['gain']:+.4f} over steps {c['tail_from_step']}-{c['steps']} "
                                            f"({c['val_points']} validation points) -> "
                                            + ("converged" if c["converged"] else "NOT converged")
                                            + (f" ({c['reason']})" if c.get("reason") else "")
                                            if c["gain"] is not None else f"not assessable: {c['reason']}"))
    return lines


def c_convergence(name: str, runs: dict, args, curve_png: Path) -> dict:
    """The convergence rule on every (c) run in ``runs`` (by seed), its curves drawn to ``curve_png``."""
    cs = [x for x in runs.values() if x.get("run") == "c"]
    conv = {str(x["seed"]): convergence([tuple(p) for p in x["val_curve"]], x["steps"]) for x in cs}
    if conv:
        plot_c_curves({str(x["seed"]): x["val_curve"] for x in cs}, conv, curve_png,
                      title=f"(c) all labels on {name}, {args.max_steps} steps"
                      + (f", {precision_tag(args)[1:]}" if precision_tag(args) else "") + (" (SMOKE)" if args.smoke else ""))
    return conv


def protocol_results(name: str, data: Path, runs: dict, args, machine: dict, t0: float, curve_png: Path) -> dict:
    """The issue's JSON (``rows``, ``c_converged``, ``targets``) from the runs of every seed."""
    rows = [{"run": x["run"], "seed": x["seed"], "dice": x["test"]["dice"], "iou": x["test"]["iou"],
             "hd95": x["test"]["hd95"], "n": x["test"]["n"], "steps": x["steps"], "train_minutes": x["train_seconds"] / 60,
             "images_per_s": x["throughput"], "device": args.device} for x in runs.values()]
    rows.sort(key=lambda x: (x["seed"], x["run"]))
    conv = c_convergence(name, runs, args, curve_png)
    c_converged = {seed: c["converged"] for seed, c in conv.items()}
    return {"dataset": name, "machine": machine.get("cpu", "unknown CPU"), "rows": rows, "c_converged": c_converged,
            "targets": targets(rows, c_converged), "convergence": conv, "c_curve": curve_png.name,
            "labeled": args.labeled, "threads": args.threads, "sam_decode": args.sam_decode, "adapters": args.adapters,
            "kd_rampup": args.kd_rampup, "input_size": args.input_size or None, "max_steps": args.max_steps,
            "smoke": args.smoke, "gpu": machine.get("cuda") if args.device != "cpu" else None, "precision": args.precision,
            "data_note": data_note(data), "runs": runs, "teacher": teacher_reference(name, data, args),
            "wall_seconds": time.time() - t0, "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["kvasir_seg"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--labeled", type=float, default=0.1)
    ap.add_argument("--max-steps", "--steps", type=int, default=DEFAULT_STEPS, dest="max_steps",
                    help="optimiser steps of every run (knowsam.max_steps / meanteacher.max_steps). 4000 at 128 px: "
                         "about an hour of (c) here ((c)'s step, batch 4, measured 0.89 s = 4.5 images/s on 1 thread "
                         "beside another job: 4000 steps ~ 59 min + validation; faster on 2 free threads)")
    ap.add_argument("--smoke", action="store_true",
                    help=f"pipeline check: {SMOKE_STEPS} steps per run, *_smoke results and run dirs (never commit them)")
    ap.add_argument("--cache-dir", type=Path, default=RESULTS / "runs" / ".cache", help="embedding cache folder")
    ap.add_argument("--input-size", type=int, default=128,
                    help="student input (px); 0: the teacher's (256). 128 = a quarter of the compute per step")
    ap.add_argument("--sam-decode", default="foreground", choices=["foreground", "per_class"])
    ap.add_argument("--baseline-batch", type=int, default=4,
                    help="batch of the supervised runs (a) and (c); 4 = KnowSAM's labeled part of its batch")
    ap.add_argument("--seeds", "--seed", type=int, nargs="+", default=[0],
                    help="training seeds (the labeled pick stays data.seed's)")
    ap.add_argument("--train-only", action="store_true",
                    help="train + evaluate the given --variants, write their rows only "
                         "(knowsam_<dataset>_steps<N>_rows*.json, with (c)'s convergence and curve when (c) is among them)")
    ap.add_argument("--kd-rampup", type=float, default=0.4,
                    help="knowsam.kd_rampup: ramp KD and entropy in over this fraction of the run (0: constant, "
                         "as published; 0.4 here: with constant terms the sub-networks collapsed to background "
                         "in the first epoch of a 600-step run, seen on the validation split)")
    ap.add_argument("--no-decoder-adapters", action="store_true", help="knowsam/meanteacher decoder_adapters=false")
    ap.add_argument("--adapters", default="none", choices=["none", "encoder"],
                    help="knowsam.adapters: none = frozen encoder + cached embeddings (CPU); encoder = the full method")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (cuda: knowsam_<dataset>_gpu.* results)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                    help="training arithmetic (the recipe key precision): auto = fp32 on a CPU, bf16 autocast on CUDA; "
                         "bf16 on a CPU with AMX (Intel Xeon 4th gen+) about halves a KnowSAM step "
                         "(knowsam_<dataset>_speed.md); runs and results of another arithmetic than auto's get a "
                         "_bf16 / _fp32 tag")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--speed", type=_positive, metavar="STEPS",
                    help="time the --variants instead: STEPS training steps each in fp32 and in bf16 autocast, in "
                         "throwaway run dirs -> knowsam_<dataset>_speed.{json,md} (no evaluation, no comparison)")
    ap.add_argument("--speed-base", metavar="COMMIT",
                    help="with --speed: also time the code of this commit (fp32, a temporary git worktree) first, "
                         "-> knowsam_<dataset>_speed_base.{json,md}; e.g. --speed-base 79ac2db^ (before the step cuts)")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite every results/knowsam_*.md from its .json (no training)")
    ap.add_argument("--combine", nargs="+", metavar="STEM",
                    help="no training: the targets on the mean over seeds from one comparison file per seed (stems "
                         "under results/, e.g. knowsam_kvasir_seg knowsam_kvasir_seg_steps6000_seed1) -> "
                         "knowsam_<dataset>_seeds<S>_<T>.{json,md}")
    args = ap.parse_args()
    if args.combine:
        r = combined_results(args.combine)
        write_results(f"knowsam_{r['dataset']}_seeds" + "_".join(r["per_seed_targets"]), r, markdown(r))
        return
    if args.render_only:
        stems = sorted(p.stem for p in RESULTS.glob("knowsam_*.json"))
        render_only([x for x in stems if "_rows" in x], rows_markdown)
        render_only([x for x in stems if "_speed" in x], speed_markdown)
        render_only([x for x in stems if "_rows" not in x and "_speed" not in x], markdown)
        return
    if args.smoke:
        args.max_steps = SMOKE_STEPS
    from samdistill.machine import machine_info

    machine = machine_info()
    smoke = "_smoke" if args.smoke else ""
    seeds_tag = "" if args.seeds == [0] else "_seed" + "_".join(map(str, args.seeds))
    for name in args.datasets:
        data = shared_dataset(name)
        t0 = time.time()
        if args.speed is not None:
            r = speed_results(name, data, args, machine)
            write_results(f"knowsam_{name}_speed{'_base' if args.speed_base else ''}{smoke}{device_tag(args.device)}",
                          r, speed_markdown(r))
            continue
        if args.train_only:  # rows only: knowsam_<dataset>_steps<N>_rows[_seedN].json (one file per step budget)
            stem = (f"knowsam_{name}_steps{args.max_steps}_rows{seeds_tag}{smoke}{precision_tag(args)}"
                    f"{device_tag(args.device)}")
            rows = {f"{v}_seed{s}" if s else v: run_variant(name, data, v, args, s) for s in args.seeds
                    for v in args.variants}
            old = RESULTS / f"{stem}.json"
            rows = merge_rows(json.loads(old.read_text()) if old.exists() else {}, rows)
            r = {"dataset": name, "seed": ",".join(map(str, args.seeds)), "runs": rows, "data_note": data_note(data),
                 "machine": machine.get("cpu", "unknown CPU"), "threads": args.threads, "max_steps": args.max_steps,
                 "precision": args.precision, "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
            conv = c_convergence(name, rows, args, RESULTS / f"{stem}_c_curve.png")
            if conv:
                r.update(convergence=conv, c_converged={seed: c["converged"] for seed, c in conv.items()},
                         c_curve=f"{stem}_c_curve.png")
            write_results(stem, r, rows_markdown(r))
            continue
        runs = {}
        for seed in args.seeds:
            for v in VARIANTS:
                x = run_variant(name, data, v, args, seed) if v in args.variants else reused_variant(name, data, v, args, seed)
                runs[f"{RUN[v]}_seed{seed}"] = {**x, "run": RUN[v], "seed": seed, "variant": v}
        steps_tag = "" if args.max_steps == DEFAULT_STEPS or args.smoke else f"_steps{args.max_steps}"
        stem = (f"knowsam_{name}{steps_tag}" + ("" if args.baseline_batch == 4 else f"_baseline{args.baseline_batch}")
                + seeds_tag + smoke + precision_tag(args) + device_tag(args.device))
        r = protocol_results(name, data, runs, args, machine, t0, RESULTS / f"{stem}_c_curve.png")
        write_results(stem, r, markdown(r))


if __name__ == "__main__":
    main()
