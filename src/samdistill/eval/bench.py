"""``samdistill bench``: teacher and students (PyTorch or ONNX) on one split, in one process.

For every model, with the same prompts (tight box from the ground truth) and the same pipeline
(:class:`samdistill.Predictor`): Dice / IoU / HD95 at the original resolution, COCO mask mAP@[.5:.95]; parameters and
MACs (PyTorch models); batch-1 latency of the encoder, the decoder and end to end (median over the
images after 3 warm-up runs); throughput at batch 16 (encoder on a 16-image batch + 16 decoder calls).
The two latencies a user feels (DESIGN.md section 8b), from the same per-image pass: ``first_click_ms``
= read the image file + preprocess + encoder + decoder (tight box) + postprocess to the original size;
``next_click_ms`` = ``Predictor.predict`` for a new box (the tight box jittered by a few px, seeded) on
the cached embedding: decoder + postprocess (None for a prompt-free model, which takes no prompt; its
first click is image in -> mask out). A generated dataset (``synthetic``) has no files: its images are
written once as PNG to a temporary folder so the read is timed too.
Models are timed in this process with the same thread count (ONNX sessions included), interleaved image by
image (:func:`bench_models`), so a slow spell of a shared machine slows every row alike and their ratios hold.
A model may be benched with ``zoom=M`` (:class:`~samdistill.deploy.predictor.Predictor`: the box's crop is
encoded instead of the whole image): its row says ``zoom``; its first click and end-to-end time hold the crop's
encoder pass, which happens in the first ``predict``, so its encoder/decoder split is not measured (None).
Writes ``bench.json``, ``bench.md`` and ``pareto.png`` (accuracy vs latency and vs MACs).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from samdistill.atomic import check_out_dir
from samdistill.data.datasets import open_dataset
from samdistill.data.images import read_image
from samdistill.data.prompts import tight_box
from samdistill.deploy.predictor import Predictor
from samdistill.eval.coco_map import CocoMaskAP
from samdistill.eval.efficiency import model_macs, peak_memory_mb
from samdistill.eval.interactive import curve_summary, run_clicks
from samdistill.eval.metrics import MetricAccumulator, image_metrics
from samdistill.machine import machine_info, num_threads
from samdistill.viz.pareto import pareto_plot


#: Warm-up passes (read + encode + both decodes) on the first image before anything is timed (DESIGN.md section 8).
WARMUP = 3
#: How the rows share the machine (recorded in bench.json; results from before it timed each model in one block).
INTERLEAVED = "interleaved: each image through every model in turn, the first model rotating by one per image"
#: A next click's box: the tight box with each side moved by up to this many pixels (seeded).
JITTER_PX = 3


def _describe(spec: str, threads: int | None = None, zoom: float | None = None) -> tuple[Predictor, dict[str, Any]]:
    """The model's Predictor and its row's static fields; ``zoom`` None: the model's own (``Predictor.load``)."""
    pred, info = _load(spec, threads)
    if zoom is not None and not pred.prompt_free:  # a prompt-free model has no box to crop around
        pred.zoom = zoom
    if pred.zoom is not None:
        info["zoom"] = pred.zoom
    return pred, info


def _load(spec: str, threads: int | None) -> tuple[Predictor, dict[str, Any]]:
    p = Path(spec)
    info: dict[str, Any] = {"model": spec}
    if p.is_dir():
        pred = Predictor.load(p, threads=threads)  # checks the folder's manifest and hashes
        import onnx

        from samdistill.deploy.onnx import read_export

        n = 0
        for f in read_export(p, check=False).graphs.values():  # the graphs the manifest names, not a stale file
            n += sum(int(np.prod(t.dims)) for t in onnx.load(str(f), load_external_data=False).graph.initializer)
        info.update(backend=pred.backend, params_total=n, encoder_gmacs=None, decoder_gmacs=None)
        return pred, info
    from samdistill.models.zoo import load_model

    m = load_model(spec)
    pc = m.parameter_counts()
    macs = model_macs(m)
    if "total_gmacs" in macs:  # prompt-free: the whole network is "the encoder"
        macs = {"encoder_gmacs": macs["total_gmacs"], "decoder_gmacs": 0.0}
    info.update(backend="torch", params_total=pc["total"], params_encoder=pc["encoder"] or pc["total"], **macs)
    return Predictor.from_torch(m, name=p.stem if p.is_file() else spec), info


def jittered_box(box: np.ndarray, hw: tuple[int, int], rng: np.random.Generator, px: int = JITTER_PX) -> np.ndarray:
    """``box`` (``x0, y0, x1, y1``) with each side moved by up to ``px`` pixels, kept inside the ``h x w`` image and
    at least one pixel wide: the new box of a next click."""
    h, w = hw
    b = np.asarray(box, np.float64).reshape(4) + rng.integers(-px, px + 1, 4)
    x0, x1 = np.clip([b[0], b[2]], 0, w - 1)
    y0, y1 = np.clip([b[1], b[3]], 0, h - 1)
    x0, x1 = min(x0, max(x1 - 1, 0)), max(x1, min(x0 + 1, w - 1))
    y0, y1 = min(y0, max(y1 - 1, 0)), max(y1, min(y0 + 1, h - 1))
    return np.array([[x0, y0, x1, y1]])


def bench_model(spec: str, dataset, ids: list[str], *, progress: bool = True, threads: int | None = None,
                image_dir: Path | None = None, clicks: int = 0, zoom: float | None = None) -> dict[str, Any]:
    """One model's row (:func:`bench_models` with one model)."""
    return bench_models([spec], dataset, ids, progress=progress, threads=threads, image_dir=image_dir, clicks=clicks,
                        zooms=[zoom])[0]


def bench_models(specs: list[str], dataset, ids: list[str], *, progress: bool = True, threads: int | None = None,
                 image_dir: Path | None = None, clicks: int = 0,
                 zooms: list[float | None] | None = None) -> list[dict[str, Any]]:
    """One row per model, the models interleaved: every image is read, encoded and decoded by each model in turn
    (the order rotated by one model per image), so a slow spell of a shared machine lands on all of them alike and
    their latency ratios hold; the batch-16 throughput likewise alternates the models over its 3 rounds.
    ``image_dir``: where the images of a dataset without files (``synthetic``) are written so a first click reads
    a file like a user's does (a temporary folder when None). ``clicks``: also the interactive protocol (the
    tight box, then up to ``clicks`` corrective clicks) on each image, decoded on the embedding of the timed pass
    (untimed; no second encoder pass): ``row["clicks"]``. ``zooms``: one zoom margin (or None) per model."""
    zooms = list(zooms) if zooms is not None else [None] * len(specs)
    if len(zooms) != len(specs):
        raise ValueError(f"{len(zooms)} zoom values for {len(specs)} models")
    passes = [_ModelPass(*_describe(spec, threads, z), clicks=clicks) for spec, z in zip(specs, zooms)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(image_dir or tmp)
        rng = np.random.default_rng(0)  # the same next-click boxes for every model
        desc = f"bench {passes[0].info['model']}" if len(passes) == 1 else f"bench {len(passes)} models"
        for i, sample in enumerate(tqdm(dataset.iter_samples(ids), total=len(ids), desc=desc, disable=not progress)):
            path = _image_file(dataset, sample, folder)
            box = tight_box(sample.mask)[None] if sample.mask.any() else None
            again = None if box is None else {"boxes": jittered_box(box[0], sample.mask.shape, rng)}
            for k in range(len(passes)):
                passes[(i + k) % len(passes)].image(sample, path, box, again)
    _throughput(passes)
    return [p.row() for p in passes]


def _image_file(dataset, sample, image_dir: Path) -> Path:
    """The file a user would open for ``sample``: the dataset's own, or (no files) the image written once as PNG."""
    rec = dataset.by_id.get(sample.id)
    if rec is not None and rec.image is not None:
        return Path(rec.image)
    f = image_dir / f"{sample.id}.png"
    if not f.is_file():
        from PIL import Image

        Image.fromarray(sample.image).save(f)
    return f


class _ModelPass:
    """One model's accumulators over the interleaved pass of :func:`bench_models`."""

    def __init__(self, pred: Predictor, info: dict[str, Any], *, clicks: int = 0):
        self.pred, self.info = pred, info
        self.clicks = 0 if pred.prompt_free else clicks
        self.acc, self.coco, self.curves = MetricAccumulator(), CocoMaskAP(), []
        self.times: dict[str, list[float]] = {k: [] for k in ("enc", "dec", "e2e", "first", "next")}
        self.warmed = False
        self.best_batch16, self.peak = float("inf"), None

    def image(self, sample, path: Path, box: np.ndarray | None, again: dict | None) -> None:
        pred = self.pred
        if box is None and not pred.prompt_free:  # an empty mask has no tight box to prompt with
            return
        prompt = {} if pred.prompt_free else {"boxes": box}
        again = None if pred.prompt_free else again
        for _ in range(0 if self.warmed else WARMUP):  # the first image, untimed: the same calls as the timed pass
            pred.set_image(read_image(path))
            pred.predict(**prompt)
            if again is not None:
                pred.predict(**again)
        self.warmed = True
        t_read = time.perf_counter()
        image = read_image(path)
        t0 = time.perf_counter()
        pred.set_image(image)
        t1 = time.perf_counter()
        masks, iou = pred.predict(**prompt)
        t2 = time.perf_counter()
        if again is not None:  # a new box on the cached embedding: what a next click costs
            pred.predict(**again)
            self.times["next"].append((time.perf_counter() - t2) * 1e3)
        if self.clicks:  # untimed, on the embedding the timed pass left in the predictor
            self.curves.append(run_clicks(pred, image, sample.mask, first="box", clicks=self.clicks, encoded=True)[0])
        self.acc.add(image_metrics(masks[0], sample.mask))
        self.coco.add(sample.mask, masks[0], 1.0 if pred.prompt_free else float(iou[0]))
        split = pred.zoom is None  # zoomed: set_image only keeps the image, the crop is encoded in predict
        for k, v in (("enc", t1 - t0), ("dec", t2 - t1), ("e2e", t2 - t0), ("first", t2 - t_read)):
            if split or k in ("e2e", "first"):
                self.times[k].append(v * 1e3)

    def batch16(self, x: np.ndarray) -> None:
        """Throughput at batch 16: one batched encoder call on ``x`` + 16 decoder calls."""
        pred = self.pred
        s = pred.preprocess.input_size
        coords = np.array([[[s * 0.2, s * 0.2], [s * 0.7, s * 0.8]]], np.float32)
        labels = np.array([[2, 3]], np.int64)
        emb = pred._encode(x)
        if not pred.prompt_free:
            for i in range(16):
                pred._decode(emb[i : i + 1], coords, labels)

    def row(self) -> dict[str, Any]:
        means, t = self.acc.aggregate(), self.times

        def median(k: str) -> float | None:
            return float(np.median(t[k])) if t[k] else None

        return {
            **self.info, "n": len(self.acc), "dice": means.get("dice"), "iou": means.get("iou"),
            "hd95": means.get("hd95"), "nsd": means.get("nsd"), "coco_mask_ap": self.coco.compute(),
            "latency_ms": {"preprocess_plus_encoder": median("enc"), "decoder_plus_postprocess": median("dec"),
                           "end_to_end": median("e2e")},
            "first_click_ms": median("first"), "next_click_ms": median("next"),
            "throughput_img_s_batch16": 16 / self.best_batch16,
            "peak_memory_mb_batch16": self.peak,
            **({"clicks": curve_summary(self.curves)} if self.curves else {}),
        }


def _throughput(passes: list[_ModelPass]) -> None:
    """Each model's batch-16 peak memory (alone), then its best of 3 timed rounds, the models alternating; one
    random batch per input size, shared by the models of that size."""
    batches: dict[int, np.ndarray] = {}
    xs = [batches.setdefault(s, np.random.default_rng(0).random((16, 3, s, s), dtype=np.float32))
          for s in (p.pred.preprocess.input_size for p in passes)]
    for p, x in zip(passes, xs):
        p.pred._encode(x[:2])
        p.peak = peak_memory_mb(lambda: p.batch16(x))
    for _ in range(3):
        for p, x in zip(passes, xs):
            t0 = time.perf_counter()
            p.batch16(x)
            p.best_batch16 = min(p.best_batch16, time.perf_counter() - t0)


def run_bench(models: list[str], data: str, *, out_dir: str | Path, split: str = "test", limit: int | None = None,
              threads: int | None = None, labels: list[int] | None = None, progress: bool = True,
              clicks: int = 0, zooms: list[float | None] | None = None) -> dict[str, Any]:
    """Bench ``models`` on ``data[split][:limit]`` into ``out_dir``; ``labels``: masks are label maps;
    ``clicks``: each promptable row also carries the Dice-vs-clicks curve (:func:`bench_model`); ``zooms``: one
    zoom margin (or None) per model."""
    out = check_out_dir(out_dir)  # before any model is loaded
    out.mkdir(parents=True, exist_ok=True)
    ds = open_dataset(data, labels=labels)
    ids = ds.ids(split, limit)
    t0 = time.perf_counter()
    with num_threads(threads) as used:
        rows = bench_models(models, ds, ids, progress=progress, threads=used, clicks=clicks, zooms=zooms)
    ref = rows[0]
    for r in rows:
        r["speedup_end_to_end_vs_first"] = ref["latency_ms"]["end_to_end"] / r["latency_ms"]["end_to_end"]
        for k in ("first_click", "next_click"):  # None where either side takes no prompt
            a, b = ref.get(f"{k}_ms"), r.get(f"{k}_ms")
            r[f"{k}_speedup_vs_first"] = a / b if a and b else None
        r["throughput_ratio_vs_first"] = r["throughput_img_s_batch16"] / ref["throughput_img_s_batch16"]
    result = {"dataset": ds.name, "split": split, "limit": limit, "prompt": "tight box from the ground truth",
              "threads": used, "device": "cpu", "rows": rows, "seconds": time.perf_counter() - t0,
              "warmup": WARMUP, "jitter_px": JITTER_PX, "timing": INTERLEAVED,
              "machine": machine_info(),
              "memory": "peak extra resident memory (MiB) during the batch-16 pass: RSS high-water mark reset before it"}
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    (out / "bench.md").write_text(bench_markdown(result))
    pareto_plot(rows, out / "pareto.png", title=f"{ds.name}/{split}", threads=used)
    return result


def bench_markdown(r: dict[str, Any]) -> str:
    """``bench.md``. A result from before the click latencies (no ``first_click_ms`` in its rows: the committed
    ``benchmarks/results/bench_*.json``) renders as it was written: without their columns, with one warm-up."""
    clicks = any("first_click_ms" in x for x in r["rows"])
    cols = ["model", "backend", "n", "Dice", "IoU", "HD95 px", "mAP", "params M", "enc GMACs", "enc ms", "dec ms",
            "end-to-end ms"] + (["first click ms", "next click ms"] if clicks else []) + [
            "img/s @16", "peak MiB @16", "speed-up vs first"] + (
            ["first click vs first", "next click vs first"] if clicks else []) + ["throughput vs first"]
    lines = [
        f"# bench: {r['dataset']}/{r['split']} ({r['prompt']}), {r['threads']} threads, CPU\n",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]

    def ms(v: float | None) -> str:  # None: a prompt-free model has no next click; a zoomed one no enc/dec split
        return "–" if v is None else f"{v:.1f}"

    def ratio(v: float | None) -> str:
        return "–" if v is None else f"{v:.1f}x"

    for x in r["rows"]:
        g = f"{x['encoder_gmacs']:.2f}" if x.get("encoder_gmacs") is not None else "(as source)"
        lat = x["latency_ms"]
        first = f" {ms(x.get('first_click_ms'))} | {ms(x.get('next_click_ms'))} |" if clicks else ""
        first_ratio = (f" {ratio(x.get('first_click_speedup_vs_first'))} | "
                       f"{ratio(x.get('next_click_speedup_vs_first'))} |") if clicks else ""
        name = x["model"] + (f" (zoom x{x['zoom']:g})" if x.get("zoom") else "")
        lines.append(
            f"| {name} | {x['backend']} | {x['n']} | {x['dice']:.4f} | {x['iou']:.4f} | {x['hd95']:.2f} | "
            f"{x.get('coco_mask_ap', {}).get('map', float('nan')):.4f} | "
            f"{x['params_total'] / 1e6:.2f} | {g} | {ms(lat['preprocess_plus_encoder'])} | "
            f"{ms(lat['decoder_plus_postprocess'])} | {lat['end_to_end']:.1f} |{first} {x['throughput_img_s_batch16']:.2f} | "
            f"{x['peak_memory_mb_batch16'] if x.get('peak_memory_mb_batch16') is not None else float('nan'):.0f} | "
            f"{x['speedup_end_to_end_vs_first']:.1f}x |{first_ratio} {x['throughput_ratio_vs_first']:.1f}x |"
        )
    m = r["machine"]
    warmup = f"{r.get('warmup', WARMUP)} warm-up runs" if clicks else "one warm-up"
    click_note = ("First click: read the image file + preprocess + encoder + decoder (tight box) + postprocess to the "
                  "original size; next click: decoder + postprocess for a new box (tight box jittered by up to "
                  f"{r.get('jitter_px', JITTER_PX)} px) on the cached embedding (– for a prompt-free model). ") if clicks else ""
    zoom_note = ("Zoomed rows (zoom xM): the box's crop (M x its longer side) is encoded in the first predict, so "
                 "their enc/dec split is not measured (–); first click and end to end hold it. "
                 if any(x.get("zoom") for x in r["rows"]) else "")
    order = zoom_note + "Models interleaved: each image through every model in turn, the first one rotating. " if r.get(
        "timing") else ""
    lines.append(f"\nMachine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}; run took {r['seconds'] / 60:.1f} min. "
                 f"Latency: median over the images after {warmup}, batch 1. {order}{click_note}Peak memory: extra "
                 "resident memory during the batch-16 pass (RSS high-water mark reset first).")
    return "\n".join(lines) + "\n"
