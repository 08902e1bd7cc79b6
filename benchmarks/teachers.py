"""Claim: the teachers' accuracy and cost on the shared datasets, measured with `samdistill eval`.

LiteMedSAM (bundled weights) on the full test splits of Kvasir-SEG, BUSI and HC18, tight box from
the ground truth, with the prompt-only baselines (ellipse inscribed in the box, filled box) under the
same prompts. MobileSAM on Kvasir-SEG when its official `mobile_sam.pt` is given
(--mobilesam-checkpoint); without it only its architecture's parameters, MACs and latency are
measured (random init) and the accuracy row says why it is missing.

    python benchmarks/teachers.py --threads 2 [--mobilesam-checkpoint PATH/mobile_sam.pt]

Writes benchmarks/results/teachers.{json,md}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import RESULTS, markdown_table, render_only, shared_dataset, write_results

DATASETS = ("kvasir_seg", "busi", "hc18")


def markdown(payload: dict) -> str:
    rows, mobile, machine = payload["rows"], payload["mobilesam_architecture_only"], payload["machine"]
    table = []
    for s in rows:
        b, lat = s["baselines"], s["latency"]
        table.append([s["model"], s["dataset"], s["n"], f"{s['dice']:.4f}", f"{s['iou']:.4f}", f"{s['nsd']:.4f}",
                      f"{s['hd95']:.2f}", f"{b['box_ellipse']['dice']:.4f}", f"{b['box_filled']['dice']:.4f}",
                      f"{s['params']['total'] / 1e6:.2f}", f"{s['encoder_gmacs']:.2f}", f"{lat['encoder_ms']:.0f}",
                      f"{lat['decoder_ms']:.0f}", f"{lat['end_to_end_ms']:.0f}"])
    if mobile:
        table.append(["mobilesam", "kvasir_seg", "-", "not measured", "", "", "", "", "",
                      f"{mobile['params']['total'] / 1e6:.2f}", f"{mobile['encoder_gmacs']:.2f}",
                      f"{mobile['latency']['encoder_ms']:.0f}", f"{mobile['latency']['decoder_ms']:.0f}", ""])
    lines = [
        "# Teachers on the shared datasets (samdistill eval, tight box from the ground truth)\n",
        markdown_table(table, ["model", "dataset", "n", "Dice", "IoU", "NSD@2px", "HD95 px", "ellipse-in-box Dice",
                               "filled-box Dice", "params M", "enc GMACs", "enc ms", "dec ms", "end-to-end ms"]),
    ]
    if mobile:
        lines.append(f"\nMobileSAM accuracy: {mobile['why_no_accuracy']}. Its row gives the architecture's cost only.")
    excl = [f"{s['dataset']}: {s['excluded_empty_gt']['count']}" for s in rows if s["excluded_empty_gt"]["count"]]
    if excl:
        lines.append(f"\nTest images with an empty ground truth (no box can be made; excluded and counted): {', '.join(excl)}.")
    lines.append(
        f"\nLatency: median over the evaluated images after one warm-up, batch 1, {payload['threads']} torch threads, "
        f"CPU; end to end = preprocess -> mask at the original size. Machine: {machine['cpu']}, {machine['cores']} "
        f"cores, torch {machine['torch']}. Whole run: {payload['time_s'] / 60:.1f} min."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--limit", type=int, default=None, help="first N test images (default: the full split)")
    ap.add_argument("--mobilesam-checkpoint", type=Path, default=None)
    ap.add_argument("--render-only", action="store_true", help="rewrite results/teachers.md from its .json (no run)")
    args = ap.parse_args()
    if args.render_only:
        render_only(["teachers"], markdown)
        return

    from samdistill.api import evaluate_model, load_model
    from samdistill.eval.efficiency import promptable_latency, promptable_macs
    from samdistill.machine import machine_info, num_threads

    t_all = time.time()
    rows = []
    for name in args.datasets:
        s = evaluate_model("litemedsam", shared_dataset(name), out_dir=RESULTS / "runs" / f"teacher_litemedsam_{name}",
                           split="test", force=True, limit=args.limit, threads=args.threads, progress=True)
        rows.append(s)
    mobile = None
    if args.mobilesam_checkpoint is not None:
        s = evaluate_model("mobilesam", shared_dataset("kvasir_seg"), checkpoint=args.mobilesam_checkpoint,
                           out_dir=RESULTS / "runs" / "teacher_mobilesam_kvasir_seg", split="test", force=True,
                           limit=args.limit, threads=args.threads)
        rows.append(s)
    else:
        m = load_model("mobilesam", pretrained=False)
        with num_threads(args.threads) as t:
            lat = promptable_latency(m, repeats=20)
        mobile = {
            "model": "mobilesam", "accuracy": None,
            "why_no_accuracy": "the official mobile_sam.pt is not on this machine and cannot be downloaded here; "
            "pass --mobilesam-checkpoint to measure it",
            "params": m.parameter_counts(), **promptable_macs(m),
            "latency": {"encoder_ms": lat["encoder_ms"], "decoder_ms": lat["decoder_ms"],
                        "how": f"random-init weights (timing does not depend on them), median of 20 after 3 "
                        f"warm-up, batch 1, {t} threads"},
        }
    elapsed = time.time() - t_all
    machine = machine_info()
    payload = {"rows": rows, "mobilesam_architecture_only": mobile, "time_s": elapsed, "machine": machine,
               "threads": args.threads}

    write_results("teachers", payload, markdown(payload))


if __name__ == "__main__":
    main()
