"""Claim: the exported default student runs on this CPU with onnxruntime at >= 20x the teacher's PyTorch
end-to-end throughput, with Dice within 0.005 of its own PyTorch version.

Takes the student that benchmarks/kdsam.py trained for each dataset (benchmarks/results/runs/
kdsam_<dataset>/student.pt), exports it with `samdistill export`, and runs `samdistill bench` on the
teacher (PyTorch), the student (PyTorch) and the student (ONNX) on the test split, in one process.
Writes benchmarks/results/bench_<dataset>.{json,md,png}.

    python benchmarks/deploy.py --datasets kvasir_seg hc18 busi --threads 2
"""

from __future__ import annotations

import argparse
import json
import shutil

from _common import RESULTS, render_only, shared_dataset, write_results


def markdown(r: dict) -> str:
    """``samdistill bench``'s table (eval/bench.py bench_markdown) and this claim's targets."""
    from samdistill.eval.bench import bench_markdown

    t, export = r["targets"], r["export_verification"]
    return bench_markdown(r) + (
        f"\nONNX student throughput / teacher (PyTorch) throughput at batch 16: "
        f"{t['onnx_throughput_vs_teacher']:.1f}x (target >= 20x: {'met' if t['onnx_throughput_20x'] else 'NOT met'}). "
        f"ONNX vs PyTorch student Dice: {t['onnx_dice_minus_torch_dice']:+.4f} (target within 0.005: "
        f"{'met' if t['dice_within_0.005'] else 'NOT met'}). Export check: max |onnx - torch| "
        f"{export['max_abs_diff']:.2e}, min Dice agreement {export['min_dice_agreement']:.4f}.\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["kvasir_seg", "hc18", "busi"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--render-only", action="store_true", help="rewrite results/bench_<dataset>.md from its .json")
    args = ap.parse_args()
    if args.render_only:
        render_only([f"bench_{name}" for name in args.datasets if (RESULTS / f"bench_{name}.json").exists()], markdown)
        return

    from samdistill.api import export_model
    from samdistill.eval.bench import run_bench

    for name in args.datasets:
        run = RESULTS / "runs" / f"kdsam_{name}"
        student = run / "student.pt"
        if not student.exists():
            print(f"skip {name}: no trained student at {student} (run benchmarks/kdsam.py first)")
            continue
        onnx_dir = run / "onnx"
        export = export_model(student, onnx_dir, force=True)  # this script owns the folder: re-export replaces it
        out = RESULTS / "runs" / f"bench_{name}"
        r = run_bench(["litemedsam", str(student), str(onnx_dir)], str(shared_dataset(name)), out_dir=out,
                      limit=args.limit, threads=args.threads, progress=False)
        teacher, torch_s, onnx_s = r["rows"]
        r["export_verification"] = export
        r["targets"] = {
            "onnx_throughput_vs_teacher": onnx_s["throughput_img_s_batch16"] / teacher["throughput_img_s_batch16"],
            "onnx_throughput_20x": onnx_s["throughput_img_s_batch16"] / teacher["throughput_img_s_batch16"] >= 20,
            "onnx_dice_minus_torch_dice": onnx_s["dice"] - torch_s["dice"],
            "dice_within_0.005": abs(onnx_s["dice"] - torch_s["dice"]) <= 0.005,
        }
        write_results(f"bench_{name}", r, markdown(r))
        shutil.copy(out / "pareto.png", RESULTS / f"bench_{name}.png")
        print(json.dumps(r["targets"]))


if __name__ == "__main__":
    main()
