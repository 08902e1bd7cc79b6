"""The whole student against its teacher, as a user gets it: distil the default recipe, export, bench.

For each dataset: ``samdistill distill --method kdsam`` with no override but the data, the seed, the thread
count and the shared cache folder (the recipe in src/samdistill/recipes/kdsam.yaml is the one measured);
then the student is exported to ONNX fp32 and int8 (calibrated on train-split images), LiteMedSAM to ONNX
fp32, and all five are benched in one process with the same threads (:func:`samdistill.eval.bench.run_bench`:
Dice/IoU/HD95 at the original size under the tight box, first and next click, batch-16 throughput) and put
through the interactive protocol (``run_bench(..., clicks=K)``: the tight box, then K corrective clicks,
decoded on the embedding of the timed pass). Further seeds (``--seeds 0 1``) add a student (PyTorch) row each.
The student rows are the model as ``Predictor.load`` gives it: the default recipe distils on crops
(``data.zoom: 1.5``), so they zoom by the margin the student records. ``--zoom M`` (default 1.5, chosen on the
validation split in zoom_kvasir_seg.md; 0: none) adds the teacher, and each seed's student not already distilled
at that margin, benched with ``Predictor(zoom=M)`` (the box's crop encoded instead of the whole image), in the
same interleaved pass; the targets stay on the shipped rows, the added zoomed figures are stated beside.

Writes benchmarks/results/student_<dataset>.json + .md::

    {"dataset", "machine", "threads", "train_minutes" (cache included), "rows": [{"model", "backend", "seed",
     "n", "dice", "iou", "hd95", "dice_clicks", "encoder_gmacs", "decoder_gmacs", "params", "first_click_ms",
     "next_click_ms", "images_per_s_16"}], "targets", ...}

``train_minutes``: the distill run's wall time plus the teacher-embedding cache. A cache already on disk
(``benchmarks/results/runs/.cache``, shared with kdsam.py, or built by ``samdistill cache``) is counted at its
measured cost: hits x the teacher's first-click time measured in this run (read + preprocess + encoder, the
work of computing one entry), stated as such.

Usage::

    python benchmarks/student.py --datasets kvasir_seg --seeds 0 1
    python benchmarks/student.py --datasets busi hc18
    python benchmarks/student.py --render-only        # rewrite the .md files from the .json files
    python benchmarks/student.py --datasets kvasir_seg --limit 8 --smoke   # a quick check (student_<ds>_smoke)
    python benchmarks/student.py --datasets kvasir_seg --train-only        # distil now, export + bench later
    python benchmarks/student.py --datasets kvasir_seg --ablate stage2.feature_kd=1   # a setting, on val only
    python benchmarks/student.py --datasets kvasir_seg --val-gap --seeds 0 1 2   # teacher vs students, per image (val)

Runs resume: a finished distill run is read back (``resume="auto"``), an interrupted one continues.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from _common import (RESULTS, machine_line, markdown_table, render_only, rows_carry_threads, shared_dataset, threads_used,
                     write_results)

TEACHER = "litemedsam"
CLICKS = 3
#: The zoom margin for the zoomed rows: on Kvasir-SEG val (zoom_kvasir_seg.md) the students averaged 0.8744 at
#: x1.5 and 0.8731 at x2 against 0.8604 plain; the teacher scored best plain (0.9036; x1.5 0.8931, x2 0.9012).
ZOOM = 1.5


def _fmt(v, nd: int = 4) -> str:
    return "" if v is None else f"{v:.{nd}f}"


def canonical_overrides(extra: list[str]) -> list[str]:
    """``KEY=VALUE`` overrides as the validated config holds them, sorted, only those that change the default
    recipe: ``stage2.kd=1`` and ``stage2.kd=1.0`` are one setting. A typo or bad value is the config's one-line
    error, raised here before anything trains; overrides that change nothing are refused."""
    from samdistill.config import flatten, load_config, parse_overrides
    from samdistill.errors import UserError

    base = flatten(load_config("kdsam").model_dump(mode="json"))
    now = flatten(load_config("kdsam", parse_overrides(list(extra))).model_dump(mode="json"))
    changed = sorted(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in now.items() if base.get(k) != v)
    if not changed:
        raise UserError(f"--ablate {' '.join(extra)}: that is the default recipe; name a setting that differs")
    return changed


def default_recipe_id() -> str:
    """A short fingerprint of the default ``kdsam`` recipe (keys added since at their neutral default, and the
    settings that do not change what a run trains, left out): an ablation file keeps each default's rows apart,
    so a setting is compared with the default it was run against, also after the default changed."""
    import hashlib

    from samdistill.config import added_neutral_keys, flatten, load_config
    from samdistill.distill import RUN_FREE_KEYS

    cfg = load_config("kdsam")
    neutral = added_neutral_keys(cfg)
    flat = {k: v for k, v in flatten(cfg.model_dump(mode="json")).items()
            if k.split(".")[0] not in RUN_FREE_KEYS and k != "seed" and not (k in neutral and neutral[k] == v)}
    return hashlib.sha1(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:10]


def ablation_tag(extra: list[str]) -> str:
    """``["stage2.feature_kd=1", "precision=bf16"]`` -> ``stage2-feature_kd-1_precision-bf16`` (a run dir suffix)."""
    return "_".join(re.sub(r"[^A-Za-z0-9_-]+", "-", item.replace("=", "-").replace(".", "-")) for item in extra)


def distill_run(name: str, seed: int, args, extra: list[str] | None = None) -> tuple[Path, dict]:
    """The default recipe on ``name`` (``extra``: ``KEY=VALUE`` overrides of an ablation, in a run dir of its own)."""
    from samdistill.api import distill
    from samdistill.config import load_config, merge, parse_overrides

    tag = f"_{ablation_tag(extra)}" if extra else ""
    run_dir = RESULTS / "runs" / f"student_{name}_s{seed}{tag}{'_smoke' if args.smoke else ''}"
    overrides = {"data": {"path": str(shared_dataset(name))}, "seed": seed, "threads": args.threads,
                 "cache": {"dir": str(RESULTS / "runs" / ".cache")}, "progress": not args.quiet}
    if args.smoke:  # a pipeline check only: one short epoch each, never reported as a result
        overrides.update({"stage1": {"epochs": 1}, "stage2": {"epochs": 1}})
    if extra:
        overrides = merge(overrides, parse_overrides(list(extra)))
    cfg = load_config("kdsam", overrides)
    run = distill(cfg, run_dir, resume="auto")
    if run.get("interrupted"):  # SIGTERM (e.g. to free the cores for a bench): its checkpoint is on disk
        raise SystemExit(f"{run_dir.name} stopped ({run['reason']}) after {run['step']} steps; call the same command "
                         "again to resume it")
    return run_dir, {"config": cfg.model_dump(mode="json"), "summary": run}


def _complete(folder: Path, newer_than: Path | None) -> bool:
    """``folder`` holds a verified export (its manifest checks) made after ``newer_than`` was written; an int8
    one calibrated at the zoom the model records (an export from before calibration followed the zoom was
    calibrated on whole images: made again)."""
    from samdistill.deploy.onnx import read_export
    from samdistill.errors import UserError

    try:
        export = read_export(folder)
    except (UserError, OSError):
        return False
    quant = (export.manifest or {}).get("quantization")
    if quant and quant.get("calibration", {}).get("zoom", "unrecorded") != export.manifest.get("zoom"):
        return False
    return newer_than is None or folder.stat().st_mtime >= newer_than.stat().st_mtime


def export_all(run_dir: Path, name: str, args) -> dict[str, Path]:
    """The student's fp32 and int8 folders and the teacher's fp32 folder (made once, shared by datasets);
    a complete export from an earlier call is kept."""
    from samdistill.api import export_model

    student = run_dir / "student.pt"
    jobs = {"student_onnx": (run_dir / "onnx", str(student), {}, student),
            "student_int8": (run_dir / "onnx_int8", str(student), {"int8": True, "calibrate": str(shared_dataset(name))},
                             student),
            "teacher_onnx": (RESULTS / "runs" / f"{TEACHER}_onnx", TEACHER, {}, None)}
    for key, (folder, model, kw, source) in jobs.items():
        if not _complete(folder, source):
            print(f"exporting {key} -> {folder}")
            export_model(model, folder, force=True, **kw)
    return {key: job[0] for key, job in jobs.items()}


def run_dataset(name: str, args) -> dict:
    from samdistill.eval.bench import run_bench

    data = shared_dataset(name)
    runs = {seed: distill_run(name, seed, args) for seed in args.seeds}
    seed0 = args.seeds[0]
    run_dir = runs[seed0][0]
    folders = export_all(run_dir, name, args)
    # (model, backend, seed, zoom) -> what run_bench loads
    specs = {("teacher", "torch", None, None): TEACHER, ("teacher", "onnx", None, None): str(folders["teacher_onnx"]),
             ("student", "torch", seed0, None): str(run_dir / "student.pt"),
             ("student", "onnx", seed0, None): str(folders["student_onnx"]),
             ("student", "onnx-int8", seed0, None): str(folders["student_int8"])}
    for seed in args.seeds[1:]:
        specs[("student", "torch", seed, None)] = str(runs[seed][0] / "student.pt")
    if args.zoom:
        specs[("teacher", "torch", None, args.zoom)] = TEACHER
        for seed in args.seeds:  # a student distilled on crops at this zoom is already benched with it
            if runs[seed][1]["config"]["data"].get("zoom") != args.zoom:
                specs[("student", "torch", seed, args.zoom)] = str(runs[seed][0] / "student.pt")
    bench_dir = run_dir / "bench"
    t0 = time.time()
    bench = run_bench(list(specs.values()), str(data), out_dir=bench_dir, split="test", limit=args.limit,
                      threads=args.threads, progress=not args.quiet, clicks=CLICKS, zooms=[k[3] for k in specs])
    eval_minutes = (time.time() - t0) / 60

    rows = []
    by_spec = dict(zip(specs, bench["rows"]))
    for (model, backend, seed, zoom), b in by_spec.items():
        # ONNX graphs and zoomed rows: the MACs of the PyTorch model they come from
        torch_row = by_spec[(model, "torch", seed if model == "student" else None, None)]
        rows.append({
            # zoom: what the row ran with (a student distilled on crops zooms by default); shipped: the model as
            # Predictor.load gives it (the targets' rows), not a --zoom row beside them
            "model": model, "backend": backend, "seed": seed, "zoom": b.get("zoom"), "shipped": zoom is None,
            "n": b["n"], "dice": b["dice"], "iou": b["iou"],
            "hd95": b["hd95"], "dice_clicks": b["clicks"]["dice_clicks"], "noc90": b["clicks"]["noc"],
            "encoder_gmacs": torch_row["encoder_gmacs"], "decoder_gmacs": torch_row["decoder_gmacs"],
            "params": b["params_total"], "first_click_ms": b["first_click_ms"], "next_click_ms": b["next_click_ms"],
            "images_per_s_16": b["throughput_img_s_batch16"], "spec": specs[(model, backend, seed, zoom)],
        })
    teacher_first = rows[0]["first_click_ms"]
    train = {}
    for seed, (rd, r) in runs.items():
        s = r["summary"]
        cache = s["cache"]
        hits_cost = cache.get("hits", 0) * teacher_first / 1e3  # an entry already on disk, at its measured cost
        wall = distill_seconds(s)
        train[str(seed)] = {"run": str(rd), "distill_seconds": wall, "threads": threads_used(rd),
                            "train_seconds": loop_seconds(s),
                            "cache": cache, "cache_hits_seconds_estimated": hits_cost,
                            "train_minutes": (wall + hits_cost) / 60, "best": s["best"],
                            "steps": s["steps"], "config": r["config"]}
    return {"dataset": name, "machine": bench["machine"], "threads": bench["threads"],
            "train_minutes": train[str(seed0)]["train_minutes"], "train": train, "rows": rows,
            "clicks": CLICKS, "limit": args.limit, "smoke": args.smoke, "eval_minutes": eval_minutes,
            "timing": bench.get("timing"),
            "targets": targets(name, rows, train, bench["threads"]), "recipe": recipe_summary(runs[seed0][1]["config"])}


def loop_seconds(summary: dict) -> float:
    """A run's training-loop time over every call: ``train_seconds_all_calls`` where the summary has it; before
    that key, ``train_seconds`` is the last call's and ``epoch_seconds`` every epoch's across calls, so the larger
    of the two (validation passes of earlier calls not counted)."""
    s = summary
    return s.get("train_seconds_all_calls", max(s["train_seconds"], s.get("epoch_seconds", 0.0)))


def distill_seconds(summary: dict) -> float:
    """A run's distill wall time, also when it was stopped and resumed: ``total_seconds_all_calls`` where the
    summary has it; before that key, the last call's time outside its loop (cache, student.pt) plus
    :func:`loop_seconds`."""
    s = summary
    return s.get("total_seconds_all_calls", s["total_seconds"] - s["train_seconds"] + loop_seconds(s))


def recipe_summary(cfg: dict) -> dict:
    st, s1, s2 = cfg["student"], cfg["stage1"], cfg["stage2"]
    zoom = cfg["data"].get("zoom")  # distilled on crops: its rows are zoomed (the key only when set)
    return {"student": st["name"], "grid": st["grid"], "decoder": st["decoder"], "detail": st.get("detail"),
            **({"data_zoom": zoom} if zoom else {}),
            "stage1": {k: s1[k] for k in ("epochs", "min_steps", "mse", "perceptual")},
            "stage2": {k: s2[k] for k in ("epochs", "min_steps", "dice", "bce", "kd", "iou", "iou_kd", "token_kd",
                                           "loop_iters", "mse", "box_jitter")}}


def _shipped(r: dict) -> bool:
    """A row of the model as ``Predictor.load`` gives it (its own zoom, if any), not one benched at ``--zoom``
    beside it (rows written before ``shipped`` existed: the unzoomed ones)."""
    return r.get("shipped", r.get("zoom") is None)


def _row(rows, model, backend, seed=None, shipped=True, zoom=None):
    for r in rows:
        if (r["model"] == model and r["backend"] == backend and (seed is None or r["seed"] == seed)
                and _shipped(r) == shipped and (shipped or r.get("zoom") == zoom)):
            return r
    return None


def judged_runs(train: dict, threads: int | None) -> list[str]:
    """The seeds whose distill time the 2 h target judges: those trained wholly at the bench's thread count (a run
    at 1 thread beside other jobs measures the machine's load, not the recipe); all of them when none was."""
    same = [seed for seed, t in train.items() if threads is not None and str(t.get("threads")) == str(threads)]
    return same or list(train)


def targets(name: str, rows: list[dict], train: dict, threads: int | None = None) -> dict:
    t, t_onnx = _row(rows, "teacher", "torch"), _row(rows, "teacher", "onnx")
    fp32, int8, torch_s = _row(rows, "student", "onnx"), _row(rows, "student", "onnx-int8"), _row(rows, "student", "torch")
    int8_ok = abs(int8["dice"] - fp32["dice"]) <= 0.005
    shipped = int8 if int8_ok else fp32
    students = [r for r in rows if r["model"] == "student" and r["backend"] == "torch" and _shipped(r)]
    dice_s = sum(r["dice"] for r in students) / len(students)
    gap = dice_s - t["dice"]
    dice_ok = gap >= -0.005 if name == "hc18" else gap >= -0.015
    macs = (t["encoder_gmacs"] + t["decoder_gmacs"]) / (torch_s["encoder_gmacs"] + torch_s["decoder_gmacs"])
    zoomed = [r for r in rows if r["model"] == "student" and not _shipped(r)]
    zoom = None
    if zoomed:
        tz = _row(rows, "teacher", "torch", shipped=False, zoom=zoomed[0]["zoom"])
        dz = sum(r["dice"] for r in zoomed) / len(zoomed)
        zoom = {"zoom": zoomed[0]["zoom"], "student_dice_mean_over_seeds": dz, "gap_to_plain_teacher": dz - t["dice"],
                "gap_to_zoomed_teacher": dz - tz["dice"] if tz else None,
                "gap_to_best_teacher": dz - max(t["dice"], tz["dice"] if tz else 0.0),
                "clicks3_gap_to_plain_teacher": sum(r["dice_clicks"][-1] for r in zoomed) / len(zoomed)
                - t["dice_clicks"][-1],
                "next_click_speedup": t["next_click_ms"] / sum(r["next_click_ms"] for r in zoomed) * len(zoomed),
                "first_click_speedup": t["first_click_ms"] / sum(r["first_click_ms"] for r in zoomed) * len(zoomed)}
    return {
        **({"zoom": zoom} if zoom else {}),
        "shipped_backend": shipped["backend"],
        "next_click_speedup": t["next_click_ms"] / shipped["next_click_ms"],
        "first_click_speedup": t["first_click_ms"] / shipped["first_click_ms"],
        "first_click_speedup_vs_teacher_onnx": t_onnx["first_click_ms"] / shipped["first_click_ms"],
        "macs_ratio_one_click": macs,
        "student_dice_mean_over_seeds": dice_s, "dice_gap": gap,
        "int8_minus_fp32_dice": int8["dice"] - fp32["dice"],
        "clicks3_gap": shipped["dice_clicks"][-1] - t["dice_clicks"][-1],
        "met": {
            "next_click_8x": t["next_click_ms"] / shipped["next_click_ms"] >= 8,
            "first_click_30x": t["first_click_ms"] / shipped["first_click_ms"] >= 30,
            "macs_40x": macs >= 40,
            ("dice_ge_teacher_minus_0.005" if name == "hc18" else "dice_within_0.015"): dice_ok,
            "int8_within_0.005_of_fp32": int8_ok,
            "clicks3_within_0.015": shipped["dice_clicks"][-1] >= t["dice_clicks"][-1] - 0.015,
            "trained_within_2h": all(train[k]["train_minutes"] <= 120 for k in judged_runs(train, threads)),
        },
        "train_judged": judged_runs(train, threads),
    }


def markdown(r: dict) -> str:
    tg = r["targets"]
    detail = r["recipe"].get("detail")  # absent before the detail path
    head = (f"# The whole student on {r['dataset']}: LiteMedSAM -> {r['recipe']['student']} "
            f"(grid {r['recipe']['grid']}, {r['recipe']['decoder']} decoder"
            f"{'' if detail in (None, False) else f', detail path: {detail}'})\n")
    if r.get("smoke"):
        head += "\n**Smoke run (1 + 1 epochs, a pipeline check): not a result.**\n"
    n = r["rows"][0]["n"]
    part = "" if r["limit"] is None else f" (first {r['limit']})"
    timing = "; the rows timed image by image in turn (each image through every model, rotating order)" if r.get(
        "timing") else "; each row timed in one block"
    lines = [head,
             f"Test split{part}, n={n} images, tight box from the "
             f"ground truth; Dice/IoU/HD95 at the original size. Clicks: the box, then {r['clicks']} corrective clicks "
             "(largest error region, most interior pixel). First click = read + preprocess + encoder + decoder + "
             "postprocess to the original size; next click = a new box on the cached embedding (decoder + "
             f"postprocess); medians over the images, batch 1{timing}. ONNX rows carry the MACs of the PyTorch graph "
             "they were exported from.\n"]
    table = []
    for x in r["rows"]:
        dc = " / ".join(f"{d:.3f}" for d in x["dice_clicks"])
        table.append([x["model"] + (f" (zoom x{x['zoom']:g})" if x.get("zoom") else ""), x["backend"], "" if x["seed"] is None else x["seed"], _fmt(x["dice"]), _fmt(x["iou"]),
                      _fmt(x["hd95"], 2), dc, _fmt(x["encoder_gmacs"], 3), _fmt(x["decoder_gmacs"], 3),
                      f"{x['params'] / 1e6:.2f}", _fmt(x["first_click_ms"], 1), _fmt(x["next_click_ms"], 1),
                      _fmt(x["images_per_s_16"], 2)])
    lines.append(markdown_table(table, ["model", "backend", "seed", "Dice", "IoU", "HD95 px",
                                        f"Dice: box / +1..{r['clicks']} clicks", "enc GMACs", "dec GMACs", "params M",
                                        "first click ms", "next click ms", "img/s (batch 16)"]))
    met = tg["met"]
    lines += [
        "",
        f"Shipped backend: student {tg['shipped_backend']} (int8 where it stays within 0.005 Dice of fp32). "
        f"Teacher (PyTorch) / student: next click {tg['next_click_speedup']:.1f}x, first click "
        f"{tg['first_click_speedup']:.1f}x (vs teacher ONNX fp32: {tg['first_click_speedup_vs_teacher_onnx']:.1f}x), "
        f"MACs for one click {tg['macs_ratio_one_click']:.1f}x fewer.",
        f"Student Dice (PyTorch, mean over seeds {', '.join(r['train'])}) {tg['student_dice_mean_over_seeds']:.4f}, "
        f"gap to the teacher {tg['dice_gap']:+.4f}; int8 - fp32 {tg['int8_minus_fp32_dice']:+.4f}; after "
        f"{r['clicks']} clicks student - teacher {tg['clicks3_gap']:+.4f}.",
        "",
        *([_zoom_line(tg["zoom"]), ""] if tg.get("zoom") else []),
        "Targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in met.items()) + ".",
        "",
        *([_judged_line(r)] if "train_judged" in tg else []),
        "Training (the default recipe: " + json.dumps(r["recipe"]) + "):",
    ]
    for seed, t in r["train"].items():
        c = t["cache"]
        lines.append(f"- seed {seed}: {t['train_minutes']:.1f} min in all = distill run {t['distill_seconds'] / 60:.1f} min "
                     f"(training {t['train_seconds'] / 60:.1f} min"
                     + (f", torch threads {t['threads']}" if "threads" in t else "")
                     + f"; {c.get('misses', 0)} cache entries computed in it) + "
                     f"{c.get('hits', 0)} cache entries already on disk counted at "
                     f"{t['cache_hits_seconds_estimated'] / 60:.1f} min; best val {json.dumps(t['best'])}; run `{t['run']}`.")
    lines += ["", f"Bench + clicks took {r['eval_minutes']:.1f} min. {machine_line(r['machine'], r['threads'])}", ""]
    return "\n".join(lines)


def _judged_line(r: dict) -> str:
    judged, train = r["targets"]["train_judged"], r["train"]
    rest = [k for k in train if k not in judged]
    if not rest:
        return f"trained_within_2h judges every seed ({', '.join(judged)}).\n"
    yes = ", ".join(f"{k} ({train[k]['train_minutes']:.1f} min)" for k in judged)
    no = ", ".join(f"{k} ({train[k]['train_minutes']:.1f} min, threads {train[k].get('threads')})" for k in rest)
    return (f"trained_within_2h judges the runs trained wholly at the bench's {r['threads']} threads: seed(s) {yes}; "
            f"not judged (trained at other threads beside other jobs): {no}.\n")


def _zoom_line(z: dict) -> str:
    tz = "" if z["gap_to_zoomed_teacher"] is None else f", to the zoomed teacher {z['gap_to_zoomed_teacher']:+.4f}"
    return (f"Zoomed (`samdistill predict --zoom {z['zoom']:g}`: the box's crop encoded instead of the image; not part "
            f"of the targets above): student Dice (PyTorch, mean over seeds) {z['student_dice_mean_over_seeds']:.4f}, "
            f"gap to the plain teacher {z['gap_to_plain_teacher']:+.4f}{tz}, to the better of the two "
            f"{z['gap_to_best_teacher']:+.4f}; after the clicks, to the plain teacher "
            f"{z['clicks3_gap_to_plain_teacher']:+.4f}; first click {z['first_click_speedup']:.1f}x and next click "
            f"{z['next_click_speedup']:.1f}x faster than the plain teacher (PyTorch both).")


def ablation_row(name: str, seed: int, args, extra: list[str]) -> dict:
    """One trained setting scored on the validation split only (its best-checkpoint Dice): settings are chosen
    there, never on the test images."""
    run_dir, r = distill_run(name, seed, args, extra)
    s = r["summary"]
    return {"overrides": list(extra), "default_recipe": default_recipe_id(), "student": s["student"], "seed": seed,
            "val_dice": s["best"]["dice"],
            "best_phase": s["best"]["phase"], "best_epoch": s["best"]["epoch"], "distill_minutes": distill_seconds(s) / 60,
            "run": str(run_dir), "threads": threads_used(run_dir)}


def _default_label(row: dict, current: str | None) -> str:
    """The default recipe's row, naming its student: the default changes over time, the file keeps old rows
    (those of an earlier default say so, with its fingerprint where it was recorded)."""
    label = f"default recipe ({row['student']})" if "student" in row else "default recipe"
    rid = row.get("default_recipe")
    if current is None or rid == current:
        return label
    return f"earlier {label}" + (f", `{rid}`" if rid else "")


def _ablation_key(row: dict) -> tuple:
    """A row is replaced only by the same setting, seed and default recipe run again."""
    return tuple(row["overrides"]), row["seed"], row.get("default_recipe")


def _on_crops(row: dict) -> bool:
    """A run with ``data.zoom`` validates on the crops around the boxes, not on the whole images."""
    return any(o.startswith("data.zoom=") for o in row["overrides"])


def ablation_markdown(r: dict) -> str:
    """Each setting's best validation Dice next to the default recipe's of the same seed."""
    base = {(x["seed"], x.get("default_recipe")): x["val_dice"] for x in r["rows"] if not x["overrides"]}
    current = r.get("default_recipe")
    per_row = rows_carry_threads(r["rows"])
    vs = lambda x: base.get((x["seed"], x.get("default_recipe")))  # the default this setting was run against
    era = {}  # each default's rows together, in the order the file first had them (older defaults first)
    for x in r["rows"]:
        era.setdefault(x.get("default_recipe"), len(era))
    table = [[" ".join(f"`{o}`" for o in x["overrides"]) or _default_label(x, current),
              x["seed"], f"{x['val_dice']:.4f}",
              "" if not x["overrides"] or vs(x) is None else
              f"{x['val_dice'] - vs(x):+.4f}{' *' if _on_crops(x) else ''}",
              f"{x['best_phase']} epoch {x['best_epoch']}", f"{x['distill_minutes']:.1f}",
              *([x.get("threads", "not recorded")] if per_row else []), f"`{x['run']}`"]
             for x in sorted(r["rows"], key=lambda x: (era[x.get("default_recipe")], bool(x["overrides"]), x["overrides"],
                                                       x["seed"]))]
    return "\n".join([
        f"# Whole-student ablations on {r['dataset']} (validation split only)", "",
        "The default `kdsam` recipe with each setting's overrides, trained like `student.py` trains it; scored by the "
        "best validation Dice the run kept (tight box, input frame). Settings are chosen here; the test split is "
        "scored only by `student.py` for the recipe that ships. Each setting is compared with the default recipe it "
        "was run against (rows of an earlier default name its fingerprint"
        + (f"; today's is `{r['default_recipe']}`" if r.get("default_recipe") else "")
        + "). Minutes: the distill run's wall time (cache "
        f"entries on disk not counted; runs may have shared the cores). Last written {r['written']}. "
        + machine_line(r["machine"], "per-row torch" if per_row else r["threads"]), "",
        markdown_table(table, ["setting", "seed", "val Dice", "vs default", "best at", "distill min",
                               *(["torch threads"] if per_row else []), "run"]), "",
        *(["\\* Trained and validated on the crops around the boxes (`data.zoom`): its val Dice is the zoomed "
           "protocol's, the default's is the whole image's, so the difference is not like for like; "
           "`zoom_<dataset>.md` scores both ways at the original size.", ""]
          if any(_on_crops(x) for x in r["rows"]) else [])])


def run_ablation(name: str, args) -> None:
    """``--ablate``: the default recipe and the overridden one for each seed; rows join the dataset's ablations
    file (a setting run again replaces its row)."""
    from samdistill.machine import machine_info

    stem = f"student_{name}_ablations{'_smoke' if args.smoke else ''}"
    new = [ablation_row(name, seed, args, extra) for seed in args.seeds for extra in ([], list(args.ablate))]
    # the file is read after training, so two ablations run side by side both keep their rows
    old = RESULTS / f"{stem}.json"
    rows = json.loads(old.read_text())["rows"] if old.exists() else []
    rows = [x for x in rows if all(_ablation_key(x) != _ablation_key(y) for y in new)] + new
    r = {"dataset": name, "machine": machine_info(), "threads": args.threads, "rows": rows,
         "default_recipe": default_recipe_id(),
         "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    write_results(stem, r, ablation_markdown(r))


AREA_BUCKETS = ((0.0, 0.05), (0.05, 0.15), (0.15, 1.01))  # foreground share of the input frame


def val_gap(name: str, args) -> dict:
    """``--val-gap``: the teacher and each seed's student image by image on the validation split (tight box, input
    frame, the per-epoch validation's Dice), by the foreground's share of the frame; where the gap comes from.
    The seeds' runs share data, teacher and cache, so the teacher is loaded, its cache entries looked up and it is
    scored once."""
    import yaml
    from torch.utils.data import DataLoader

    from samdistill.config import load_config
    from samdistill.data.cache import CachedSet, EmbeddingCache, open_run_dataset
    from samdistill.machine import machine_info, num_threads
    from samdistill.models.zoo import load_model
    from samdistill.train.validation import promptable_scores

    runs = {seed: RESULTS / "runs" / f"student_{name}_s{seed}{'_smoke' if args.smoke else ''}" for seed in args.seeds}
    for seed, run_dir in runs.items():
        if not (run_dir / "student.pt").exists():
            raise SystemExit(f"--val-gap: {run_dir} holds no student.pt; distil it first (--train-only --seeds {seed})")
    raw = yaml.safe_load((runs[args.seeds[0]] / "config.yaml").read_text())
    cfg = load_config(raw["method"], raw)
    mean = lambda xs: sum(xs) / len(xs) if xs else None
    rows = []
    with num_threads(args.threads):
        teacher = load_model(cfg.teacher).eval()
        ds = open_run_dataset(cfg)
        val_ids = ds.ids(cfg.data.val_split, cfg.data.limit_val)
        cache = EmbeddingCache(cfg.cache.dir, teacher)
        val_keys = cache.build(ds, val_ids, progress=False)
        loader = DataLoader(CachedSet(cache, [val_keys[(i, False)] for i in val_ids], True), batch_size=8)
        t_dice = promptable_scores(teacher, loader, cached=True)[0]
        for seed, run_dir in runs.items():
            s_dice, areas, _ = promptable_scores(load_model(str(run_dir / "student.pt")).eval(), loader)
            gaps = sorted(s - t for s, t in zip(s_dice, t_dice))
            buckets = []
            for lo, hi in AREA_BUCKETS:
                idx = [i for i, a in enumerate(areas) if lo <= a < hi]
                buckets.append({"from": lo, "to": min(hi, 1.0), "n": len(idx),
                                "teacher": mean([t_dice[i] for i in idx]), "student": mean([s_dice[i] for i in idx])})
            rows.append({"seed": seed, "n": len(s_dice), "teacher_dice": mean(t_dice), "student_dice": mean(s_dice),
                         "gap": mean(gaps), "gap_without_worst_10": mean(gaps[10:]), "buckets": buckets,
                         "run": str(run_dir)})
            print(f"seed {seed}: student {rows[-1]['student_dice']:.4f} teacher {rows[-1]['teacher_dice']:.4f}")
    return {"dataset": name, "machine": machine_info(), "threads": args.threads, "rows": rows,
            "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def valgap_markdown(r: dict) -> str:
    edges = [(b["from"], b["to"]) for b in r["rows"][0]["buckets"]]
    table = [[x["seed"], x["n"], f"{x['teacher_dice']:.4f}", f"{x['student_dice']:.4f}", f"{x['gap']:+.4f}",
              f"{x['gap_without_worst_10']:+.4f}",
              *(f"{b['n']}: {b['teacher']:.4f} / {b['student']:.4f}" if b["n"] else "0" for b in x["buckets"])]
             for x in r["rows"]]
    return "\n".join([
        f"# Where the whole student loses to its teacher on {r['dataset']} (validation split only)", "",
        "Image by image, tight box from the ground truth, Dice in the input frame (the per-epoch validation's score): "
        "the teacher decodes its cached embedding, each seed's student (`student.pt` of the default recipe's run) "
        "encodes the image. Columns by the foreground's share of the input frame: images, teacher / student Dice. "
        "Gap without the 10 worst: the mean student - teacher difference after dropping the 10 images where the "
        f"student loses most. Written {r['written']} by `python benchmarks/student.py --datasets {r['dataset']} "
        f"--val-gap --seeds {' '.join(str(x['seed']) for x in r['rows'])}`. " + machine_line(r["machine"], r["threads"]),
        "",
        markdown_table(table, ["seed", "images", "teacher Dice", "student Dice", "gap", "gap without the 10 worst",
                               *(f"{lo:.0%}-{hi:.0%} of the frame" for lo, hi in edges)]), ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Example: python benchmarks/student.py --datasets kvasir_seg --seeds 0 1")
    ap.add_argument("--datasets", nargs="+", default=["kvasir_seg", "busi", "hc18"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="only the first N test images (smoke checks)")
    ap.add_argument("--zoom", type=float, default=ZOOM,
                    help=f"also bench the teacher and each student with this zoom margin (default {ZOOM}; 0: none)")
    ap.add_argument("--smoke", action="store_true", help="1 + 1 epochs into *_smoke run and result files")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--render-only", action="store_true", help="rewrite the .md files from the .json files")
    ap.add_argument("--train-only", action="store_true",
                    help="distil (or finish distilling) and stop; a later call without it exports and benches")
    ap.add_argument("--ablate", nargs="+", metavar="KEY=VALUE",
                    help="train the default recipe with these overrides (and the default, if not yet trained) and "
                         "write their validation Dice to student_<dataset>_ablations.{json,md}; no test split, no "
                         "export, e.g. --ablate stage2.feature_kd=1")
    ap.add_argument("--val-gap", action="store_true",
                    help="score the teacher and the --seeds' trained students image by image on the validation split "
                         "-> student_<dataset>_valgap.{json,md} (no training, no test split)")
    args = ap.parse_args()
    if args.render_only:
        stems = sorted(p.stem for p in RESULTS.glob("student_*.json"))
        render_only([x for x in stems if "_ablations" not in x and "_valgap" not in x], markdown)
        render_only([x for x in stems if "_ablations" in x], ablation_markdown)
        render_only([x for x in stems if "_valgap" in x], valgap_markdown)
        return
    if args.val_gap:
        for name in args.datasets:
            r = val_gap(name, args)
            write_results(f"student_{name}_valgap{'_smoke' if args.smoke else ''}", r, valgap_markdown(r))
        return
    if args.ablate:
        args.ablate = canonical_overrides(args.ablate)  # checked before anything trains
        for name in args.datasets:
            run_ablation(name, args)
        return
    if args.train_only:
        for name in args.datasets:
            for seed in args.seeds:
                run_dir, _ = distill_run(name, seed, args)
                print(f"distilled: {run_dir / 'student.pt'}")
        return
    for name in args.datasets:
        r = run_dataset(name, args)
        write_results(f"student_{name}{'_smoke' if args.smoke else ''}", r, markdown(r))


if __name__ == "__main__":
    main()
