"""Which graphs of a distilled student to ship in int8: each choice against fp32, on the validation split.

For one trained student (``student.pt`` of a ``benchmarks/student.py`` run): the fp32 ONNX export, then the
int8 export with ``--int8-graphs`` = encoder,decoder / encoder / decoder (calibrated on train-split images, as
``samdistill export --int8`` does), all benched in one process (:func:`samdistill.eval.bench.run_bench`,
tight box, same threads) on the **validation** split, so the choice is never made on test images.
Reported per row: Dice, its change against fp32, first / next click ms, batch-16 images/s.

Writes benchmarks/results/int8_<dataset>.json + .md::

    {"dataset", "split", "student", "machine", "threads", "rows": [{"graphs", "backend", "dice", "dice_minus_fp32",
     "first_click_ms", "next_click_ms", "images_per_s_16"}]}

Usage::

    python benchmarks/int8.py --dataset kvasir_seg      # the seed-0 student of benchmarks/student.py
    python benchmarks/int8.py --render-only
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from _common import RESULTS, dataset_main, machine_line, markdown_table, shared_dataset

#: row -> (graphs quantised, train images calibrated on); None: the fp32 export
CHOICES = {"fp32": None, "int8 encoder+decoder": ("encoder,decoder", 32), "int8 encoder": ("encoder", 32),
           "int8 decoder": ("decoder", 32), "int8 decoder, 128 calibration images": ("decoder", 128)}


def run(args) -> dict:
    from samdistill.api import export_model
    from samdistill.eval.bench import run_bench

    data = shared_dataset(args.dataset)
    run_dir = RESULTS / "runs" / f"student_{args.dataset}_s{args.seed}"
    student = run_dir / "student.pt"
    if not student.is_file():
        raise SystemExit(f"{student} not found: distil it first (python benchmarks/student.py --datasets "
                         f"{args.dataset} --train-only)")
    folders = {}
    for name, choice in CHOICES.items():
        folder = run_dir / "int8_choices" / re.sub(r"[^A-Za-z0-9]+", "_", name)
        kw = {} if choice is None else {"int8": True, "calibrate": str(data), "int8_graphs": choice[0],
                                        "calibrate_n": choice[1]}
        export_model(str(student), folder, force=True, **kw)
        folders[name] = folder
    t0 = time.time()
    bench = run_bench([str(f) for f in folders.values()], str(data), out_dir=run_dir / "int8_choices" / "bench",
                      split="val", limit=args.limit, threads=args.threads, progress=not args.quiet)
    fp32 = bench["rows"][0]
    rows = [{"graphs": name, "backend": b["backend"], "n": b["n"], "dice": b["dice"],
             "dice_minus_fp32": b["dice"] - fp32["dice"], "first_click_ms": b["first_click_ms"],
             "next_click_ms": b["next_click_ms"], "images_per_s_16": b["throughput_img_s_batch16"]}
            for name, b in zip(folders, bench["rows"])]
    return {"dataset": args.dataset, "split": "val", "limit": args.limit, "student": str(student),
            "machine": bench["machine"], "threads": bench["threads"], "rows": rows,
            "bench_minutes": (time.time() - t0) / 60}


def markdown(r: dict) -> str:
    n = r["rows"][0]["n"]
    lines = [f"# int8 choices for the distilled student on {r['dataset']}\n",
             f"Student `{r['student']}`. Validation split, n={n} images, tight box; each int8 export calibrated on "
             "32 train images unless its row says otherwise (MinMax, QDQ, per-channel int8 weights); first click = "
             "read + preprocess + encoder + decoder + postprocess, next click = a new box on the cached embedding; medians, batch 1.\n"]
    table = [[x["graphs"], x["backend"], f"{x['dice']:.4f}", f"{x['dice_minus_fp32']:+.4f}", f"{x['first_click_ms']:.1f}",
              f"{x['next_click_ms']:.1f}", f"{x['images_per_s_16']:.1f}"] for x in r["rows"]]
    lines.append(markdown_table(table, ["quantised", "backend", "val Dice", "- fp32", "first click ms", "next click ms",
                                        "img/s (batch 16)"]))
    lines += ["", f"Bench took {r['bench_minutes']:.1f} min. {machine_line(r['machine'], r['threads'])}", ""]
    return "\n".join(lines)


def main() -> None:
    dataset_main(__doc__, "int8", run, markdown, limit=None, limit_help="only the first N validation images",
                 add_arguments=lambda ap: ap.add_argument(
                     "--seed", type=int, default=0, help="which student.py run (student_<dataset>_s<seed>)"))


if __name__ == "__main__":
    main()
