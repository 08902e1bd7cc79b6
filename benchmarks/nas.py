"""Claim: the searched student lies on or above the Pareto front of the hand-designed KD SAM
students at equal or lower MACs, with encoder MACs <= 1/30 of the LiteMedSAM teacher's.

1. `samdistill nas search` on Kvasir-SEG train (cached LiteMedSAM embeddings; a seeded subset of
   `--search-limit` images, halves for weights and architecture), budget = teacher encoder / 30.
2. `samdistill nas train` of the found genotype on the full train split (logit KD + saliency + Dice/BCE).
3. The hand-designed students (`--students`) distilled with `samdistill distill --method kdsam` with
   the same data settings (whole images, as the nas recipe), epochs and learning rates.
4. `samdistill bench` of teacher + all students on the test split in one process: Dice, IoU, HD95,
   COCO mask mAP@[.5:.95], parameters, encoder MACs, batch-1 latency, batch-16 throughput (CPU).
Writes benchmarks/results/nas_kvasir.{json,md} and nas_kvasir.png (the Pareto plot).

    python benchmarks/nas.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from _common import RESULTS, markdown_table, shared_dataset, write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="kvasir_seg")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--search-limit", type=int, default=300)
    ap.add_argument("--search-epochs", type=int, default=4)
    ap.add_argument("--macs-budget", type=float, default=0.5, help="search budget, encoder GMACs")
    ap.add_argument("--a-lr", type=float, default=0.01, help="architecture learning rate")
    ap.add_argument("--stage1-epochs", type=int, default=4)
    ap.add_argument("--stage2-epochs", type=int, default=3)
    ap.add_argument("--students", nargs="+",
                    default=["efficientvit_b0", "mobilenetv4_conv_small", "tinyvit_5m", "repvit_m0_9", "resnet18"])
    ap.add_argument("--bench-limit", type=int, default=None)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="rewrite the .md (and targets) from the saved .json")
    args = ap.parse_args()
    if args.report_only:
        report(json.loads((RESULTS / "nas_kvasir.json").read_text()))
        return

    from samdistill.api import distill
    from samdistill.config import load_config
    from samdistill.eval.bench import run_bench
    from samdistill.search import nas_search

    data = shared_dataset(args.dataset)
    runs = RESULTS / "runs" / "nas_kvasir"
    cache = str(RESULTS / "runs" / ".cache")
    common = {"data": {"path": str(data)}, "threads": args.threads, "cache": {"dir": cache}, "progress": not args.quiet,
              "overlays": 2}
    t0 = time.time()
    timings = {}
    # 1. search
    search_dir = runs / "search"
    if not (search_dir / "summary.json").exists():
        cfg = load_config("nas", {**common, "data": {"path": str(data), "limit_train": args.search_limit},
                                  "nas": {"search": {"epochs": args.search_epochs, "macs_budget": args.macs_budget,
                                                     "a_optim": {"lr": args.a_lr}}}})
        t = time.time()
        nas_search(cfg, search_dir, progress=not args.quiet)
        timings["search_s"] = time.time() - t
    search = json.loads((search_dir / "summary.json").read_text())
    genotype = json.loads((search_dir / "genotype.json").read_text())
    # 2. the found architecture, 3. hand-designed students: same epochs, same learning rates
    lr = {"optim1": {"lr": 1e-3}, "optim2": {"lr": 3e-4}}
    students = {}
    cfg = load_config("nas", {**common, "nas": {"train": {"genotype": str(search_dir / "genotype.json"),
                                                          "stage1_epochs": args.stage1_epochs,
                                                          "stage2_epochs": args.stage2_epochs, **lr}}})
    run_dir = runs / "searched"
    # resume="auto": a run finished with this config is read (its epoch_seconds are its own), an interrupted one continues
    timings["train_searched_s"] = distill(cfg, run_dir, resume="auto")["epoch_seconds"]
    students["searched"] = run_dir / "student.pt"
    # the same images as the searched student: the kdsam recipe distils on crops by default, the nas one does not
    same_data = {"data": cfg.data.model_dump(mode="json")}
    for name in args.students:
        run_dir = runs / name
        cfg = load_config("kdsam", {**common, **same_data, "student": {"name": name},
                                    "stage1": {"epochs": args.stage1_epochs, "perceptual": 0.0},
                                    "stage2": {"epochs": args.stage2_epochs}})
        run = distill(cfg, run_dir, resume="auto")
        timings[f"train_{name}_s"] = run["epoch_seconds"]
        students[name] = run_dir / "student.pt"
    # 4. one bench over teacher and students
    t = time.time()
    bench = run_bench(["litemedsam"] + [str(p) for p in students.values()], str(data), out_dir=runs / "bench",
                      split="test", limit=args.bench_limit, threads=args.threads, progress=not args.quiet)
    timings["bench_s"] = time.time() - t
    shutil.copy(runs / "bench" / "pareto.png", RESULTS / "nas_kvasir.png")
    result = {"dataset": args.dataset, "search": search, "genotype": genotype, "bench": bench, "timings_s": timings,
              "args": vars(args), "wall_seconds": time.time() - t0}
    report(result)


def front_targets(rows: dict) -> dict:
    """Where the searched student stands against the hand-designed ones (Dice vs encoder MACs).

    The hand-designed front at MACs m is the best Dice of any hand-designed student with <= m MACs. The searched
    student is on or above it when no hand-designed student with equal or lower MACs has a higher Dice; since
    none may be that cheap, we also list the cheapest hand-designed students it beats while using fewer MACs.
    """
    s = rows["searched"]
    hand = {k: v for k, v in rows.items() if k not in ("teacher", "searched")}
    dominated_by = [k for k, v in hand.items() if v["encoder_gmacs"] <= s["encoder_gmacs"] and v["dice"] > s["dice"]]
    beats_costlier = sorted((k for k, v in hand.items() if v["encoder_gmacs"] > s["encoder_gmacs"] and s["dice"] >= v["dice"]),
                            key=lambda k: hand[k]["encoder_gmacs"])
    better_costlier = sorted((k for k, v in hand.items() if v["encoder_gmacs"] > s["encoder_gmacs"] and v["dice"] > s["dice"]),
                             key=lambda k: hand[k]["encoder_gmacs"])
    ratio = rows["teacher"]["encoder_gmacs"] / s["encoder_gmacs"]
    return {
        "targets": {"on_or_above_hand_designed_front_at_equal_or_lower_macs": not dominated_by,
                    "encoder_macs_le_teacher_over_30": ratio >= 30},
        "teacher_over_searched_encoder_macs": ratio, "dominated_by": dominated_by,
        "beats_costlier": beats_costlier, "better_and_costlier": better_costlier,
    }


def report(result: dict) -> None:
    bench, search, genotype, timings = result["bench"], result["search"], result["genotype"], result["timings_s"]
    args = argparse.Namespace(**result["args"])
    rows = {("teacher" if r["model"] == "litemedsam" else Path(r["model"]).parent.name): r for r in bench["rows"]}
    s = rows["searched"]
    result.update(front_targets(rows))
    targets, ratio, dominated_by = result["targets"], result["teacher_over_searched_encoder_macs"], result["dominated_by"]
    lines = [
        "# EfficientMedSAM (NAS) on Kvasir-SEG", "",
        f"Machine: {bench['machine']['cpu']}, {bench['threads']} threads, CPU only. Test split: "
        f"{s['n']} images, tight box. Wall time of this script {result['wall_seconds'] / 60:.1f} min; training "
        "times are sums of the runs' epoch times (metrics.csv), so they hold across resumed runs: "
        f"{', '.join(f'{k} {v / 60:.1f} min' for k, v in timings.items())}.", "",
        f"Search: {search['steps']} steps on {search['n_weight_half']} + {search['n_arch_half']} train images "
        f"(weights / architecture halves), {search['seconds'] / 60:.1f} min, beta {search['beta']}, budget "
        f"{search['budget_gmacs']:.2f} GMACs (below the cheapest hand-designed student; teacher encoder / 30 = "
        f"{search['teacher_encoder_gmacs'] / 30:.2f}); found encoder {search['encoder_gmacs']:.3f} GMACs "
        f"({genotype['encoder_params'] / 1e6:.2f} M params): " +
        "; ".join(f"stage {i}: width {st['width']}, {' + '.join(st['ops'])}{'' if st['lateral'] else ' (no neck input)'}"
                  for i, st in enumerate(genotype["stages"])) + ".", "",
        f"Training: every student {args.stage1_epochs} + {args.stage2_epochs} epochs on the full train split, same "
        "learning rates; the searched one with logit KD + saliency distillation (`nas train`), the hand-designed ones "
        "with KD SAM (`distill --method kdsam`, perceptual term off). Backbones from random init.", "",
        markdown_table([[k, f"{r['dice']:.4f}", f"{r['iou']:.4f}", f"{r['hd95']:.2f}", f"{r['coco_mask_ap']['map']:.4f}",
                         f"{r['params_total'] / 1e6:.2f}", f"{r['encoder_gmacs']:.3f}", f"{r['latency_ms']['end_to_end']:.1f}",
                         f"{r['throughput_img_s_batch16']:.2f}"] for k, r in rows.items()],
                       ["model", "Dice", "IoU", "HD95 px", "mask mAP@[.5:.95]", "params M", "enc GMACs", "end-to-end ms",
                        "img/s @16"]),
    ]
    gm = {k: v["encoder_gmacs"] / s["encoder_gmacs"] for k, v in rows.items()}
    costlier = [f"{k} ({gm[k]:.1f}x, +{rows[k]['dice'] - s['dice']:.4f} Dice)" for k in result["better_and_costlier"]]
    lines += ["", f"Teacher / searched encoder MACs: {ratio:.1f}x (target >= 30x: {'met' if targets['encoder_macs_le_teacher_over_30'] else 'NOT met'}).",
              f"Hand-designed students with equal or lower encoder MACs and a higher Dice: {dominated_by or 'none'} -> "
              f"on or above the hand-designed front at equal or lower MACs: "
              f"{'met' if targets['on_or_above_hand_designed_front_at_equal_or_lower_macs'] else 'NOT met'}. "
              f"It beats, with fewer MACs: {', '.join(f'{k} ({gm[k]:.1f}x its MACs)' for k in result['beats_costlier']) or 'none'}; "
              f"higher Dice at more MACs: {', '.join(costlier) or 'none'}.",
              "Pareto plot: `nas_kvasir.png` (Dice vs latency and vs encoder MACs). No GPU was lent: GPU throughput not measured."]
    write_results("nas_kvasir", result, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
