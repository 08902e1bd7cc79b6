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
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, shared_dataset, write_results  # noqa: E402

DATASETS = ("kvasir_seg", "busi", "hc18")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--limit", type=int, default=None, help="first N test images (default: the full split)")
    ap.add_argument("--mobilesam-checkpoint", type=Path, default=None)
    args = ap.parse_args()

    from samdistill.api import evaluate_model, load_model
    from samdistill.eval.efficiency import promptable_macs, time_ms
    from samdistill.machine import machine_info, num_threads

    t_all = time.time()
    rows = []
    for name in args.datasets:
        s = evaluate_model("litemedsam", shared_dataset(name), out_dir=RESULTS / "runs" / f"teacher_litemedsam_{name}",
                           split="test", limit=args.limit, threads=args.threads, progress=True)
        rows.append(s)
    mobile = None
    if args.mobilesam_checkpoint is not None:
        s = evaluate_model("mobilesam", shared_dataset("kvasir_seg"), checkpoint=args.mobilesam_checkpoint,
                           out_dir=RESULTS / "runs" / "teacher_mobilesam_kvasir_seg", split="test",
                           limit=args.limit, threads=args.threads)
        rows.append(s)
    else:
        m = load_model("mobilesam", pretrained=False)
        with num_threads(args.threads) as t:
            x = torch.zeros(1, 3, 1024, 1024)
            emb = m.encode(x)
            box = torch.tensor([[256.0, 256.0, 768.0, 768.0]])
            enc = time_ms(lambda: m.encode(x), repeats=20)
            dec = time_ms(lambda: m.decode(emb, boxes=box), repeats=20)
        mobile = {
            "model": "mobilesam", "accuracy": None,
            "why_no_accuracy": "the official mobile_sam.pt is not on this machine and cannot be downloaded here; "
            "pass --mobilesam-checkpoint to measure it",
            "params": m.parameter_counts(), **promptable_macs(m),
            "latency": {"encoder_ms": enc["median"], "decoder_ms": dec["median"],
                        "how": f"random-init weights (timing does not depend on them), median of 20 after 3 "
                        f"warm-up, batch 1, {t} threads"},
        }
    elapsed = time.time() - t_all
    machine = machine_info()
    payload = {"rows": rows, "mobilesam_architecture_only": mobile, "time_s": elapsed, "machine": machine,
               "threads": args.threads}

    lines = [
        "# Teachers on the shared datasets (samdistill eval, tight box from the ground truth)\n",
        "| model | dataset | n | Dice | IoU | NSD@2px | HD95 px | ellipse-in-box Dice | filled-box Dice | "
        "params M | enc GMACs | enc ms | dec ms | end-to-end ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in rows:
        b = s["baselines"]
        lat = s["latency"]
        lines.append(
            f"| {s['model']} | {s['dataset']} | {s['n']} | {s['dice']:.4f} | {s['iou']:.4f} | {s['nsd']:.4f} | "
            f"{s['hd95']:.2f} | {b['box_ellipse']['dice']:.4f} | {b['box_filled']['dice']:.4f} | "
            f"{s['params']['total'] / 1e6:.2f} | {s['encoder_gmacs']:.2f} | {lat['encoder_ms']:.0f} | "
            f"{lat['decoder_ms']:.0f} | {lat['end_to_end_ms']:.0f} |"
        )
    if mobile:
        lines.append(
            f"| mobilesam | kvasir_seg | - | not measured | | | | | | {mobile['params']['total'] / 1e6:.2f} | "
            f"{mobile['encoder_gmacs']:.2f} | {mobile['latency']['encoder_ms']:.0f} | "
            f"{mobile['latency']['decoder_ms']:.0f} | |"
        )
        lines.append(f"\nMobileSAM accuracy: {mobile['why_no_accuracy']}. Its row gives the architecture's cost only.")
    excl = [f"{s['dataset']}: {s['excluded_empty_gt']['count']}" for s in rows if s["excluded_empty_gt"]["count"]]
    if excl:
        lines.append(f"\nTest images with an empty ground truth (no box can be made; excluded and counted): {', '.join(excl)}.")
    lines.append(
        f"\nLatency: median over the evaluated images after one warm-up, batch 1, {args.threads} torch threads, CPU; "
        f"end to end = preprocess -> mask at the original size. Machine: {machine['cpu']}, {machine['cores']} cores, "
        f"torch {machine['torch']}. Whole run: {elapsed / 60:.1f} min."
    )
    write_results("teachers", payload, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
