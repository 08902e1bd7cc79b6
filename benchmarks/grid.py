"""What a student's embedding grid costs per click: grid 16 vs 32 (teacher-size and slim decoders) against the teacher.

Timing and MACs only: each student is built from the LiteMedSAM teacher with the default backbone and the
detail path (``student.detail: auto``), left untrained (its Dice means nothing and is not reported), exported to
ONNX fp32 and int8 (decoder int8, the shipped default), and benched with the teacher in one process
(:func:`samdistill.eval.bench.run_bench`, same threads, tight box) on validation images. Next click = a new box
on the cached embedding (decoder + postprocess to the original size); first click = read + preprocess +
encoder + decoder + postprocess. The question it answers: which grids can make a next click >= 8x cheaper
than the teacher's (issue 23's target), now that onnxruntime no longer spins between runs.

With a trained grid-16 student (``benchmarks/student.py``'s seed-0 run, when it exists) it also checks where the
grid's accuracy goes, on the same validation images (PyTorch, tight box, Dice at the original size): the
teacher's own low-res mask logits (4g x 4g = 256x256) average-pooled to the student's mask size (64x64) and to
128x128, each upsampled back, against the teacher's unpooled mask and the student's. If pooling the teacher's
logits costs little, the grid-16 student loses its accuracy in its tokens, not in its mask's resolution.

Writes benchmarks/results/grid_<dataset>.json + .md::

    {"dataset", "split", "n", "machine", "threads", "rows": [{"student", "grid", "decoder", "backend",
     "encoder_gmacs", "decoder_gmacs", "first_click_ms", "next_click_ms", "next_click_speedup"}],
     "mask_resolution": {"student", "n", "dice": {"teacher (256x256 logits)", "teacher pooled to 128x128",
     "teacher pooled to 64x64", "student"}} or null}

Usage::

    python benchmarks/grid.py --dataset kvasir_seg --limit 20
    python benchmarks/grid.py --render-only
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _common import RESULTS, dataset_main, machine_line, markdown_table, shared_dataset

TEACHER = "litemedsam"
BACKBONE = "mobilenetv4_conv_small"
STUDENTS = {"grid 16": {"grid": 16}, "grid 32": {"grid": 32}, "grid 32, slim decoder": {"grid": 32, "decoder": "slim"}}


def run(args) -> dict:
    from samdistill.api import export_model
    from samdistill.eval.bench import run_bench
    from samdistill.models.students.promptable import build_student
    from samdistill.models.zoo import load_model, save_model

    data = shared_dataset(args.dataset)
    teacher = load_model(TEACHER)
    specs = [(None, TEACHER)]
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in STUDENTS.items():
            pt = Path(tmp) / f"{name.replace(' ', '_').replace(',', '')}.pt"
            save_model(build_student(BACKBONE, teacher=teacher, detail="auto", **kw).eval(), pt)
            specs.append((name, str(pt)))
            for tag, extra in (("fp32", {}), ("int8", {"int8": True, "calibrate": str(data)})):
                folder = pt.with_name(f"{pt.stem}_{tag}")
                export_model(str(pt), folder, **extra)
                specs.append((name, str(folder)))
        t0 = time.time()
        bench = run_bench([s for _, s in specs], str(data), out_dir=Path(tmp) / "bench", split="val",
                          limit=args.limit, threads=args.threads, progress=not args.quiet)
    macs = {}  # ONNX rows: the MACs of the PyTorch model they were exported from
    rows = []
    for (name, _), b in zip(specs, bench["rows"]):
        if b["backend"] == "torch":
            macs[name] = (b["encoder_gmacs"], b["decoder_gmacs"])
        kw = STUDENTS.get(name, {})
        rows.append({"student": name or f"teacher ({TEACHER})", "grid": kw.get("grid", 64),
                     "decoder": kw.get("decoder", "teacher"), "backend": b["backend"],
                     "encoder_gmacs": macs[name][0], "decoder_gmacs": macs[name][1],
                     "first_click_ms": b["first_click_ms"], "next_click_ms": b["next_click_ms"],
                     "next_click_speedup": b["next_click_speedup_vs_first"]})
    return {"dataset": args.dataset, "split": "val", "n": bench["rows"][0]["n"], "machine": bench["machine"],
            "threads": bench["threads"], "rows": rows, "bench_minutes": (time.time() - t0) / 60,
            "mask_resolution": mask_resolution(data, teacher, args)}


def mask_resolution(data: Path, teacher, args) -> dict | None:
    """Val Dice of the teacher with its low-res logits pooled to coarser masks, and of the trained student."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from samdistill.data.boxes import tight_boxes
    from samdistill.data.datasets import open_dataset
    from samdistill.dice import dice
    from samdistill.machine import num_threads
    from samdistill.models.zoo import load_model

    student_pt = RESULTS / "runs" / f"student_{args.dataset}_s0" / "student.pt"
    if not student_pt.is_file():
        print(f"no trained student at {student_pt}: mask-resolution check left out")
        return None
    student = load_model(str(student_pt)).eval()
    teacher = teacher.eval()
    ds = open_dataset(str(data))
    ids = ds.ids("val", args.limit)
    scores: dict[str, list[float]] = {}

    def mask_of(model, logits, hw):
        return (model.preprocess.logits_to_original(logits, hw)[0, 0] > 0).numpy()

    with num_threads(args.threads), torch.inference_mode():
        for sid in ids:
            s = ds.load(sid)
            hw = s.mask.shape
            box = tight_boxes(torch.from_numpy(s.mask)[None].float())[0].numpy()[None].astype(np.float64)
            low = {}
            for name, model in (("teacher", teacher), ("student", student)):
                emb = model.encode(model.preprocess.image(s.image)[None])
                b = torch.as_tensor(model.preprocess.boxes_to_input(box, hw), dtype=torch.float32).reshape(1, 4)
                low[name] = model.decode(emb, boxes=b)[0]
            t = low["teacher"]
            got = {f"teacher ({t.shape[-1]}x{t.shape[-1]} logits)": t}
            for size in (128, 64):
                pooled = F.adaptive_avg_pool2d(t, size)
                got[f"teacher pooled to {size}x{size}"] = F.interpolate(pooled, size=t.shape[-2:], mode="bilinear",
                                                                        align_corners=False)
            got["student"] = low["student"]
            for name, logits in got.items():
                model = student if name == "student" else teacher
                scores.setdefault(name, []).append(dice(mask_of(model, logits, hw), s.mask))
    return {"student": str(student_pt.relative_to(RESULTS.parent.parent)), "n": len(ids),
            "student_mask_size": int(low["student"].shape[-1]),
            "dice": {k: float(np.mean(v)) for k, v in scores.items()}}


def markdown(r: dict) -> str:
    lines = [f"# Cost per click by embedding grid on {r['dataset']}\n",
             f"Untrained students ({BACKBONE}, detail path auto; timing and MACs only, no Dice) and the {TEACHER} "
             f"teacher benched in one process on the first {r['n']} {r['split']} images, tight box, batch 1, medians. "
             "Next click = decoder + postprocess to the original size on the cached embedding; x teacher = the "
             "teacher's PyTorch next click / this row's. int8 = decoder int8, encoder fp32 (the shipped default).\n"]
    table = [[x["student"], x["grid"], x["decoder"], x["backend"], f"{x['encoder_gmacs']:.3f}",
              f"{x['decoder_gmacs']:.3f}", f"{x['first_click_ms']:.1f}", f"{x['next_click_ms']:.1f}",
              f"{x['next_click_speedup']:.1f}x"] for x in r["rows"]]
    lines.append(markdown_table(table, ["model", "grid", "decoder", "backend", "encoder GMACs", "decoder GMACs (1 box)",
                                        "first click ms", "next click ms", "next click x teacher"]))
    mr = r.get("mask_resolution")
    if mr:
        lines += ["", f"Where the grid's accuracy goes (PyTorch, the same {mr['n']} {r['split']} images, tight box, Dice at "
                  f"the original size): the teacher's low-res logits average-pooled to coarser masks and upsampled back, "
                  f"and the trained grid-16 student `{mr['student']}` (its masks are {mr['student_mask_size']}x"
                  f"{mr['student_mask_size']}).", "",
                  markdown_table([[k, f"{v:.4f}"] for k, v in mr["dice"].items()], ["masks from", "val Dice"])]
    lines += ["", f"Bench took {r['bench_minutes']:.1f} min. {machine_line(r['machine'], r['threads'])}", ""]
    return "\n".join(lines)


def main() -> None:
    dataset_main(__doc__, "grid", run, markdown, limit=20, limit_help="the first N validation images (default 20)")


if __name__ == "__main__":
    main()
