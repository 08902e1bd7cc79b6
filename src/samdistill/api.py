"""The public Python API; the CLI calls only what is here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from samdistill.atomic import check_out_dir, check_staged_target
from samdistill.config import DistillConfig, load_config
from samdistill.data.datasets import list_datasets, open_dataset
from samdistill.devices import check_device
from samdistill.eval.evaluate import PromptProtocol, evaluate
from samdistill.models.zoo import list_models, load_model, save_model

__all__ = ["export_model", "build_cache", "distill", "quickstart", "evaluate_model", "list_datasets", "list_models", "load_model", "open_dataset", "save_model"]


def evaluate_model(
    model: str | os.PathLike,
    data: str | os.PathLike,
    *,
    out_dir: str | os.PathLike,
    split: str = "test",
    limit: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    layout: str | None = None,
    prompt: str = "box",
    box_jitter: float = 0.0,
    seed: int = 0,
    threads: int | None = None,
    device: str = "cpu",
    on_error: str = "raise",
    mask_threshold: int | None = None,
    labels: list[int] | None = None,
    progress: bool = True,
    coco_map: bool = False,
    zoom: float | None | str = "auto",
    force: bool = False,
) -> dict[str, Any]:
    """Load ``model``, open ``data``, evaluate (box/point prompts, or none for prompt-free students); returns
    the summary dict. ``coco_map``: add COCO mask mAP@[.5:.95]. ``labels``: masks are label maps, foreground =
    these values. ``out_dir`` that is a file, lies under one or is not writable: ``UserError`` before any work.
    ``prompt`` ``clicks:K`` / ``clicks:K:point``: also the interactive protocol (``summary["interactive"]``).
    ``zoom``: ``"auto"`` the margin a student distilled on crops records (``data.zoom``), ``None``/0 whole images,
    M >= 1 each box's crop of M x its longer side (as ``predict --zoom``)."""
    from samdistill.deploy.predictor import check_zoom
    from samdistill.errors import UserError
    from samdistill.eval.interactive import parse_click_prompt

    # before the data and the model are opened: out_dir writable, and empty unless force (then replaced whole)
    # (never a folder holding the model, its checkpoint or the data)
    check_staged_target(out_dir, force=force, owned_by="samdistill eval", keep=[model, checkpoint, data], sub="eval")
    check_device(device)
    if zoom != "auto":  # a bad margin fails before the data and the model are opened
        check_zoom(zoom, prompt_free=False, name=str(model))
    click = parse_click_prompt(prompt)  # clicks:K[:point] -> (first, K); None for box/components/point
    kind, clicks = click if click else (prompt, 0)
    if kind not in ("box", "components", "point"):
        raise UserError(f"--prompt {prompt!r}: use box, components, point, clicks:K or clicks:K:point")
    if clicks and box_jitter:
        raise UserError("--prompt clicks:K starts from the tight box: drop --box-jitter")
    ds = open_dataset(data, layout=layout, on_error=on_error, mask_threshold=mask_threshold, labels=labels, seed=seed)
    m = load_model(model, checkpoint=checkpoint, device=device)
    name = Path(str(model)).stem if Path(str(model)).is_file() else str(model)
    return evaluate(
        m, ds, out_dir=out_dir, model_name=name, split=split, limit=limit,
        protocol=PromptProtocol(kind=kind, jitter=box_jitter, seed=seed),  # type: ignore[arg-type]
        threads=threads, device=device, progress=progress, coco_map=coco_map, clicks=clicks, zoom=zoom, force=force,
    )


def distill(cfg: DistillConfig, out_dir: str | os.PathLike, *, resume: bool | Literal["auto"] = False) -> dict[str, Any]:
    """Run a distillation recipe into ``out_dir`` (see :mod:`samdistill.distill`). ``resume``: False = a fresh
    run (refused where a run is), True = continue the run there, ``"auto"`` = read a run that finished with this
    config, else continue the one there, else start fresh."""
    from samdistill.distill import distill as _distill

    return _distill(cfg, out_dir, resume=resume)


def build_cache(
    data: str | os.PathLike,
    *,
    teacher: str = "litemedsam",
    checkpoint: str | os.PathLike | None = None,
    split: str = "train",
    limit: int | None = None,
    flips: bool = False,
    cache_dir: str | os.PathLike = "runs/.samdistill-cache",
    threads: int | None = None,
    on_error: str = "raise",
    labels: list[int] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fill the teacher-embedding cache for one split; returns hit/miss/corrupt counts. ``labels``: masks are
    label maps (see :func:`open_dataset`)."""
    from samdistill.data.cache import EmbeddingCache
    from samdistill.machine import num_threads

    check_out_dir(cache_dir, "--cache-dir")
    with num_threads(threads):
        ds = open_dataset(data, on_error=on_error, labels=labels)
        t = load_model(teacher, checkpoint=checkpoint)
        cache = EmbeddingCache(cache_dir, t)
        cache.build(ds, ds.ids(split, limit), flips=flips, progress=progress)
    return {**cache.stats.as_dict(), "dir": str(cache.dir)}


def quickstart(out_dir: str | os.PathLike, *, n: int = 40, threads: int | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Distill LiteMedSAM into a small student on ``n`` phantoms; evaluate both on the test split. Returns
    the run summary (``distill``), both evaluations and ``files``: where student.pt, the curves and overlays are."""
    out = check_out_dir(out_dir)
    data = f"synthetic:n={n},size=256,seed=0"
    cfg = load_config("kdsam", {
        "data": {"path": data}, "student": {"name": "efficientvit_b0"}, "threads": threads, "progress": progress,
        "cache": {"dir": str(out / "cache")}, "overlays": 2,
        "stage1": {"epochs": 4, "perceptual": 0.0, "batch_size": 4, "optim": {"lr": 0.002, "warmup_steps": 5}},
        "stage2": {"epochs": 4, "batch_size": 4, "kd": 0.5, "optim": {"lr": 0.001, "warmup_steps": 5}},
    })
    run = distill(cfg, out, resume=(out / "checkpoints" / "last.pt").exists())
    res = {"distill": run}
    for role, model in (("teacher", "litemedsam"), ("student", str(out / "student.pt"))):
        res[role] = evaluate_model(model, data, out_dir=out / "eval" / role, split="test", force=True, threads=threads,
                                   progress=progress)
        res[role]["model"] = role if role == "teacher" else f"student ({cfg.student.name})"
    # what the run left where, for the closing message (and callers that open the pictures)
    res["files"] = {"student": str(out / "student.pt"), "curves": str(out / "plots" / "curves.png"),
                    "overlays": [str(p) for p in sorted((out / "overlays").glob("*.png"))],
                    "eval": {role: str(out / "eval" / role) for role in ("teacher", "student")}, "data": data}
    return res


def export_model(
    model: str | os.PathLike, out_dir: str | os.PathLike, *, checkpoint: str | os.PathLike | None = None,
    opset: int = 17, force: bool = False, int8: bool = False, calibrate: str | os.PathLike | None = None,
    calibrate_n: int = 32, int8_graphs: str | None = None,
) -> dict[str, Any]:
    """Export a model to ONNX and verify it against PyTorch (see :mod:`samdistill.deploy.onnx`):
    promptable models as encoder + decoder graphs, prompt-free students as one graph, with a
    ``manifest.json`` naming them. ``out_dir`` is written whole or not at all; a non-empty one is refused
    unless ``force``, which replaces it as a whole. ``int8``: quantise the promptable graphs, calibrated on
    the first ``calibrate_n`` train images of ``calibrate`` (see :mod:`samdistill.deploy.quantize`); the
    report is then int8 vs fp32. ``int8_graphs``: which graphs are quantised (``encoder``, ``decoder`` or both,
    comma-separated; default the decoder alone, see
    :data:`samdistill.deploy.quantize.DEFAULT_GRAPHS`); the others stay fp32 in the int8 folder. Returns the verification report."""
    from samdistill.deploy.onnx import export_onnx
    from samdistill.errors import UserError

    if int8 and calibrate is None:
        raise UserError("--int8 needs --calibrate DATA (train-split images to calibrate the int8 ranges on)")
    if calibrate is not None and not int8:
        raise UserError("--calibrate is for --int8 exports; add --int8 or drop --calibrate")
    if int8_graphs is not None and not int8:
        raise UserError("--int8-graphs is for --int8 exports; add --int8 or drop --int8-graphs")
    # before loading, the checks staged_dir makes again when it writes: --out writable, empty unless --force, and
    # never the folder holding the model being exported (or its weights)
    check_staged_target(out_dir, force=force, owned_by="samdistill export", keep=[model, checkpoint], sub="onnx")
    m = load_model(model, checkpoint=checkpoint)
    finish = None
    if int8:
        from samdistill.deploy.quantize import int8_step

        finish = int8_step(m, str(calibrate), n=calibrate_n, graphs=int8_graphs)
    return export_onnx(m, out_dir, opset=opset, force=force, source=str(model), finish=finish)
