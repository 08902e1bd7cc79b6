"""Claim: KnowSAM closes at least half of the gap between training on the labeled 10 % alone and
training with all labels (same prompt-free UNet + VNet student, same steps).

For each dataset, three runs of `samdistill distill --method knowsam` on the train split:
(a) `supervised`: the labeled subset alone (knowsam.unlabeled=false, knowsam.sam=false, no
    co-training/entropy/mixing terms), (b) `knowsam`: labeled subset + the rest unlabeled, the full
    method with the frozen-encoder variant (adapters=none, cached LiteMedSAM embeddings),
(c) `all_labels`: every train image labeled, supervised only. The labeled subset of (a) and (b) is
the same seeded pick. Runs get about the same number of optimiser steps. KnowSAM's batch is 8 = 4
labeled + 4 unlabeled; the supervised runs (a) and (c) use batches of `--baseline-batch` labeled images
(default 4: the same labeled images per step as KnowSAM, the usual semi-supervised protocol, so (b)
differs from (a) only by what it adds). Each student is
evaluated with `samdistill eval` (prompt-free) on the full test split; the LiteMedSAM teacher with
tight boxes is read from the teachers benchmark (same split) or evaluated if missing.
Writes benchmarks/results/knowsam_<dataset>.{json,md}.

    python benchmarks/knowsam.py --datasets kvasir_seg --threads 2 --steps 600 --input-size 128
    python benchmarks/knowsam.py --datasets kvasir_seg --baseline-batch 8 --variants supervised all_labels

`--variants knowsam` re-runs KnowSAM alone and takes (a) and (c) from an earlier results file of the
dataset whose recorded configuration equals the one this script would run now (the md says which rows
were reused and from where); otherwise it stops and asks for the run. `--baseline-batch 8` writes
`knowsam_<dataset>_baseline8.{json,md}`.

On a GPU, the full method as published (adapters in SAM's image encoder, the teacher encoder runs every
step; students at 256 px; KD constant; SAM decoded per class) writes `knowsam_<dataset>_gpu.{json,md}`:

    python benchmarks/knowsam.py --device cuda --adapters encoder --input-size 0 --kd-rampup 0 \
        --sam-decode per_class --steps 2000
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from _common import (RESULTS, data_note, device_tag, markdown_table, render_only, shared_dataset, throughput,
                     write_results)

SUPERVISED_ONLY = {"sam": False, "consistency": 0.0, "entropy": 0.0, "mix": 0.0, "kd": 0.0}


def variant_config(name: str, data: Path, variant: str, args):
    """The distillation config of one variant (also used to check that reused rows still match)."""
    from samdistill.config import load_config
    split = json.loads((data / "split.json").read_text())
    n_train = len(split["train"])
    n_lab = max(1, round(n_train * args.labeled))
    bs = 8 if variant == "knowsam" else args.baseline_batch
    k = {"labeled": args.labeled, "batch_size": bs, "labeled_bs": min(4, bs - 1), "sam_decode": args.sam_decode,
         "input_size": args.input_size or None, "adapters": args.adapters}
    if variant == "knowsam":
        per_epoch = (n_train - n_lab) // 4
        k.update(kd_rampup=args.kd_rampup, decoder_adapters=not args.no_decoder_adapters)
    else:
        k.update(SUPERVISED_ONLY)
        if variant == "supervised":
            k["unlabeled"] = False
            per_epoch = math.ceil(n_lab / bs)
        else:
            k["labeled"] = 1.0
            per_epoch = math.ceil(n_train / bs)
    # KnowSAM rounds to the nearest epoch; the baselines never get fewer steps than asked (conservative)
    epochs = max(1, round(args.steps / per_epoch) if variant == "knowsam" else math.ceil(args.steps / per_epoch))
    k["epochs"] = epochs
    return epochs, load_config("knowsam", {
        "data": {"path": str(data)}, "threads": args.threads, "knowsam": k, "seed": args.seed,
        "cache": {"dir": str(RESULTS / "runs" / ".cache")}, "progress": not args.quiet,
        "val_every": max(1, epochs // 5), "overlays": 2, "device": args.device,
    })


def reused_variant(name: str, data: Path, variant: str, args) -> dict:
    """A row from an earlier results file of this dataset, on the same kind of device and the same data (a copy
    made by shrink_dataset.py is other data), whose config is the one we would run now."""
    if args.seed:
        raise SystemExit(f"rows are reused only for seed 0; run ({variant}) too (add it to --variants)")
    _, cfg = variant_config(name, data, variant, args)
    now = cfg.knowsam.model_dump(mode="json")
    tried = []
    tag, note = device_tag(args.device), data_note(data)
    for old in sorted(RESULTS.glob(f"knowsam_{name}*.json")):
        if old.stem.endswith("_gpu") != bool(tag) or "_seed" in old.stem:  # other device / training seed
            continue
        prev = json.loads(old.read_text())
        row = prev.get("runs", {}).get(variant)
        if row is None or prev.get("data_note", "") != note:
            continue
        # keys added to the config since that run must not apply to this variant (SAM options when sam=false)
        diff = sorted(k for k in row["config"] if row["config"][k] != now.get(k))
        new_keys = sorted(set(now) - set(row["config"]))
        if not diff and not (new_keys and now.get("sam")):
            if row.get("reused_from"):  # a reused row keeps its origin
                return row
            return {**row, "reused_from": f"{old.name}, {prev.get('written', 'an earlier run')}, "
                                          f"{prev.get('machine', 'unknown machine')}"}
        tried.append(f"{old.name}: differs in {diff or new_keys}")
    raise SystemExit(f"no earlier ({variant}) run with this config ({'; '.join(tried) or 'no results file'}): "
                     "run it (add it to --variants)")


def run_variant(name: str, data: Path, variant: str, args) -> dict:
    from samdistill.api import distill, evaluate_model

    run_dir = (RESULTS / "runs" / f"knowsam_{name}{device_tag(args.device)}"
               / (variant + (f"_seed{args.seed}" if args.seed else "")))
    epochs, cfg = variant_config(name, data, variant, args)
    t0 = time.time()
    resumed = (run_dir / "checkpoints" / "last.pt").exists()  # taken up from an earlier call (e.g. --train-only)
    # a run trained to the end with this config (threads/progress aside) is read, not redone; a differing config
    # or an interrupted run continues from its checkpoint
    run = distill(cfg, run_dir, resume="auto")
    finished = bool(run.get("already_finished"))
    wall = run["total_seconds"] if finished else time.time() - t0  # a run read: its own wall time
    evaluated = run_dir / "eval" / "summary.json"
    if finished and evaluated.exists():  # trained and evaluated before: read both
        ev = json.loads(evaluated.read_text())
    else:
        ev = evaluate_model(str(run_dir / "student.pt"), data, out_dir=run_dir / "eval", split="test",
                            threads=args.threads, progress=not args.quiet, device=args.device)
    # epoch_seconds: every epoch's training time, also across resumes (train_seconds: this call only)
    return {"variant": variant, "epochs": epochs, "steps": run["steps"],
            "train_seconds": run.get("epoch_seconds", run["train_seconds"]),
            "wall_seconds": wall, "resumed": resumed or finished, "best_val": run["best"],
            "throughput": throughput(run_dir)["knowsam"]["images_per_s"], "n_labeled": run["n_labeled"],
            "n_unlabeled": run["n_unlabeled"], "config": cfg.knowsam.model_dump(mode="json"),
            "test": {k: ev[k] for k in ("dice", "iou", "hd95", "nsd", "n", "dice_std", "total_gmacs", "params",
                                        "latency_ms")}}


def teacher_reference(name: str, data: Path, args) -> dict:
    ref = RESULTS / "runs" / f"teacher_litemedsam_{name}{device_tag(args.device)}" / "summary.json"
    if ref.exists():
        s = json.loads(ref.read_text())
        source = str(ref.relative_to(RESULTS.parent))
    else:
        from samdistill.api import evaluate_model

        s = evaluate_model("litemedsam", data, out_dir=ref.parent, split="test", threads=args.threads,
                           progress=not args.quiet, device=args.device)
        source = "evaluated in this run"
    return {"dice": s["dice"], "iou": s["iou"], "hd95": s["hd95"], "n": s["n"], "source": source,
            "prompt": s["prompt"]["description"]}


def markdown(r: dict) -> str:
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


def rows_markdown(r: dict) -> str:
    """The rows file of --train-only: each variant's result, no comparison."""
    table = markdown_table([[v, f"{x['steps']} ({x['epochs']})", x["config"]["batch_size"], f"{x['test']['dice']:.4f}",
                             f"{x['test']['iou']:.4f}", f"{x['test']['hd95']:.1f}"] for v, x in r["runs"].items()],
                           ["run", "steps (epochs)", "batch", "test Dice", "IoU", "HD95 px"])
    return f"# KnowSAM benchmark rows on {r['dataset']} (seed {r['seed']}, no comparison)\n\n{table}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["kvasir_seg"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--labeled", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=600, help="about this many optimiser steps per run")
    ap.add_argument("--input-size", type=int, default=128,
                    help="student input (px); 0: the teacher's (256). 128 = a quarter of the compute per step")
    ap.add_argument("--sam-decode", default="foreground", choices=["foreground", "per_class"])
    ap.add_argument("--baseline-batch", type=int, default=4,
                    help="batch of the supervised runs (a) and (c); 4 = KnowSAM's labeled part of its batch")
    ap.add_argument("--seed", type=int, default=0, help="training seed (the labeled pick stays data.seed's)")
    ap.add_argument("--train-only", action="store_true",
                    help="train + evaluate the given --variants, write their rows only (knowsam_<dataset>_rows*.json)")
    ap.add_argument("--kd-rampup", type=float, default=0.4,
                    help="knowsam.kd_rampup: ramp KD and entropy in over this fraction of the run (0: constant, "
                         "as published; 0.4 here: with constant terms the sub-networks collapsed to background "
                         "in the first epoch of a 600-step run, seen on the validation split)")
    ap.add_argument("--no-decoder-adapters", action="store_true", help="knowsam.decoder_adapters=false")
    ap.add_argument("--adapters", default="none", choices=["none", "encoder"],
                    help="knowsam.adapters: none = frozen encoder + cached embeddings (CPU); encoder = the full method")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (cuda: knowsam_<dataset>_gpu.* results)")
    ap.add_argument("--variants", nargs="+", default=["supervised", "knowsam", "all_labels"])
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite every results/knowsam_*.md from its .json (no training)")
    args = ap.parse_args()
    if args.render_only:
        stems = sorted(p.stem for p in RESULTS.glob("knowsam_*.json"))
        render_only([x for x in stems if "_rows" in x], rows_markdown)
        render_only([x for x in stems if "_rows" not in x], markdown)
        return
    from samdistill.machine import machine_info

    machine = machine_info()
    for name in args.datasets:
        data = shared_dataset(name)
        t0 = time.time()
        if args.train_only:  # rows only (e.g. extra seeds of the baselines): knowsam_<dataset>_rows[_seedN].json
            stem = f"knowsam_{name}_rows" + (f"_seed{args.seed}" if args.seed else "") + device_tag(args.device)
            rows = {v: run_variant(name, data, v, args) for v in args.variants}
            # rows of other variants already in the file stay (e.g. two processes training variants in parallel)
            old = RESULTS / f"{stem}.json"
            kept = json.loads(old.read_text()).get("runs", {}) if old.exists() else {}
            rows = {**{v: x for v, x in kept.items() if v not in rows}, **rows}
            r = {"dataset": name, "seed": args.seed, "runs": rows, "data_note": data_note(data),
                 "machine": machine.get("cpu", "unknown CPU"), "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
            write_results(stem, r, rows_markdown(r))
            continue
        runs = {v: run_variant(name, data, v, args) if v in args.variants else reused_variant(name, data, v, args)
                for v in ("supervised", "knowsam", "all_labels")}
        a, b, c = (runs[v]["test"]["dice"] for v in ("supervised", "knowsam", "all_labels"))
        r = {"dataset": name, "labeled": args.labeled, "threads": args.threads, "sam_decode": args.sam_decode,
             "input_size": args.input_size or None, "steps": args.steps,
             "optim": "SGD 0.01 momentum 0.9, linear decay (as published)",
             "machine": machine.get("cpu", "unknown CPU"), "gpu": machine.get("cuda") if args.device != "cpu" else None,
             "data_note": data_note(data), "runs": runs, "teacher": teacher_reference(name, data, args),
             "gap_closed": (b - a) / (c - a) if c != a else float("nan"), "wall_seconds": time.time() - t0,
             "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        stem = (f"knowsam_{name}" + ("" if args.baseline_batch == 4 else f"_baseline{args.baseline_batch}")
                + (f"_seed{args.seed}" if args.seed else "") + device_tag(args.device))
        write_results(stem, r, markdown(r))


if __name__ == "__main__":
    main()
