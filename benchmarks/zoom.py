"""A zoomed second look at small boxes, on the validation split: does segmenting a crop around the box help?

For each validation image with foreground: the tight box; each model segments the whole image under it
(``plain``) and, for each ``--margins`` value, the square crop of margin x the box's longer side around it
(:func:`predict_zoomed` below, pasted back; nothing outside the crop). Dice at the original size
(:func:`samdistill.eval.metrics.dice`), over all images and by the box's share of the image. Models: the LiteMedSAM
teacher, the default recipe's students of ``benchmarks/student.py`` (``--seeds``) and any other run folders
(``--runs``, e.g. an ablation's: a student trained on crops with ``data.zoom``). Validation split only:
a zoom setting is chosen here, never on the test images. No timing: a zoomed click encodes the crop instead of
the whole image (one encoder pass either way when the box comes with the image).

Writes benchmarks/results/zoom_<dataset>.json + .md::

    {"dataset", "split": "val", "n", "machine", "threads", "margins", "small_box_share",
     "rows": [{"model", "run", "n_small", "plain", "zoom": {"<margin>": dice}, "plain_small", "zoom_small": {...}}]}

Usage::

    python benchmarks/zoom.py --dataset kvasir_seg --seeds 0 1 2 --threads 1
    python benchmarks/zoom.py --dataset kvasir_seg --seeds 0 --runs benchmarks/results/runs/student_kvasir_seg_s0_data-zoom-1-5
    python benchmarks/zoom.py --render-only
"""

from __future__ import annotations

import time
from pathlib import Path

from _common import RESULTS, dataset_main, machine_line, markdown_table, shared_dataset

TEACHER = "litemedsam"
SMALL = 0.10  # a box under this share of the image's area counts as small


def predict_zoomed(model, image, box, margin: float):
    """``model.predict`` (a PyTorch model's own, as this file measured it before the Predictor could zoom) on the
    zoom window of ``box`` (:func:`samdistill.data.prompts.zoom_window`); the ``HxW`` bool mask of the whole image.
    The product's zoom is ``Predictor(zoom=M)``."""
    import numpy as np

    from samdistill.data.prompts import zoom_window

    hw = image.shape[:2]
    x0, y0, x1, y1 = zoom_window(box, hw, margin)
    inner = np.asarray(box, dtype=np.float64) - [x0, y0, x0, y0]
    mask = np.zeros(hw, dtype=bool)
    mask[y0:y1, x0:x1] = model.predict(image[y0:y1, x0:x1], inner[None])[0]
    return mask


def run(args) -> dict:
    import numpy as np
    import torch

    from samdistill.data.datasets import open_dataset
    from samdistill.data.prompts import tight_box
    from samdistill.eval.metrics import dice
    from samdistill.machine import machine_info, num_threads
    from samdistill.models.zoo import load_model

    models = {f"teacher ({TEACHER})": (TEACHER, TEACHER)}
    for seed in args.seeds:
        pt = RESULTS / "runs" / f"student_{args.dataset}_s{seed}" / "student.pt"
        if not pt.is_file():
            raise SystemExit(f"no student at {pt}: python benchmarks/student.py --datasets {args.dataset} "
                             f"--seeds {seed} --train-only")
        models[f"student seed {seed}"] = (str(pt), str(pt.relative_to(RESULTS.parent.parent)))
    for run_dir in args.runs or []:
        pt = (Path(run_dir) if Path(run_dir).is_absolute() else RESULTS.parent.parent / run_dir) / "student.pt"
        if not pt.is_file():
            raise SystemExit(f"no student at {pt}")
        models[pt.parent.name] = (str(pt), str(pt.relative_to(RESULTS.parent.parent)))
    ds = open_dataset(str(shared_dataset(args.dataset)))
    ids = ds.ids("val", args.limit)
    t0, rows = time.time(), []
    with num_threads(args.threads), torch.inference_mode():
        samples = [ds.load(sid) for sid in ids]
        samples = [s for s in samples if s.mask.any()]
        for label, (spec, run_name) in models.items():
            model = load_model(spec).eval()
            plain, zoom, share = [], {m: [] for m in args.margins}, []
            for s in samples:
                box = tight_box(s.mask)
                h, w = s.mask.shape
                share.append((box[2] - box[0] + 1) * (box[3] - box[1] + 1) / (h * w))
                plain.append(dice(model.predict(s.image, box[None])[0], s.mask))
                for m in args.margins:
                    zoom[m].append(dice(predict_zoomed(model, s.image, box, m), s.mask))
            small = np.asarray(share) < SMALL
            mean = lambda xs, k=None: float(np.mean(np.asarray(xs)[k] if k is not None else xs))
            rows.append({"model": label, "run": run_name, "n_small": int(small.sum()), "plain": mean(plain),
                         "zoom": {str(m): mean(v) for m, v in zoom.items()}, "plain_small": mean(plain, small),
                         "zoom_small": {str(m): mean(v, small) for m, v in zoom.items()}})
            print(f"{label}: plain {rows[-1]['plain']:.4f}, zoom {rows[-1]['zoom']}")
    return {"dataset": args.dataset, "split": "val", "n": len(samples), "machine": machine_info(),
            "threads": args.threads, "margins": [str(m) for m in args.margins], "small_box_share": SMALL,
            "rows": rows, "minutes": (time.time() - t0) / 60,
            "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def markdown(r: dict) -> str:
    ms = r["margins"]
    table = [[x["model"], f"{x['plain']:.4f}", *(f"{x['zoom'][m]:.4f}" for m in ms),
              f"{x['plain_small']:.4f}", *(f"{x['zoom_small'][m]:.4f}" for m in ms)] for x in r["rows"]]
    small = f"boxes under {r['small_box_share']:.0%} of the image ({r['rows'][0]['n_small']})"
    return "\n".join([
        f"# A zoomed second look on {r['dataset']} (validation split only)", "",
        f"{r['n']} validation images with foreground, tight box. Plain: the model segments the whole image; zoom xM: "
        "it segments the square crop of M x the box's longer side around the box, pasted back "
        "(`predict_zoomed` in `benchmarks/zoom.py`). Dice at the original size. Students: the runs of `benchmarks/student.py` "
        "(`student seed N`: the default recipe; a row named by its run folder: that run's recipe, e.g. an ablation's; "
        + ", ".join(f"`{x['run']}`" for x in r["rows"][1:]) + f"). Took "
        f"{r['minutes']:.1f} min, written {r['written']} by `python benchmarks/zoom.py --dataset {r['dataset']} --seeds "
        + " ".join(x["model"].rsplit(" ", 1)[-1] for x in r["rows"][1:] if x["model"].startswith("student seed "))
        + (" --runs " + " ".join(x["run"].rsplit("/", 1)[0] for x in r["rows"][1:] if not x["model"].startswith(
            "student seed ")) if any(not x["model"].startswith("student seed ") for x in r["rows"][1:]) else "")
        + f" --margins {' '.join(ms)} --threads {r['threads']}`. "
        + machine_line(r["machine"], r["threads"]), "",
        markdown_table(table, ["model", "all: plain", *(f"all: zoom x{m}" for m in ms), f"{small}: plain",
                               *(f"small: zoom x{m}" for m in ms)]), ""])


def _arguments(ap) -> None:
    ap.add_argument("--seeds", nargs="+", type=int, default=[0], help="the students of benchmarks/student.py's runs")
    ap.add_argument("--margins", nargs="+", type=float, default=[1.5, 2.0], help="crop side / the box's longer side")
    ap.add_argument("--runs", nargs="+", metavar="RUN_DIR", help="other students: run folders (relative to the repo)")


def main() -> None:
    dataset_main(__doc__, "zoom", run, markdown, limit=None, limit_help="the first N validation images",
                 add_arguments=_arguments)


if __name__ == "__main__":
    main()
