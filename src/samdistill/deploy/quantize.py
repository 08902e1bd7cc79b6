"""int8 export (``samdistill export MODEL --out DIR --int8 --calibrate DATA [--int8-graphs ...]``): onnxruntime
static quantisation of a promptable student's decoder graph (by default, :data:`DEFAULT_GRAPHS`) and, when
asked, its encoder graph, QDQ format, per-channel int8 weights, uint8 activations (U8S8, onnxruntime's choice
for x86), MinMax ranges calibrated on the train split of ``DATA``. A graph not quantised is the fp32 export's
own, byte for byte.

The export writes the fp32 graphs as usual (verified against PyTorch), then quantises them in the staged
folder: the encoder is calibrated on the first ``n`` train images with a non-empty mask, preprocessed by
the model's own ``Preprocess``; the decoder on the fp32 encoder's embeddings of the same images with the
tight box of each ground-truth mask mapped to the input frame (labels 2, 3, the decoder graph's layout).
The int8 graphs replace ``encoder.onnx`` / ``decoder.onnx`` under the same names, so an int8 export is a
folder of its own; ``manifest.json`` records ``"precision": "int8"``, what was quantised, what was kept
in fp32 and why, and the calibration set. ``verification.json`` holds the fp32 report (onnxruntime vs
PyTorch) under ``"fp32"`` and, as its top-level figures, int8 vs the fp32 graphs on images the
calibration did not see (the val split, else train images after the calibration ones): max |diff| of the
embeddings and the low-res logits, Dice agreement of the masks (logits > 0).

What is quantised ("only what gets faster and stays accurate"), measured on this machine's CPU (AMD EPYC,
AVX-512 VNNI, 2 cores shared with other jobs, so absolute figures are noisy; each pair was timed back to
back), onnxruntime 1.32, 2 threads, ``mobilenetv4_conv_small`` on the ``litemedsam`` teacher (random encoder,
the teacher's decoder; 256 px input, 64x64 grid, one box), median ms of 30 runs after 3 warm-ups:

- encoder, Conv + Relu + Add: fp32 92.8 -> int8 40.1 ms (Conv alone 99.6 -> 57.7: residual Adds left in
  fp32 put a DequantizeLinear/QuantizeLinear pair around every block). The neck's LayerNorm, GELU (Erf)
  and Resize stay fp32: a handful of memory-bound ops where QDQ would only add work and error.
  Without ``quant_pre_process`` first, only 8 of 51 Convs fused into QLinearConv (torch.onnx routes shared
  weights through Identity nodes) and int8 was *slower* (113 -> 168 ms); it is always run.
- decoder, MatMul + Gemm: fp32 240 -> int8 159 ms (on a random image: mask agreement with fp32 1.0, max |logit
  diff| 3.2). Every op (Conv, ConvTranspose, Add too) was slower (285 -> 304 ms) and its
  logits further off (5.2); Conv + ConvTranspose + Add added to MatMul/Gemm: 325 -> 285. Keeping the
  attention's activation x activation MatMuls in fp32 brought the logit error to 0.57 but no speed-up
  (228 -> 231 ms), so they are quantised. Kept fp32: LayerNorm, Softmax, GELU, the upscaling
  ConvTranspose, and the MatMuls outside the two-way transformer (:func:`decoder_fp32_nodes`): the
  prompt's and the grid's Fourier positional encodings (coordinates through a random projection: error
  there moves the prompt) and the mask head (hypernetwork tokens x upscaled embedding: the logits
  themselves), all cheap.

Whole folders, same student, ``samdistill bench fp32_dir int8_dir`` on 10 Kvasir-SEG val images, 2 threads
(machine loaded, load average ~8): preprocess + encoder 272 -> 182 ms, decoder + postprocess 492 -> 358 ms,
end to end 719 -> 551 ms, 2.35 -> 3.36 img/s at batch 16. The int8 export calibrated on 32 Kvasir-SEG
train images took 39 s, peak 1.5 GB resident (onnxruntime folds the calibration outputs into the ranges
every few images). Its graphs hold ~1M more stored values than fp32 (the decoder's constant grid
positional encoding, folded by ``quant_pre_process``), which bench's parameter count includes.

Accuracy: the random-init student's masks were empty either way, so it says nothing. A trained one, the
quickstart student (``efficientvit_b0``, 4 + 4 epochs on ``synthetic:n=40,size=256,seed=0``), calibrated on
that data's 32 train images: int8 vs fp32 Dice agreement 0.9996 (decoder alone) / 0.9977 (both graphs) on
the 4 val images; ``bench`` on the 8 test images, 2 threads: Dice 0.9679 fp32 -> 0.9681 int8, HD95 2.87 ->
2.94 px, end to end 377 -> 209 ms (encoder 130 -> 56, decoder 261 -> 173). Not measured then on a
distilled Kvasir-SEG / BUSI / HC18 student; ``benchmarks/int8.py`` has measured one since (Kvasir-SEG val, the default
grid-16 student with its detail path: int8 encoder -0.0134 Dice, int8 decoder +0.0001, hence
:data:`DEFAULT_GRAPHS`). ``verification.json`` reports it per export, and the tests
require Dice agreement >= 0.95 on synthetic images for a tiny student (measured 0.999).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from samdistill.errors import UserError

#: the graphs of a promptable export that ``--int8-graphs`` can name
GRAPHS = ("encoder", "decoder")
#: what ``--int8`` quantises unless told otherwise: the decoder. On the default student (Kvasir-SEG val,
#: benchmarks/results/int8_kvasir_seg.md) the int8 decoder kept fp32's Dice (+0.0001) and cut the next
#: click 5.3 -> 4.6 ms, while the int8 encoder cost 0.013 Dice for no faster first click
#: (``--int8-graphs encoder,decoder`` still quantises both).
DEFAULT_GRAPHS = ("decoder",)
# op types quantised per graph, and the reason for everything else (recorded in the manifest)
QUANTISED_OPS: dict[str, tuple[str, ...]] = {"encoder": ("Conv", "Relu", "Add"), "decoder": ("MatMul", "Gemm")}
KEPT_FP32: dict[str, str] = {
    "encoder": "every other op (the neck's LayerNorm, GELU, Resize, Concat): few and memory-bound, QDQ around "
               "them adds time and error",
    "decoder": "LayerNorm, Softmax, GELU, ConvTranspose, Conv, elementwise ops: quantising every op made the "
               "decoder slower than fp32 and its logits further off; and the MatMuls outside the two-way "
               "transformer (the prompt and grid positional encodings, the mask head; named in "
               "fp32_nodes): cheap, and error there moves the prompt or the logits directly",
}


def decoder_fp32_nodes(path: Path) -> list[str]:
    """The decoder's MatMuls outside the two-way transformer (positional encodings, mask head)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type == "MatMul" and "transformer" not in n.name]


@dataclass(frozen=True)
class CalibrationSet:
    """What the graphs were calibrated on: ``data`` as the user gave it, the split, the images used."""

    data: str
    split: str
    ids: list[str]
    images: np.ndarray          # n x 3 x S x S float32, preprocessed
    boxes: np.ndarray           # n x 4 float32, tight box of each mask in the input frame
    holdout_ids: list[str]      # images for the int8 verification, not used for calibration
    holdout: tuple[np.ndarray, np.ndarray]  # (images, boxes) of those

    requested: int = 32
    zoom: float | None = None   # a student distilled on crops: calibrated and verified on the crops it is used on

    def describe(self) -> dict[str, Any]:
        from samdistill.deploy.onnx import _portable_source  # no absolute folders of this machine

        return {"data": _portable_source(self.data), "split": self.split, "n": len(self.ids),
                "n_requested": self.requested, "ids": self.ids, "verified_on": self.holdout_ids, "zoom": self.zoom}


def _samples(model, ds, ids: Iterable[str], limit: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    from samdistill.data.prompts import tight_box

    got, xs, bs = [], [], []
    for i in ids:
        if len(got) >= limit:
            break
        s = ds.load(i)
        if not np.asarray(s.mask).any():
            continue  # no box prompt for an empty mask
        hw = s.mask.shape[:2]
        xs.append(model.preprocess.image(s.image).numpy())
        bs.append(model.preprocess.boxes_to_input(tight_box(s.mask), hw).astype(np.float32))
        got.append(i)
    s = model.input_size
    return got, (np.stack(xs) if xs else np.zeros((0, 3, s, s), np.float32)), (np.stack(bs) if bs else np.zeros((0, 4), np.float32))


def calibration_set(model, data: str, *, n: int = 32, split: str = "train", verify_n: int = 8) -> CalibrationSet:
    """The first ``n`` images of ``data[split]`` with a non-empty mask, preprocessed for ``model``, and up to
    ``verify_n`` images the calibration does not use (val split, else the rest of ``split``). A student distilled
    on crops (its recorded zoom) is calibrated and verified on each image's crop, as its Predictor encodes it."""
    from samdistill.data.datasets import open_dataset
    from samdistill.deploy.predictor import model_zoom

    if n < 1:
        raise UserError(f"--calibrate-n must be at least 1, got {n}")
    zoom = model_zoom(model, "auto", getattr(model, "name", "model"))
    ds = open_dataset(data)
    ds.zoom = zoom
    train = ds.ids(split)
    ids, images, boxes = _samples(model, ds, train, n)
    if not ids:
        raise UserError(f"--calibrate {data}: its {split} split has no image with a non-empty mask to calibrate on")
    hold_ids, hx, hb = _samples(model, ds, ds.ids("val"), verify_n)
    if not hold_ids:
        hold_ids, hx, hb = _samples(model, ds, [i for i in train if i not in set(ids)], verify_n)
    if not hold_ids:
        raise UserError(f"--calibrate {data}: no image left to verify the int8 graphs on (no val split and every "
                        f"{split} image used for calibration); lower --calibrate-n")
    return CalibrationSet(data=str(data), split=split, ids=ids, images=images, boxes=boxes,
                          holdout_ids=hold_ids, holdout=(hx, hb), requested=n, zoom=zoom)


def _session(path: Path):
    from samdistill.deploy.onnx import _session as session

    return session(path)


class _Feeds:
    """A ``CalibrationDataReader`` over a list of input dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        from onnxruntime.quantization import CalibrationDataReader

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._it = iter(feeds)

            def get_next(self):
                return next(self._it, None)

        self.reader = Reader()


def quantize_graph(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]], *, op_types: Iterable[str],
                   exclude: Iterable[str] = (), activations: str = "uint8") -> None:
    """Static QDQ quantisation of ``src`` into ``dst``: per-channel int8 weights, uint8 activations, MinMax
    ranges over ``feeds``; only nodes of ``op_types``, never the nodes named in ``exclude``."""
    try:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    except ImportError:
        raise UserError("--int8 needs onnxruntime: pip install 'samdistill[deploy]'") from None

    from onnxruntime.quantization.shape_inference import quant_pre_process

    # onnxruntime's basic graph optimisations first (folds the Identity nodes torch.onnx puts before
    # shared weights, which would otherwise be quantised as activations and never fuse into QLinearConv)
    pre = dst.with_name(dst.name + ".pre.onnx")
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    try:
        _quantize(pre, dst, feeds, op_types, exclude, activations)
    finally:
        pre.unlink(missing_ok=True)


def _quantize(src, dst, feeds, op_types, exclude, activations) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(str(src), str(dst), _Feeds(feeds).reader, quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(op_types), nodes_to_exclude=list(exclude), per_channel=True,
                    activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"CalibMaxIntermediateOutputs": _flush_every(len(feeds))})


def _flush_every(n: int, at_least: int = 4) -> int:
    """How many calibration outputs onnxruntime keeps before folding them into the ranges (memory stays
    bounded). Never a divisor of ``n``: onnxruntime 1.32 raises "No data is collected" when the last
    batch leaves nothing unfolded."""
    k = at_least
    while k <= n and n % k == 0:
        k += 1
    return k


def _box_feeds(emb: np.ndarray, boxes: np.ndarray) -> list[dict[str, np.ndarray]]:
    labels = np.array([[2, 3]], np.int64)
    return [{"embeddings": emb[i : i + 1], "point_coords": boxes[i].reshape(1, 2, 2).astype(np.float32),
             "point_labels": labels} for i in range(len(boxes))]


def _encode(sess, images: np.ndarray) -> np.ndarray:
    return np.concatenate([sess.run(None, {"images": images[i : i + 1]})[0] for i in range(len(images))])


def parse_graphs(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"encoder,decoder"`` (or an iterable of names) -> the graphs to quantise, in a fixed order; anything
    else is a one-line ``UserError``."""
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    bad = [n for n in names if n not in GRAPHS]
    if bad or not names:
        raise UserError(f"--int8-graphs takes encoder, decoder or encoder,decoder; got {text!r}")
    return tuple(g for g in GRAPHS if g in names)


def quantize_promptable(folder: Path, calib: CalibrationSet, fp32_report: dict[str, Any],
                        graphs: Iterable[str] = DEFAULT_GRAPHS) -> tuple[dict[str, Any], dict[str, Any]]:
    """Replace ``folder``'s fp32 ``encoder.onnx`` / ``decoder.onnx`` (those named in ``graphs``) by int8 graphs
    calibrated on ``calib``; returns (the verification report, the manifest's extra fields)."""
    from samdistill.deploy.onnx import _agreement

    graphs = parse_graphs(graphs)
    enc32, dec32 = folder / "encoder.onnx", folder / "decoder.onnx"
    # a graph left fp32 is read where it is (its int8 path is the fp32 file): no copy, no second pass over it
    enc8 = folder / ".encoder.int8.onnx" if "encoder" in graphs else enc32
    dec8 = folder / ".decoder.int8.onnx" if "decoder" in graphs else dec32
    e32 = _session(enc32)
    if "encoder" in graphs:
        quantize_graph(enc32, enc8, [{"images": calib.images[i : i + 1]} for i in range(len(calib.ids))],
                       op_types=QUANTISED_OPS["encoder"])
    emb = _encode(e32, calib.images)  # the decoder is calibrated on what the fp32 encoder gives
    keep = decoder_fp32_nodes(dec32)
    if "decoder" in graphs:
        quantize_graph(dec32, dec8, _box_feeds(emb, calib.boxes), op_types=QUANTISED_OPS["decoder"], exclude=keep)

    # int8 vs fp32 on images the calibration did not see: each graph alone, then both together
    hx, hb = calib.holdout
    d32, d8 = _session(dec32), _session(dec8)
    emb32 = _encode(e32, hx)
    emb8 = _encode(_session(enc8), hx) if "encoder" in graphs else emb32
    def case(graph: str) -> str:  # a graph left fp32 is checked too: it must give fp32's own figures
        return "int8" if graph in graphs else "fp32 (kept)"

    checks = [{"graph": "encoder", "case": case("encoder"), "shape": list(hx.shape),
               "max_abs_diff": float(np.abs(emb32 - emb8).max())}]
    ref = np.concatenate([d32.run(None, f)[0] for f in _box_feeds(emb32, hb)])
    for graph, label, e in (("decoder", case("decoder"), emb32), ("enc+dec", "both", emb8)):
        got = np.concatenate([d8.run(None, f)[0] for f in _box_feeds(e, hb)])
        checks.append({"graph": graph, "case": label, "shape": list(got.shape),
                       "max_abs_diff": float(np.abs(ref - got).max()), "dice_agreement": _agreement(ref, got)})
    del e32, d32, d8
    for q, f in ((enc8, enc32), (dec8, dec32)):
        if q != f:
            os.replace(q, f)
    report = {"precision": "int8", "reference": "the fp32 ONNX graphs of this export, on images not used for "
              "calibration (one tight box each)", "images": calib.holdout_ids, "checks": checks,
              "max_abs_diff": max(c["max_abs_diff"] for c in checks if c["graph"] != "encoder"),
              "min_dice_agreement": min(c["dice_agreement"] for c in checks if "dice_agreement" in c),
              "fp32": fp32_report}
    extra = {"precision": "int8",
             "quantization": {"format": "QDQ", "weights": "int8, per channel", "activations": "uint8, per tensor",
                              "graphs": list(graphs),
                              "calibration_method": "MinMax",
                              "quantised_ops": {k: list(v) for k, v in QUANTISED_OPS.items() if k in graphs},
                              "kept_fp32": {**KEPT_FP32, **{g: "the whole graph (--int8-graphs)" for g in GRAPHS
                                                            if g not in graphs}},
                              "fp32_nodes": {"decoder": keep if "decoder" in graphs else "all"},
                              "calibration": calib.describe(), "tool": _ort_version()}}
    return report, extra


def _ort_version() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"


def int8_step(model, data: str, *, n: int = 32, split: str = "train",
              graphs: str | Iterable[str] | None = None) -> Callable[[Path, dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]]:
    """The step ``export_promptable(..., finish=...)`` runs on the staged folder. The calibration images are
    read now, before any graph is written, so a bad ``--calibrate`` or ``graphs`` fails early."""
    if getattr(model, "kind", None) == "promptfree":
        raise UserError("--int8 is for promptable students for now; export this prompt-free model without --int8")
    graphs = parse_graphs(DEFAULT_GRAPHS if graphs is None else graphs)
    calib = calibration_set(model, data, n=n, split=split)
    return lambda folder, report: quantize_promptable(folder, calib, report, graphs)
