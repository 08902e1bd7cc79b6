"""The ``samdistill`` command. Thin: every verb calls the Python API and prints what it returns.

Exit codes: 0 success, 2 user error (bad path, bad config, bad data) with a one-line message and
no traceback (``--debug`` shows it), 1 for anything else (a bug: please report it).
"""

from __future__ import annotations

import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from samdistill.errors import UserError

app = typer.Typer(
    name="samdistill",
    help="Distill SAM-family teachers into small, fast medical segmentation models; measure and ship them.\n\n"
    "Example: samdistill eval --model litemedsam --data ../shared/data/kvasir_seg --split test --limit 40 --out runs/eval",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
_state = {"debug": False}


class OnErrorChoice(str, Enum):
    raise_ = "raise"
    skip = "skip"


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.")) -> None:
    _state["debug"] = debug


@app.command("list")
def list_cmd(
    show_all: bool = typer.Option(False, "--all", help="Also show the tiny test_* models (random weights, for tests)."),
) -> None:
    """List registered models (teachers, students), datasets and distillation methods.

    Example: samdistill list

    Example (with the tiny test_* models): samdistill list --all
    """
    from samdistill.data.datasets import DATASETS
    from samdistill.methods import METHODS
    from samdistill.models.zoo import populate

    models = populate()
    # test_* models are random-weight miniatures for the test suite; a user choosing a model should not see them.
    hidden = set() if show_all else {e.name for e in models if e.name.startswith("test_")}
    typer.echo("models:")
    for e in models:
        if e.name in hidden:
            continue
        size = e.meta.get("input_size")
        size = f"{size:>5}px" if isinstance(size, int) else "teacher's frame"
        typer.echo(f"  {e.name:<28} {e.meta.get('kind', ''):<8} {size:<16} weights: {e.meta.get('weights', '')}")
    if hidden:
        typer.echo(f"  ({len(hidden)} test_* models for tests hidden: samdistill list --all)")
    typer.echo("datasets:")
    for e in DATASETS:
        typer.echo(f"  {e.name:<14} {e.meta.get('summary', '')}")
    typer.echo("methods (samdistill distill --method NAME):")
    for e in METHODS:
        typer.echo(f"  {e.name:<14} {e.summary}")


@app.command()
def info(
    model: str = typer.Argument(..., help="Model name (see `samdistill list`) or a samdistill checkpoint file."),
    checkpoint: Optional[Path] = typer.Option(None, help="Official weights file for sam_*/medsam/mobilesam."),
    random_init: bool = typer.Option(False, "--random-init", help="Build without weights (architecture figures only)."),
    latency: bool = typer.Option(False, help="Also time encoder and decoder (3 warm-up, median of --repeats)."),
    repeats: int = typer.Option(20, min=1, help="Timed runs for --latency."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads for --latency (default: torch's)."),
    teacher: str = typer.Option("litemedsam", help="For a student name: the teacher whose frame and heads it takes."),
) -> None:
    """Parameters (encoder/decoder/total), MACs and input size of a model.

    Example: samdistill info litemedsam --latency --threads 2

    Example (an untrained student architecture on the default teacher): samdistill info efficientvit_b0
    """
    import torch

    from samdistill.api import load_model
    from samdistill.eval.efficiency import model_macs, promptable_macs, time_ms
    from samdistill.machine import num_threads
    from samdistill.models.zoo import MODELS, populate

    populate()
    if model in MODELS and MODELS.entry(model).meta.get("kind") == "student":
        if model == "nas":
            raise UserError("info for a searched student: give its checkpoint (runs/x/student.pt)")
        m = load_model(model, teacher=load_model(teacher))
    else:
        m = load_model(model, checkpoint=checkpoint, pretrained=False if random_init else None)
    pc = m.parameter_counts()
    if getattr(m, "kind", None) == "promptfree":
        macs = model_macs(m)
        typer.echo(f"model          {model} (family {m.family}, prompt-free)")
        typer.echo(f"input size     {m.input_size} px")
        typer.echo("params         " + ", ".join(f"{k} {v / 1e6:.3f} M" for k, v in pc.items() if v))
        typer.echo(f"MACs           {macs['total_gmacs']:.2f} G per image")
        if latency:
            x = torch.zeros(1, 3, m.input_size, m.input_size)
            with num_threads(threads) as t, torch.no_grad():
                fwd = time_ms(lambda: m(x), repeats=repeats)
            typer.echo(f"latency        {fwd['median']:.1f} ms (median of {repeats}, batch 1, {t} threads, cpu)")
        return
    macs = promptable_macs(m)
    typer.echo(f"model          {model} (family {m.family})")
    typer.echo(f"input size     {m.input_size} px, embedding {m.embedding_grid}x{m.embedding_grid}x{m.embedding_channels}")
    typer.echo(f"preprocess     {m.preprocess.to_dict()}")
    typer.echo(f"params         encoder {pc['encoder'] / 1e6:.2f} M, decoder {pc['decoder'] / 1e6:.2f} M, "
               f"total {pc['total'] / 1e6:.2f} M")
    typer.echo(f"MACs           encoder {macs['encoder_gmacs']:.2f} G, decoder {macs['decoder_gmacs']:.3f} G per prompt")
    if latency:
        s = m.input_size
        x = torch.zeros(1, 3, s, s)
        box = torch.tensor([[s * 0.25, s * 0.25, s * 0.75, s * 0.75]])
        with num_threads(threads) as t:
            emb = m.encode(x)
            enc = time_ms(lambda: m.encode(x), repeats=repeats)
            dec = time_ms(lambda: m.decode(emb, boxes=box), repeats=repeats)
        typer.echo(f"latency        encoder {enc['median']:.1f} ms, decoder {dec['median']:.1f} ms "
                   f"(median of {repeats}, batch 1, {t} threads, cpu)")


@app.command("eval")
def eval_cmd(
    model: str = typer.Option("litemedsam", "--model", "-m", help="Model name or samdistill checkpoint."),
    data: str = typer.Option(..., "--data", "-d", help="Dataset folder, registered name, or `synthetic[:n=..]`."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (per_image.csv, summary.json)."),
    split: str = typer.Option("test", help="train | val | test | all."),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N images of the split."),
    checkpoint: Optional[Path] = typer.Option(None, help="Official weights file for sam_*/medsam/mobilesam."),
    layout: Optional[str] = typer.Option(None, help="Dataset layout when auto-detection is not enough."),
    prompt: str = typer.Option("box", help="box (tight) | components (box per component) | point | clicks:K "
                               "(tight box, then up to K corrective clicks; clicks:K:point starts from one point)."),
    box_jitter: float = typer.Option(0.0, min=0.0, help="Move each box side out by uniform 0..S px (seeded)."),
    seed: int = typer.Option(0, help="Seed for prompt jitter and for the split when there is no split.json."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads (stated in the summary)."),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N | mps (checked before any work starts)."),
    on_error: OnErrorChoice = typer.Option(OnErrorChoice.raise_, help="raise: stop at a bad file; skip: count it."),
    mask_threshold: Optional[int] = typer.Option(None, min=1, max=255, help="Declare masks noisy; foreground >= T."),
    labels: Optional[str] = typer.Option(None, help="Masks are label maps: foreground = pixels with these values, "
                                         "e.g. 1,2 or 2 (0 and any other value are background; not with --mask-threshold)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    coco_map: bool = typer.Option(False, "--map", help="Also COCO mask mAP@[.5:.95] (pycocotools)."),
    zoom: Optional[float] = typer.Option(None, min=0.0, help="Score each image on the square crop of ZOOM x the "
                                         "longer side of its box (as predict --zoom; 0: the whole image); default: "
                                         "the zoom the model was distilled with (data.zoom), else the whole image."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty --out as a whole, once the new "
                               "evaluation is complete (never a folder holding the model or the data)."),
) -> None:
    """Evaluate a model (promptable: simulated prompts; prompt-free: none); Dice, IoU, NSD, HD95, MACs, latency.

    Limit: an image or mask over 67 MP (8192x8192) is a bad file, refused from its header before decoding;
    SAMDISTILL_MAX_PIXELS=N changes it.

    Example: samdistill eval --model litemedsam --data ../shared/data/kvasir_seg --split test --limit 40 --out runs/eval

    Example (label-map masks {0, 1, 2}, class 2 is the foreground): samdistill eval --data scans/ --labels 2 --out runs/eval2
    """
    from samdistill.api import evaluate_model
    from samdistill.data.datasets import parse_labels

    summary = evaluate_model(
        model, data, out_dir=out, split=split, limit=limit, checkpoint=checkpoint, layout=layout,
        prompt=prompt, box_jitter=box_jitter, seed=seed, threads=threads, device=device,
        on_error=on_error.value, mask_threshold=mask_threshold, labels=parse_labels(labels) if labels else None,
        progress=progress, coco_map=coco_map, zoom="auto" if zoom is None else zoom, force=force,
    )
    _print_summary(summary, out)


def _stopped(summary: dict, out: Path) -> None:
    """A run stopped by SIGTERM or Ctrl-C after writing its checkpoint: say how to go on; exit 143 / 130."""
    typer.echo(f"stopped by {summary['reason']} after {summary['step']} steps; a checkpoint is in "
               f"{out / 'checkpoints'}. Continue with the same command plus --resume.", err=True)
    raise typer.Exit(130 if summary["reason"] == "SIGINT" else 143)


@app.command()
def distill(
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. stage1.epochs=3."),
    method: Optional[str] = typer.Option(None, help="Distillation method: kdsam (promptable student) | knowsam (prompt-free, semi-supervised) | meanteacher (prompt-free UNet, Mean Teacher; meanteacher.skd=true adds SAM KD). Default: the --recipe's method, else kdsam."),
    recipe: Optional[str] = typer.Option(None, help="Recipe: a YAML file, or a shipped recipe's name (kdsam, knowsam, meanteacher, nas; default: the --method's)."),
    teacher: Optional[str] = typer.Option(None, help="Teacher model name (default from the recipe: litemedsam)."),
    teacher_checkpoint: Optional[Path] = typer.Option(None, help="Official weights for sam_*/medsam/mobilesam."),
    student: Optional[str] = typer.Option(None, help="Student family (see `samdistill list`); default: the recipe's (kdsam: efficientvit_b1)."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Dataset folder, name, or synthetic[:n=..]."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory."),
    labeled: Optional[float] = typer.Option(None, help="knowsam / meanteacher: labeled train images, a fraction <= 1 (0.1) or a count > 1 (145)."),
    unlabeled: Optional[str] = typer.Option(None, help="knowsam / meanteacher: a folder of images without masks "
                                             "(any depth), trained on as unlabeled images; --labeled then defaults to 1 "
                                             "(every train image of --data keeps its mask)."),
    labels: Optional[str] = typer.Option(None, help="Masks are label maps: foreground = pixels with these values, "
                                         "e.g. 1,2 (sets data.labels; 0 and other values are background)."),
    on_error: Optional[OnErrorChoice] = typer.Option(None, help="raise (the recipe's default): stop at a bad file; skip: "
                                                     "leave it out, counted in summary.json (sets data.on_error)."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last checkpoint."),
    stage: Optional[int] = typer.Option(None, min=1, max=2, help="Run only stage 1 or stage 2 (default: both)."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads."),
    device: Optional[str] = typer.Option(None, help="cpu | cuda | cuda:N | mps (default: the recipe's, cpu)."),
) -> None:
    """Distill a teacher into a small student.

    kdsam: promptable student (encoder stage, then decoder stage). knowsam: prompt-free UNet + VNet student
    trained semi-supervised with a few labels and SAM's predictions on the rest. meanteacher: the standard
    semi-supervised rival on KnowSAM's UNet (meanteacher.skd=true adds KnowSAM's SAM-induced KD).

    Limit: an image or mask over 67 MP (8192x8192) is a bad file, refused from its header before decoding;
    SAMDISTILL_MAX_PIXELS=N changes it.

    Example: samdistill distill --data ../shared/data/kvasir_seg --out runs/kd   (kdsam, the recipe's whole student)

    Example (KnowSAM as measured on a CPU, benchmarks/results/knowsam_kvasir_seg.md): samdistill distill --method knowsam --labeled 0.1 --data ../shared/data/kvasir_seg --out runs/ks knowsam.max_steps=4000 knowsam.input_size=128 knowsam.sam_decode=foreground knowsam.kd_rampup=0.4

    Example (your masks plus your images without masks; every mask is kept): samdistill distill --method knowsam --data my_labeled --unlabeled my_unlabeled_images --out runs/ks knowsam.max_steps=4000 knowsam.input_size=128 knowsam.sam_decode=foreground knowsam.kd_rampup=0.4
    """
    from samdistill.api import distill as run_distill
    from samdistill.config import load_config, merge, parse_overrides, read_recipe, set_dotted
    from samdistill.data.datasets import parse_labels
    from samdistill.methods import METHODS

    if method is None:  # a recipe of another method is run as that method
        method = str(read_recipe(recipe).get("method", "kdsam")) if recipe else "kdsam"
    cli: dict = {}
    by_method = METHODS.entry(method).meta["cli_keys"]  # the options whose config key the method decides
    if unlabeled is not None and not unlabeled.strip():
        raise UserError("--unlabeled is empty; give the folder of images without masks")
    if unlabeled is not None and labeled is None and "labeled" in by_method:
        labeled = 1.0  # the user's own unlabeled images: keep every mask they have
    for option, val in (("student", student), ("labeled", labeled), ("unlabeled", unlabeled)):
        if val is not None and option not in by_method:
            takes = [e.name for e in METHODS if option in e.meta["cli_keys"]]
            raise UserError(f"--{option} is not an option of method {method} (it is for: {', '.join(takes)})")
    for key, val in (("teacher", teacher), ("teacher_checkpoint", str(teacher_checkpoint) if teacher_checkpoint else None),
                     ("data.path", data), (by_method.get("student"), student),
                     ("threads", threads), ("device", device),
                     ("method", method), ("stages", [stage] if stage is not None else None),
                     (by_method.get("labeled"), labeled), ("data.labels", parse_labels(labels) if labels else None),
                     (by_method.get("unlabeled"), unlabeled), ("data.on_error", on_error.value if on_error else None)):
        if val is not None:
            set_dotted(cli, key, val)  # typed values go in as they are; no YAML round trip of paths
    cfg = load_config(recipe or method, merge(cli, parse_overrides(list(overrides or []))))
    summary = run_distill(cfg, out, resume=resume)
    if summary.get("interrupted"):
        _stopped(summary, out)
    if "rank" in summary:  # a non-zero torchrun rank: rank 0 reports
        return
    b = summary["best"]
    if "n_labeled" in summary:
        folder = summary.get("n_unlabeled_folder")
        typer.echo(f"labels used: {summary['n_labeled']} images labeled, {summary['n_unlabeled']} unlabeled"
                   f"{f' ({folder} from {cfg.data.unlabeled})' if folder else ''} (list in {out / 'labeled.json'})")
    minutes = summary.get("train_seconds_all_calls", summary["train_seconds"]) / 60  # a resumed run: every call
    typer.echo(f"student {summary['student']} distilled from {summary['teacher']} on {summary['dataset']}: best val Dice "
               f"{b['dice']:.4f} ({b['phase']} epoch {b['epoch']}), {minutes:.1f} min training, "
               f"cache {summary['cache']['hits']} hits / {summary['cache']['misses']} computed")
    typer.echo(f"  wrote {summary['student_path']}; evaluate it with: samdistill eval --model {summary['student_path']} "
               f"--data {cfg.data.path} --out {out / 'eval'}")


@app.command()
def cache(
    data: str = typer.Option(..., "--data", "-d", help="Dataset folder, name, or synthetic[:n=..]."),
    teacher: str = typer.Option("litemedsam", help="Teacher model name."),
    teacher_checkpoint: Optional[Path] = typer.Option(None, help="Official weights for sam_*/medsam/mobilesam."),
    split: str = typer.Option("train", help="train | val | test | all."),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N images of the split."),
    flips: bool = typer.Option(False, help="Also cache the teacher embedding of each h-flipped image."),
    cache_dir: Path = typer.Option(Path("runs/.samdistill-cache"), help="Cache folder (shared by runs)."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads."),
    on_error: OnErrorChoice = typer.Option(OnErrorChoice.raise_, help="raise | skip bad files."),
    labels: Optional[str] = typer.Option(None, help="Masks are label maps: foreground = pixels with these values, "
                                         "e.g. 1,2 or 2 (0 and any other value are background)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Compute and store teacher embeddings once (fp16, resumable; `distill` reuses them).

    Limit: an image over 67 MP (8192x8192) is a bad file, refused from its header before decoding;
    SAMDISTILL_MAX_PIXELS=N changes it.

    Example: samdistill cache --data ../shared/data/kvasir_seg --split train --cache-dir runs/.samdistill-cache
    """
    from samdistill.api import build_cache
    from samdistill.data.datasets import parse_labels

    stats = build_cache(data, teacher=teacher, checkpoint=teacher_checkpoint, split=split, limit=limit, flips=flips,
                        cache_dir=cache_dir, threads=threads, on_error=on_error.value,
                        labels=parse_labels(labels) if labels else None, progress=progress)
    typer.echo(f"cache {stats['dir']}: {stats['hits']} already there, {stats['misses']} computed, "
               f"{stats['corrupt']} corrupt entries replaced, {stats['skipped']} bad files skipped, {stats['seconds']:.0f} s")
    for file, reason in stats["skipped_files"]:
        typer.echo(f"  skipped {file}: {reason}")


@app.command()
def export(
    model: str = typer.Argument(..., help="Model name or samdistill checkpoint (e.g. runs/x/student.pt)."),
    out: Path = typer.Option(..., "--out", "-o", help="New (or empty) folder for the graphs, their specs and manifest.json."),
    checkpoint: Optional[Path] = typer.Option(None, help="Official weights file for sam_*/medsam/mobilesam."),
    opset: int = typer.Option(17, min=13, help="ONNX opset."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty --out as a whole (only once the new export is complete and verified)."),
    int8: bool = typer.Option(False, "--int8", help="Quantise to int8 (onnxruntime static QDQ, per-channel weights; the decoder unless --int8-graphs says otherwise); needs --calibrate."),
    calibrate: Optional[str] = typer.Option(None, "--calibrate", help="Dataset whose train-split images calibrate the int8 ranges (path or synthetic:...)."),
    calibrate_n: int = typer.Option(32, "--calibrate-n", min=1, help="Number of train images to calibrate on."),
    int8_graphs: Optional[str] = typer.Option(None, "--int8-graphs", help="Which graphs --int8 quantises: encoder, decoder or encoder,decoder (default: decoder, which kept fp32's Dice on Kvasir-SEG while the int8 encoder lost 0.013; the others stay fp32)."),
) -> None:
    """Export to ONNX, verified with onnxruntime: promptable models as encoder + prompt/decoder graphs,
    prompt-free (KnowSAM) students as one graph (model.onnx). The folder is written whole or not at all,
    with a manifest.json (files, sha256, kind, source) that predict/bench/demo check before loading.

    Example: samdistill export runs/kvasir_r18/student.pt --out runs/kvasir_r18/onnx

    Example (re-export over an earlier export): samdistill export runs/kvasir_r18/student.pt --out runs/kvasir_r18/onnx --force

    Example (int8, its own folder; verified against the fp32 graphs): samdistill export runs/kvasir_r18/student.pt --out runs/kvasir_r18/onnx_int8 --int8 --calibrate ../shared/data/kvasir_seg
    """
    from samdistill.api import export_model
    from samdistill.deploy.onnx import read_export

    r = export_model(model, out, checkpoint=checkpoint, opset=opset, force=force, int8=int8, calibrate=calibrate,
                     calibrate_n=calibrate_n, int8_graphs=int8_graphs)
    diff = "max |int8 - fp32|" if r.get("precision") == "int8" else "max |onnx - torch|"
    for c in r["checks"]:
        extra = f", Dice agreement {c['dice_agreement']:.4f}" if "dice_agreement" in c else ""
        typer.echo(f"  {c['graph']:<8} {c.get('case', ''):<8} shape {c['shape']}: {diff} "
                   f"{c['max_abs_diff']:.2e}{extra}")
    typer.echo(f"wrote {', '.join(read_export(out, check=False).files)} in {out}")  # as the manifest names them


@app.command()
def predict(
    model: str = typer.Argument(..., help="Model name, samdistill checkpoint, or a folder from `samdistill export`."),
    input: Path = typer.Option(..., "--input", "-i", help="An image, a folder of images, a NIfTI volume, or a DICOM series folder."),
    prompts: Optional[Path] = typer.Option(
        None, "--prompts", "-p",
        help="CSV image,x0,y0,x1,y1 (one box per row; UTF-8, a BOM and Windows line endings are fine) or JSON "
        '{"a.png": {"boxes": [[10, 20, 80, 90]], "points": [[40, 50]], "labels": [1]}} (x0, y0, x1, y1; x, y; 1 object, 0 background). Keys are file names or stems; '
        "every input needs one (see --on-error); keys that match no input only warn."),
    box: Optional[str] = typer.Option(None, help="Volumes: x0,y0,x1,y1 on the slice given by --slice."),
    slice_index: Optional[int] = typer.Option(None, "--slice", help="Volumes: index of the slice the box is on."),
    axis: int = typer.Option(2, min=0, max=2, help="Volumes: slicing axis."),
    out: Path = typer.Option(..., "--out", "-o", help="New (or empty) output folder: masks/, overlays/, areas.csv (+ skipped.csv with --on-error skip)."),
    checkpoint: Optional[Path] = typer.Option(None, help="Official weights file for sam_*/medsam/mobilesam."),
    threads: Optional[int] = typer.Option(None, min=1, help="Threads (torch or onnxruntime)."),
    on_error: OnErrorChoice = typer.Option(
        OnErrorChoice.raise_, help="Images: raise: stop at an unreadable image or an image without a prompt, "
        "writing nothing; skip: segment the rest and list them in skipped.csv. A bad prompt value is always an error."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty --out as a whole, once the new output is complete."),
    zoom: Optional[float] = typer.Option(None, min=0.0, help="Segment each box on the square crop of ZOOM x its longer "
                                         "side around it (>= 1; 1.5 helps the kdsam student, chosen on Kvasir-SEG val); 0: the whole "
                                         "image; default: the zoom the model was distilled with (data.zoom), else the whole image."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Segment images with box/point prompts; each image is encoded once, its prompts decoded together.
    A NIfTI volume or a DICOM series folder is segmented slice by slice from one box, propagated from each
    slice's mask (DICOM: x = column, y = row of the slice, as a viewer shows it; --axis 2 = slices).

    Everything is checked before the model runs (prompt values, each box inside its image from the image
    header, one prompt per image, no two inputs with the same stem); --out is written whole or not at all.

    Limits, from the header before decoding: images up to 67 MP (8192x8192; SAMDISTILL_MAX_PIXELS=N), volumes
    up to 268 M voxels (512x512x1024; SAMDISTILL_MAX_VOXELS=N). A DICOM tag that is missing falls back
    (e.g. no PixelSpacing: 1 mm), each fallback printed as a note and kept in volumes.csv.

    Example: samdistill predict runs/x/onnx --input scans/ --prompts boxes.csv --out runs/x/pred

    Example (go on past bad files): samdistill predict runs/x/onnx --input scans/ --prompts boxes.csv --out runs/x/pred --on-error skip

    Example (prompt-free KnowSAM student): samdistill predict runs/ks/student.pt --input scans/ --out runs/ks/pred
    Example: samdistill predict runs/x/student.pt --input ct.nii.gz --box 120,90,200,160 --slice 40 --out runs/x/vol
    """
    from samdistill.data.images import IMAGE_EXTS

    if not input.exists():
        raise UserError(f"input not found: {input}")
    from samdistill.deploy.volumes import is_dicom_series

    if input.name.endswith((".nii", ".nii.gz")) or (input.is_dir() and not any(
            p.suffix.lower() in IMAGE_EXTS for p in input.iterdir()) and is_dicom_series(input)):
        from samdistill.atomic import staged_dir
        from samdistill.deploy.predictor import Predictor, check_prompt
        from samdistill.deploy.volumes import predict_volume
        from samdistill.machine import num_threads

        if box is None or slice_index is None:
            raise UserError("a volume needs --box x0,y0,x1,y1 and --slice N")
        try:
            b = [float(v) for v in box.split(",")]
            assert len(b) == 4
        except (ValueError, AssertionError):
            raise UserError(f"--box must be four numbers x0,y0,x1,y1, got {box!r}") from None
        b = check_prompt({"boxes": [b]}, "--box")["boxes"][0].tolist()  # finite, x1 >= x0, y1 >= y0
        with staged_dir(out, force=force, owned_by="samdistill predict", keep=[input, model, checkpoint],
                        sub="predictions") as tmp:
            with num_threads(threads):
                pred = Predictor.load(model, checkpoint=str(checkpoint) if checkpoint else None, threads=threads,
                                      zoom="auto" if zoom is None else zoom)
                row = predict_volume(pred, input, b, slice_index, tmp, axis=axis, progress=progress, final_dir=out)
        typer.echo(f"{row['volume']}: {row['voxels']} voxels = {row['volume_mm3']:.1f} mm3 over {row['slices']} "
                   f"slices; wrote {row['mask']} and {out / 'volumes.csv'}")
        return
    from samdistill.deploy.predictor import predict_images

    if box is not None or slice_index is not None:  # they would be ignored: images take their prompts from a file
        raise UserError("--box and --slice are for volumes (.nii, .nii.gz, a DICOM folder); for images give "
                        "--prompts FILE (a CSV image,x0,y0,x1,y1 or a JSON file)")
    r = predict_images(model, input, prompts, out, checkpoint=checkpoint, threads=threads, on_error=on_error.value,
                       force=force, progress=progress, zoom="auto" if zoom is None else zoom)
    if r["unused_prompts"]:
        n = len(r["unused_prompts"])
        typer.echo(f"warning: {prompts} has prompts for {n} file(s) not among the inputs: "
                   f"{', '.join(r['unused_prompts'][:10])}{' ...' if n > 10 else ''}", err=True)
    skipped = (f", {len(r['skipped'])} skipped (listed in {out / 'skipped.csv'})" if on_error == OnErrorChoice.skip
               else "")
    typer.echo(f"{len(r['images'])} images segmented with {r['model']} ({r['backend']}){skipped}; wrote "
               f"{out / 'masks'}, {out / 'overlays'} and {out / 'areas.csv'}")


@app.command()
def bench(
    models: list[str] = typer.Argument(..., help="Models: names, checkpoints, or ONNX folders; the first is the reference."),
    data: str = typer.Option(..., "--data", "-d", help="Dataset folder, name, or synthetic[:n=..]."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (bench.json, bench.md, pareto.png)."),
    split: str = typer.Option("test", help="train | val | test | all."),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N images of the split."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch / onnxruntime threads (stated in the table)."),
    labels: Optional[str] = typer.Option(None, help="Masks are label maps: foreground = pixels with these values, "
                                         "e.g. 1,2 or 2 (0 and any other value are background)."),
    zoom: Optional[float] = typer.Option(None, min=0.0, help="Bench every promptable model with the box's crop of "
                                         "ZOOM x its longer side encoded instead of the whole image (see predict --zoom; 0: "
                                         "the whole image; default: each model's own)."),
) -> None:
    """Accuracy, MACs, latency and throughput of several models side by side, timed in one process.

    Limit: an image or mask over 67 MP (8192x8192) is refused from its header before decoding;
    SAMDISTILL_MAX_PIXELS=N changes it.

    Example: samdistill bench litemedsam runs/x/student.pt runs/x/onnx --data ../shared/data/kvasir_seg --out runs/bench
    """
    from samdistill.data.datasets import parse_labels
    from samdistill.eval.bench import run_bench

    run_bench(list(models), data, out_dir=out, split=split, limit=limit, threads=threads,
              labels=parse_labels(labels) if labels else None, zooms=[zoom] * len(models) if zoom is not None else None)
    typer.echo((out / "bench.md").read_text())


@app.command()
def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", "-o", help="Output folder."),
    n: int = typer.Option(40, min=10, help="Number of synthetic images to generate (70/10/20 split)."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads."),
) -> None:
    """Run the main job on the embedded default: distill the bundled LiteMedSAM into a small student
    on generated phantoms, then evaluate teacher and student on the held-out test images.

    Example: samdistill quickstart --out runs/quickstart
    """
    from samdistill.api import quickstart as run_quickstart

    typer.echo(f"quickstart: KD SAM from LiteMedSAM (bundled weights) into efficientvit_b0 on {n} synthetic phantoms")
    result = run_quickstart(out, n=n, threads=threads)
    for role in ("teacher", "student"):
        _print_summary(result[role], out / "eval" / role)
    _quickstart_next(result["files"], out)


def _quickstart_next(files: dict, out: Path) -> None:
    """Where quickstart left the student and its pictures, and the commands to run next on them."""
    import shlex

    q = shlex.quote
    student, onnx = files["student"], str(out / "onnx")
    overlays = files["overlays"]
    typer.echo(f"\nstudent: {student}")
    typer.echo(f"  overlays (ground truth | teacher | student, Dice in the titles): {out / 'overlays'}/ "
               f"({len(overlays)} PNG{'s' if len(overlays) != 1 else ''}{', e.g. ' + overlays[0] if overlays else ''})")
    typer.echo(f"  training curves: {files['curves']}")
    typer.echo(f"  evaluations: {files['eval']['teacher']}, {files['eval']['student']} (per_image.csv, summary.json)")
    typer.echo("next:")
    for what, cmd in (
        ("try it on a box you draw", f"samdistill demo --student {q(student)}"),
        ("evaluate with jittered boxes", f"samdistill eval --model {q(student)} --data {q(files['data'])} "
                                         f"--box-jitter 5 --out {q(str(out / 'eval' / 'student_jitter5'))}"),
        ("export to ONNX (verified)", f"samdistill export {q(student)} --out {q(onnx)}"),
        ("then time teacher, student and ONNX", f"samdistill bench litemedsam {q(student)} {q(onnx)} "
                                                f"--data {q(files['data'])} --out {q(str(out / 'bench'))}"),
        ("distill on your own data", "samdistill distill --data DATA_FOLDER --out runs/mine"),
    ):
        typer.echo(f"  {what + ':':<38} {cmd}")


@app.command()
def demo(
    teacher: Optional[str] = typer.Option("litemedsam", help="Teacher model name (or checkpoint); 'none' for students only."),
    student: Optional[list[str]] = typer.Option(None, "--student", "-s", help="Student checkpoint or ONNX folder; repeat for several. Default: runs/quickstart/student.pt when it exists."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Dataset folder or name whose images can be picked on the page (ground truth shown)."),
    split: str = typer.Option("test", help="Which split of --data to offer."),
    host: str = typer.Option("127.0.0.1", help="Address to serve on (loopback by default)."),
    port: int = typer.Option(7860, min=1, max=65535, help="Port."),
    checkpoint: Optional[Path] = typer.Option(None, help="Official weights file for a sam_*/medsam/mobilesam teacher."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch / onnxruntime threads."),
) -> None:
    """A local web page with the teacher and students side by side: open an image (or a NIfTI volume), draw
    a box or click points, and every model segments it, with its encoder and decoder time and the Dice
    between the models (and against the ground truth for images picked from --data).

    Upload limits (a shared server: lower than the other verbs'), checked on the decoded size from the
    header: images up to 64 MB and 40 MP, volumes up to 512 MB and 134 M voxels (512x512x512);
    SAMDISTILL_MAX_PIXELS=N / SAMDISTILL_MAX_VOXELS=N change the pixel / voxel limits.

    Example: samdistill demo --student runs/quickstart/student.pt --data ../shared/data/kvasir_seg
    """
    from samdistill.demo.server import check_port, make_server
    from samdistill.demo.service import DemoService
    from samdistill.deploy.predictor import Predictor

    students = list(student or [])
    if not students and Path("runs/quickstart/student.pt").is_file():
        students = ["runs/quickstart/student.pt"]
        typer.echo("student: runs/quickstart/student.pt (from `samdistill quickstart`)")
    models: dict[str, str] = {}
    if teacher and teacher.lower() != "none":
        models[teacher] = teacher
    for s in students:
        p = Path(s)
        if not p.exists():
            raise UserError(f"student not found: {p}")
        label = f"{p.parent.name}/{p.name}" if p.is_file() else p.name
        while label in models:
            label += "'"
        models[label] = s
    if not models:
        raise UserError("no models: give --student PATH (or keep the teacher)")
    check_port(host, port)
    dataset = None
    if data is not None:
        from samdistill.data.datasets import open_dataset

        dataset = open_dataset(data, on_error="skip")
    if threads:
        import torch

        torch.set_num_threads(threads)  # for the whole serving process
    predictors = {}
    for label, spec in models.items():
        typer.echo(f"loading {label} ...")
        ckpt = str(checkpoint) if checkpoint and spec == teacher else None
        predictors[label] = Predictor.load(spec, checkpoint=ckpt, threads=threads)
    service = DemoService(predictors, dataset=dataset, split=split)
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: serving on {host}: anyone who can reach this address can use the demo", err=True)
    typer.echo(f"samdistill demo: open http://{'localhost' if host in ('127.0.0.1', '::1') else host}:{port}  "
               "(Ctrl+C to stop)")
    make_server(service, host=host, port=port).run()


nas_app = typer.Typer(help="EfficientMedSAM: search a student encoder (DARTS under a MACs budget), then distill it.\n\n"
                      "Example: samdistill nas search --data ../shared/data/kvasir_seg --out runs/search --macs-budget 1.2"
                      " && samdistill nas train --genotype runs/search/genotype.json --data ../shared/data/kvasir_seg "
                      "--out runs/nas_student",
                      no_args_is_help=True)
app.add_typer(nas_app, name="nas")


@nas_app.command("search")
def nas_search_cmd(
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. nas.search.epochs=6."),
    data: str = typer.Option(..., "--data", "-d", help="Dataset folder, name, manifest, or synthetic[:n=..]."),
    out: Path = typer.Option(..., "--out", "-o", help="Search directory (genotype.json, search.csv, plots/)."),
    teacher: Optional[str] = typer.Option(None, help="Teacher model name (default litemedsam)."),
    teacher_checkpoint: Optional[Path] = typer.Option(None, help="Official weights for sam_*/medsam/mobilesam."),
    macs_budget: Optional[float] = typer.Option(None, help="Encoder budget in GMACs (default: teacher encoder / 30)."),
    beta: Optional[float] = typer.Option(None, help="Weight of E[MACs]/budget in the architecture objective."),
    resume: bool = typer.Option(False, help="Continue the search in --out from its last checkpoint."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads."),
) -> None:
    """Differentiable architecture search of the student encoder; writes a readable genotype.json.

    Checkpoints go to OUT/checkpoints/ at every epoch end (and on SIGTERM); --resume continues from there.

    Example: samdistill nas search --data ../shared/data/kvasir_seg --out runs/search --macs-budget 1.2 nas.search.epochs=4
    """
    from samdistill.config import load_config, merge, parse_overrides, set_dotted
    from samdistill.search import nas_search

    cli: dict = {"method": "nas"}
    for key, val in (("data.path", data), ("teacher", teacher), ("threads", threads),
                     ("teacher_checkpoint", str(teacher_checkpoint) if teacher_checkpoint else None),
                     ("nas.search.macs_budget", macs_budget), ("nas.search.beta", beta)):
        if val is not None:
            set_dotted(cli, key, val)
    cfg = load_config("nas", merge(cli, parse_overrides(list(overrides or []))))
    s = nas_search(cfg, out, resume=resume, progress=cfg.progress)
    if s.get("interrupted"):
        _stopped(s, out)
    if "rank" in s:  # a non-zero torchrun rank
        return
    typer.echo(f"found encoder: {s['encoder_gmacs']:.3f} GMACs (budget {s['budget_gmacs']:.3f}, teacher "
               f"{s['teacher_encoder_gmacs']:.2f}: {s['teacher_over_student_macs']:.1f}x fewer) in {s['seconds'] / 60:.1f} min")
    typer.echo(f"  wrote {s['genotype']}, {out / 'search.csv'}, {out / 'plots' / 'arch_weights.png'}; train it with: "
               f"samdistill nas train --genotype {s['genotype']} --data {data} --out RUN")


@nas_app.command("train")
def nas_train_cmd(
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. nas.train.stage2_epochs=8."),
    genotype: Path = typer.Option(..., "--genotype", "-g", help="genotype.json from `samdistill nas search`."),
    data: str = typer.Option(..., "--data", "-d", help="Dataset folder, name, manifest, or synthetic[:n=..]."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory."),
    teacher: Optional[str] = typer.Option(None, help="Teacher model name (default litemedsam)."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last checkpoint."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads."),
) -> None:
    """Distill the found architecture: mask-logit KD + saliency distillation + Dice/BCE; writes student.pt.

    Example: samdistill nas train --genotype runs/search/genotype.json --data ../shared/data/kvasir_seg --out runs/nas_student
    """
    from samdistill.api import distill as run_distill
    from samdistill.config import load_config, merge, parse_overrides, set_dotted

    cli: dict = {"method": "nas"}
    for key, val in (("data.path", data), ("teacher", teacher), ("threads", threads),
                     ("nas.train.genotype", str(genotype))):
        if val is not None:
            set_dotted(cli, key, val)
    cfg = load_config("nas", merge(cli, parse_overrides(list(overrides or []))))
    summary = run_distill(cfg, out, resume=resume)
    if summary.get("interrupted"):
        _stopped(summary, out)
    if "rank" in summary:
        return
    b = summary["best"]
    typer.echo(f"searched student distilled from {summary['teacher']}: best val Dice {b['dice']:.4f} "
               f"({b['phase']} epoch {b['epoch']}); wrote {summary['student_path']}")


def _print_summary(s: dict, out: Path) -> None:
    zoom = f", zoom x{s['zoom']:g}" if s.get("zoom") else ""
    typer.echo(
        f"{s['model']} on {s['dataset']}/{s['split']} (n={s['n']}, {s['prompt']['description']}{zoom}): "
        f"Dice {s['dice']:.4f}  IoU {s['iou']:.4f}  NSD {s['nsd']:.4f}  HD95 {s['hd95']:.2f} px"
    )
    if "coco_mask_ap" in s:
        c = s["coco_mask_ap"]
        typer.echo(f"  COCO mask mAP@[.5:.95] {c['map']:.4f}  AP50 {c['ap50']:.4f}  AP75 {c['ap75']:.4f}")
    for name, b in s.get("baselines", {}).items():
        typer.echo(f"  baseline {name:<12} Dice {b['dice']:.4f}  IoU {b['iou']:.4f}")
    lat = s["latency"]
    typer.echo(
        f"  latency: encoder {lat['encoder_ms']:.1f} ms, decoder {lat['decoder_ms']:.1f} ms, end to end "
        f"{lat['end_to_end_ms']:.1f} ms ({s['threads']} threads, {s['device']}); "
        + (f"{s['total_gmacs']:.2f} GMACs" if "total_gmacs" in s else f"encoder {s['encoder_gmacs']:.2f} GMACs")
        + f", {s['params']['total'] / 1e6:.2f} M params"
    )
    if s["skipped"]["count"] or s["excluded_empty_gt"]["count"]:
        typer.echo(f"  skipped bad files: {s['skipped']['count']}; excluded (empty ground truth): "
                   f"{s['excluded_empty_gt']['count']}")
    if "interactive" in s:
        it, nc = s["interactive"], s["interactive"]["noc"]
        typer.echo(f"  Dice after the first prompt, then each click: {' '.join(f'{d:.4f}' for d in it['dice_clicks'])}")
        typer.echo(f"  NoC@{nc['threshold'] * 100:g}: " + (f"{nc['mean']:.2f}" if nc["mean"] is not None else "-")
                   + f" over {nc['reached']} images, {nc['never']} never reach it; wrote {out / 'per_image_clicks.csv'}")
    typer.echo(f"  wrote {out / 'per_image.csv'} and {out / 'summary.json'}")


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit code (0 ok, 2 user error)."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        app(args=argv, prog_name="samdistill", standalone_mode=True)
    except SystemExit as exc:
        if isinstance(getattr(exc.__context__, "__cause__", None), KeyboardInterrupt):  # typer's silent Exit(130)
            typer.echo("interrupted (Ctrl-C)", err=True)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except UserError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    return 0


def entry() -> None:  # pragma: no cover - thin wrapper for the console script
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
