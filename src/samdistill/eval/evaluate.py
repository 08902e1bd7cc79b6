"""``samdistill eval``: a model on a dataset split, under a stated prompt protocol.

Promptable models get simulated prompts; prompt-free students (KnowSAM) segment without any, and
then images with an empty ground truth are scored too (empty vs empty = Dice 1).

For every image: simulate the prompt from the ground truth (original frame), preprocess, encode,
decode, bring the logits back to the original resolution, threshold at 0, and score with MONAI.
Writes ``per_image.csv`` and ``summary.json``; the summary also holds the prompt-only baselines
(ellipse inscribed in the box, filled box) under the same prompts, parameters, MACs and latency.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from samdistill._version import __version__
from samdistill.atomic import staged_dir
from samdistill.data.datasets import SegDataset
from samdistill.data.prompts import (
    box_ellipse_mask,
    box_filled_mask,
    component_boxes,
    jitter_box,
    prompt_rng,
    prompts_window,
    sample_points,
    tight_box,
)
from samdistill.deploy.predictor import model_zoom
from samdistill.errors import UserError
from samdistill.eval.coco_map import CocoMaskAP
from samdistill.eval.efficiency import model_macs, sync
from samdistill.eval.metrics import EMPTY_CONVENTION, NSD_TOLERANCE_PX, MetricAccumulator, image_metrics
from samdistill.machine import machine_info, num_threads
from samdistill.models.segmenter import segmenter

PromptKind = Literal["box", "components", "point"]


@dataclass(frozen=True)
class PromptProtocol:
    """How prompts are simulated from the ground truth. ``jitter``: px per side, seeded per image id."""

    kind: PromptKind = "box"
    jitter: float = 0.0
    seed: int = 0

    def describe(self) -> str:
        base = {
            "box": "tight box around all foreground",
            "components": "one tight box per connected component, masks OR-ed",
            "point": "one positive point at the foreground pixel farthest from the boundary",
        }[self.kind]
        if self.kind != "point" and self.jitter > 0:
            base += f", each side moved out by uniform 0..{self.jitter:g} px (seed {self.seed})"
        return base

    def make(self, mask: np.ndarray, sid: str) -> dict[str, np.ndarray]:
        """Prompts in the original frame: ``{"boxes": Nx4}`` or ``{"points": Nx1x2, "labels": Nx1}``."""
        rng = prompt_rng(self.seed, sid)
        hw = mask.shape
        if self.kind == "point":
            pts, labels = sample_points(mask, 1, 0, rng)
            return {"points": pts[None], "labels": labels[None]}
        boxes = component_boxes(mask) if self.kind == "components" else tight_box(mask)[None]
        return {"boxes": np.stack([jitter_box(b, self.jitter, rng, hw) for b in boxes])}


log = logging.getLogger("samdistill.eval")


@torch.no_grad()
def predict_with_timing(model, image: np.ndarray, prompts: dict[str, np.ndarray], device: str,
                        zoom: float | None = None) -> tuple[np.ndarray, dict]:
    """Run one image through ``model`` (either kind, see :mod:`samdistill.models.segmenter`); returns the
    boolean mask (prompts OR-ed) and stage times in ms (a prompt-free model has no decoder: 0 ms).
    ``zoom``: the model sees the crop a zoomed Predictor encodes for these prompts
    (:func:`~samdistill.data.prompts.prompts_window`; points alone: the whole image), its mask pasted back;
    several boxes: each on its own crop, as the Predictor does (stage times summed, scores averaged)."""
    full_hw = image.shape[:2]
    seg = segmenter(model)
    if zoom is not None and "boxes" in prompts and len(prompts["boxes"]) > 1:
        each = [predict_with_timing(model, image, {k: v[i:i + 1] for k, v in prompts.items()}, device, zoom)
                for i in range(len(prompts["boxes"]))]
        times = {k: sum(t[k] for _, t in each) for k in each[0][1] if k != "score"}
        return np.logical_or.reduce([m for m, _ in each]), {**times, "score": float(np.mean([t["score"] for _, t in each]))}
    t0 = time.perf_counter()
    window = None
    if zoom is not None and "boxes" in prompts:
        window = prompts_window(prompts["boxes"], prompts.get("points"), full_hw, zoom)
        x0, y0, x1, y1 = window
        image = np.ascontiguousarray(image[y0:y1, x0:x1])
        shifted = {"boxes": prompts["boxes"] - [x0, y0, x0, y0]}  # prompts in the crop's frame
        if "points" in prompts:
            shifted["points"] = prompts["points"] - [x0, y0]
        prompts = {**prompts, **shifted}
    hw = image.shape[:2]
    x = seg.preprocess.image(image)[None].to(device)
    sync(device)
    t1 = time.perf_counter()
    state = seg.encode(x)
    sync(device)
    t2 = time.perf_counter()
    low, iou_pred = seg.decode(state, prompts, hw)
    sync(device)
    t3 = time.perf_counter()
    full = seg.postprocess(low, hw)
    mask = (full[:, 0] > 0).any(dim=0).cpu().numpy()
    if window is not None:
        pasted = np.zeros(full_hw, dtype=bool)
        pasted[window[1]:window[3], window[0]:window[2]] = mask
        mask = pasted
    t4 = time.perf_counter()
    ms = lambda a, b: (b - a) * 1e3  # noqa: E731
    return mask, {
        "preprocess_ms": ms(t0, t1),
        "encoder_ms": ms(t1, t2),
        "decoder_ms": 0.0 if seg.prompt_free else ms(t2, t3),
        "end_to_end_ms": ms(t0, t4),
        "score": seg.score(full, iou_pred),
    }


def _baseline_masks(prompts: dict[str, np.ndarray], hw: tuple[int, int]) -> dict[str, np.ndarray] | None:
    if "boxes" not in prompts:
        return None
    ell = np.zeros(hw, bool)
    fill = np.zeros(hw, bool)
    for b in prompts["boxes"]:
        ell |= box_ellipse_mask(b, hw)
        fill |= box_filled_mask(b, hw)
    return {"box_ellipse": ell, "box_filled": fill}


def evaluate(
    model,
    dataset: SegDataset,
    *,
    out_dir: str | Path,
    model_name: str,
    split: str = "test",
    limit: int | None = None,
    protocol: PromptProtocol = PromptProtocol(),
    threads: int | None = None,
    device: str = "cpu",
    progress: bool = True,
    coco_map: bool = False,
    clicks: int = 0,
    zoom: float | None | str = "auto",
    force: bool = False,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataset[split][:limit]``; write ``per_image.csv`` + ``summary.json``.
    ``out_dir`` is built whole in a staged sibling and moved into place only when the evaluation is complete
    (a failure leaves it as it was); a non-empty ``out_dir`` is refused unless ``force`` (then replaced as a
    whole, so no file of an earlier evaluation is left beside the new ones).
    ``coco_map``: also COCO mask mAP@[.5:.95] (one instance per image, scored by the model). ``clicks``: also
    the interactive protocol (:mod:`samdistill.eval.interactive`) from ``protocol``'s first prompt (tight box or
    point), up to ``clicks`` corrective clicks: ``summary["interactive"]`` and ``per_image_clicks.csv``.
    ``zoom``: as ``Predictor``'s (``"auto"``: the margin a student distilled on crops records, else none; ``None``
    or 0: whole images; M >= 1: each image's box crop of M x its longer side), for the clicks too."""
    seg = segmenter(model)
    if seg is None:
        raise UserError(f"{model_name} is not a segmentation model samdistill can evaluate")
    prompt_free = seg.prompt_free  # no prompts to simulate, so empty-ground-truth images are scored too
    if clicks and (prompt_free or protocol.kind == "components" or protocol.jitter or device != "cpu"):
        raise UserError("--prompt clicks:K needs a promptable model, a tight box or a point first, and --device cpu "
                        "(the clicks are decoded through the CPU Predictor)")
    zoom = model_zoom(model, zoom, model_name)  # a bad margin, or any on a prompt-free model: before any work
    with staged_dir(out_dir, force=force, owned_by="samdistill eval", keep=[dataset.root], sub="eval") as out:
        return _evaluate_into(out, model, seg, dataset, model_name=model_name, split=split, limit=limit,
                              protocol=protocol, threads=threads, device=device, progress=progress,
                              coco_map=coco_map, clicks=clicks, zoom=zoom)


def _evaluate_into(out: Path, model, seg, dataset: SegDataset, *, model_name: str, split: str, limit: int | None,
                   protocol: PromptProtocol, threads: int | None, device: str, progress: bool, coco_map: bool,
                   clicks: int, zoom: float | None) -> dict[str, Any]:
    """:func:`evaluate`'s work, written into the (staged) folder ``out``."""
    prompt_free = seg.prompt_free
    ids = dataset.ids(split, limit)
    if not ids:
        raise UserError(f"split {split!r} of {dataset.name} is empty")
    if dataset.split_source.startswith("seeded"):
        (out / "split.json").write_text(json.dumps(dataset.split, indent=1))
    model = model.to(device).eval()
    trained_zoom = model_zoom(model, "auto", model_name)  # the model's own (predict and bench use it by default)
    zoom_note = None
    if trained_zoom and zoom != trained_zoom:
        zoom_note = (f"distilled on crops (data.zoom {trained_zoom:g}); scored here with "
                     f"{f'zoom {zoom:g}' if zoom else 'whole images'}: `samdistill bench` and `predict` use its own "
                     "zoom by default")
        log.warning("%s: %s", model_name, zoom_note)
    acc, base_acc = MetricAccumulator(), {"box_ellipse": MetricAccumulator(), "box_filled": MetricAccumulator()}
    coco = CocoMaskAP() if coco_map else None
    timings: list[dict[str, float]] = []
    rows: list[dict[str, Any]] = []
    excluded: list[str] = []
    t_start = time.perf_counter()
    with num_threads(threads) as used_threads:
        warmed = False
        bar = tqdm(ids, desc=f"eval {model_name} on {dataset.name}/{split}", unit="img", disable=not progress)
        for sample in dataset.iter_samples(bar):
            if not sample.mask.any() and not prompt_free:
                excluded.append(sample.id)  # no prompt can be simulated from an empty ground truth
                continue
            prompts = {} if prompt_free else protocol.make(sample.mask, sample.id)
            if not warmed:  # one untimed pass so that lazy initialisation does not land in the median
                predict_with_timing(model, sample.image, prompts, device, zoom)
                warmed = True
            pred, t = predict_with_timing(model, sample.image, prompts, device, zoom)
            m = image_metrics(pred, sample.mask)
            acc.add(m)
            if coco is not None:
                coco.add(sample.mask, pred, t["score"])
            timings.append(t)
            row = {"id": sample.id, **m}
            baselines = _baseline_masks(prompts, sample.mask.shape)
            if baselines:
                for name, bm in baselines.items():
                    bmet = image_metrics(bm, sample.mask, full=False)
                    base_acc[name].add(bmet)
                    row[f"dice_{name}"] = bmet["dice"]
            row.update({"gt_area": int(sample.mask.sum()), "pred_area": int(pred.sum()), **t})
            rows.append(row)
            bar.set_postfix(dice=f"{acc.aggregate()['dice']:.3f}")
    elapsed = time.perf_counter() - t_start
    if not rows:
        raise UserError(f"no image of {dataset.name}/{split} could be evaluated (all skipped or empty)")

    with open(out / "per_image.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)

    means = acc.aggregate()
    med = lambda k: float(np.median([t[k] for t in timings]))  # noqa: E731
    summary: dict[str, Any] = {
        "model": model_name,
        "family": model.family,
        "dataset": dataset.name,
        "data_root": str(dataset.root) if dataset.root else None,
        "split": split,
        "split_source": dataset.split_source,
        **({"labels": list(dataset.labels)} if getattr(dataset, "labels", None) else {}),
        "limit": limit,
        "n": len(rows),
        "dice": means["dice"],
        "iou": means["iou"],
        "nsd": means["nsd"],
        "hd95": means["hd95"],
        "dice_std": float(np.std([r["dice"] for r in rows])),
        **({"coco_mask_ap": coco.compute()} if coco is not None else {}),
        "baselines": {k: v.aggregate() for k, v in base_acc.items() if len(v)},
        "prompt": {"kind": "none", "description": "prompt-free model: no prompt"} if prompt_free
        else {**asdict(protocol), "description": protocol.describe()},
        "zoom": zoom,
        **({"zoom_description": f"the model saw each image's crop of {zoom:g} x the longer side of the box around "
                                f"its prompts (points alone: the whole image), its mask pasted back; timings are "
                                f"the crop's"} if zoom else {}),
        "params": model.parameter_counts(),
        **model_macs(model),
        "latency_ms": med("end_to_end_ms"),
        "latency": {
            "encoder_ms": med("encoder_ms"),
            "decoder_ms": med("decoder_ms"),
            "preprocess_ms": med("preprocess_ms"),
            "end_to_end_ms": med("end_to_end_ms"),
            "how": f"median over the {len(rows)} evaluated images after 1 warm-up, batch 1, "
            f"{used_threads} torch threads, device {device}; end to end = preprocess -> mask at original size",
        },
        "threads": used_threads,
        "device": device,
        "input_size": model.input_size,
        "metrics": {
            "resolution": "original image size; per image, then mean over images",
            "implementation": "Dice: samdistill.eval.metrics.dice (overlap counts, MONAI compute_dice's float32 "
                              "arithmetic); MONAI compute_iou / compute_surface_dice / compute_hausdorff_distance",
            "nsd_tolerance_px": NSD_TOLERANCE_PX,
            "hd95": "95th percentile symmetric Hausdorff distance, px",
            "empty_masks": EMPTY_CONVENTION,
        },
        "excluded_empty_gt": {"count": len(excluded), "ids": excluded, "why": "no prompt can be made from an empty mask"},
        "skipped": {"count": len(dataset.skipped), "files": dataset.skipped},
        "ignored_files": len(dataset.ignored),
        **({"zoom_note": zoom_note} if zoom_note else {}),
        "time_s": elapsed,
        "machine": machine_info(),
        "samdistill": __version__,
    }
    if clicks:  # a second pass: each image encoded once more, then decoded 1 + K times through the Predictor
        from samdistill.eval.interactive import click_summary, write_per_image_clicks

        with num_threads(threads):
            cs = click_summary(model, dataset, split=split, limit=limit, first=protocol.kind, clicks=clicks,
                               progress=progress, zoom=zoom)
        write_per_image_clicks(cs, out / "per_image_clicks.csv")
        summary["interactive"] = {k: v for k, v in cs.items() if k != "per_image"}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
