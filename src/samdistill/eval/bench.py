"""``samdistill bench``: teacher and students (PyTorch or ONNX) on one split, in one process.

For every model, with the same prompts (tight box from the ground truth) and the same pipeline
(:class:`samdistill.Predictor`): Dice / IoU / HD95 at the original resolution, COCO mask mAP@[.5:.95]; parameters and
MACs (PyTorch models); batch-1 latency of the encoder, the decoder and end to end (median over the
images after a warm-up); throughput at batch 16 (encoder on a 16-image batch + 16 decoder calls).
Models are timed back to back in this process, so their ratios are meaningful even on a busy machine.
Writes ``bench.json``, ``bench.md`` and ``pareto.png`` (accuracy vs latency and vs MACs).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from samdistill.atomic import check_out_dir
from samdistill.data.datasets import open_dataset
from samdistill.data.prompts import tight_box
from samdistill.deploy.predictor import Predictor
from samdistill.eval.coco_map import CocoMaskAP
from samdistill.eval.efficiency import model_macs, peak_memory_mb
from samdistill.eval.metrics import MetricAccumulator, image_metrics
from samdistill.machine import machine_info, num_threads
from samdistill.viz.pareto import pareto_plot


def _describe(spec: str) -> tuple[Predictor, dict[str, Any]]:
    p = Path(spec)
    info: dict[str, Any] = {"model": spec}
    if p.is_dir():
        pred = Predictor.load(p)  # checks the folder's manifest and hashes
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


def bench_model(spec: str, dataset, ids: list[str], *, progress: bool = True) -> dict[str, Any]:
    pred, info = _describe(spec)
    acc, coco = MetricAccumulator(), CocoMaskAP()
    enc_t, dec_t, e2e_t = [], [], []
    warmed = False
    for sample in tqdm(dataset.iter_samples(ids), total=len(ids), desc=f"bench {info['model']}", disable=not progress):
        if not sample.mask.any() and not pred.prompt_free:
            continue
        box = tight_box(sample.mask)[None]
        prompt = {} if pred.prompt_free else {"boxes": box}
        if not warmed:
            pred.set_image(sample.image)
            pred.predict(**prompt)
            warmed = True
        t0 = time.perf_counter()
        pred.set_image(sample.image)
        t1 = time.perf_counter()
        masks, iou = pred.predict(**prompt)
        t2 = time.perf_counter()
        acc.add(image_metrics(masks[0], sample.mask))
        coco.add(sample.mask, masks[0], 1.0 if pred.prompt_free else float(iou[0]))
        enc_t.append((t1 - t0) * 1e3)
        dec_t.append((t2 - t1) * 1e3)
        e2e_t.append((t2 - t0) * 1e3)
    means = acc.aggregate()
    # throughput at batch 16: one batched encoder call + 16 decoder calls, best of 3
    s = pred.preprocess.input_size
    x = np.random.default_rng(0).random((16, 3, s, s), dtype=np.float32)
    coords = np.array([[[s * 0.2, s * 0.2], [s * 0.7, s * 0.8]]], np.float32)
    labels = np.array([[2, 3]], np.int64)
    best = float("inf")
    pred._encode(x[:2])

    def batch16() -> None:
        emb = pred._encode(x)
        if not pred.prompt_free:
            for i in range(16):
                pred._decode(emb[i : i + 1], coords, labels)

    peak = peak_memory_mb(batch16)
    for _ in range(3):
        t0 = time.perf_counter()
        batch16()
        best = min(best, time.perf_counter() - t0)
    return {
        **info, "n": len(acc), "dice": means.get("dice"), "iou": means.get("iou"), "hd95": means.get("hd95"),
        "nsd": means.get("nsd"), "coco_mask_ap": coco.compute(),
        "latency_ms": {"preprocess_plus_encoder": float(np.median(enc_t)), "decoder_plus_postprocess": float(np.median(dec_t)),
                       "end_to_end": float(np.median(e2e_t))},
        "throughput_img_s_batch16": 16 / best,
        "peak_memory_mb_batch16": peak,
    }


def run_bench(models: list[str], data: str, *, out_dir: str | Path, split: str = "test", limit: int | None = None,
              threads: int | None = None, labels: list[int] | None = None, progress: bool = True) -> dict[str, Any]:
    """Bench ``models`` on ``data[split][:limit]`` into ``out_dir``; ``labels``: masks are label maps."""
    out = check_out_dir(out_dir)  # before any model is loaded
    out.mkdir(parents=True, exist_ok=True)
    ds = open_dataset(data, labels=labels)
    ids = ds.ids(split, limit)
    t0 = time.perf_counter()
    with num_threads(threads) as used:
        rows = [bench_model(m, ds, ids, progress=progress) for m in models]
    ref = rows[0]
    for r in rows:
        r["speedup_end_to_end_vs_first"] = ref["latency_ms"]["end_to_end"] / r["latency_ms"]["end_to_end"]
        r["throughput_ratio_vs_first"] = r["throughput_img_s_batch16"] / ref["throughput_img_s_batch16"]
    result = {"dataset": ds.name, "split": split, "limit": limit, "prompt": "tight box from the ground truth",
              "threads": used, "device": "cpu", "rows": rows, "seconds": time.perf_counter() - t0,
              "machine": machine_info(),
              "memory": "peak extra resident memory (MiB) during the batch-16 pass: RSS high-water mark reset before it"}
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    (out / "bench.md").write_text(bench_markdown(result))
    pareto_plot(rows, out / "pareto.png", title=f"{ds.name}/{split}", threads=used)
    return result


def bench_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# bench: {r['dataset']}/{r['split']} ({r['prompt']}), {r['threads']} threads, CPU\n",
        "| model | backend | n | Dice | IoU | HD95 px | mAP | params M | enc GMACs | enc ms | dec ms | end-to-end ms | img/s @16 | "
        "peak MiB @16 | speed-up vs first | throughput vs first |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        g = f"{x['encoder_gmacs']:.2f}" if x.get("encoder_gmacs") is not None else "(as source)"
        lat = x["latency_ms"]
        lines.append(
            f"| {x['model']} | {x['backend']} | {x['n']} | {x['dice']:.4f} | {x['iou']:.4f} | {x['hd95']:.2f} | "
            f"{x.get('coco_mask_ap', {}).get('map', float('nan')):.4f} | "
            f"{x['params_total'] / 1e6:.2f} | {g} | {lat['preprocess_plus_encoder']:.1f} | "
            f"{lat['decoder_plus_postprocess']:.1f} | {lat['end_to_end']:.1f} | {x['throughput_img_s_batch16']:.2f} | "
            f"{x['peak_memory_mb_batch16'] if x.get('peak_memory_mb_batch16') is not None else float('nan'):.0f} | "
            f"{x['speedup_end_to_end_vs_first']:.1f}x | {x['throughput_ratio_vs_first']:.1f}x |"
        )
    m = r["machine"]
    lines.append(f"\nMachine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}; run took {r['seconds'] / 60:.1f} min. "
                 "Latency: median over the images after one warm-up, batch 1. Peak memory: extra resident memory during "
                 "the batch-16 pass (RSS high-water mark reset first).")
    return "\n".join(lines) + "\n"
