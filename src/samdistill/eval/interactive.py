"""The interactive protocol: a first prompt, then corrective clicks from a simulated user; Dice after each.

For one image: encode once (:class:`samdistill.deploy.predictor.Predictor`, so a PyTorch model and an
ONNX export folder are evaluated the same way), decode the first prompt, then up to ``K`` times ask
:func:`samdistill.data.clicks.next_click` for the click that corrects the largest error, add it to the
prompt (first prompt + every click so far, labels 1 positive / 0 negative) and decode again on the
cached embedding. The curve is the Dice (:func:`samdistill.eval.metrics.dice`) after the first prompt
and after each click: ``K + 1`` values; once the prediction equals the ground truth no click is left
to give and the last Dice repeats.

First prompts, both from the ground truth with no random numbers:

- ``"box"``: the tight box (:func:`samdistill.data.prompts.tight_box`), as ``--prompt box`` without jitter;
- ``"point"``: one positive point at the most interior pixel of the ground truth, the same point as
  ``--prompt point`` (:func:`samdistill.data.prompts.interior_point`, border not counted as outside).

So the first value of a curve is the Dice that ``samdistill eval`` reports for that prompt.

Teacher and student face the same simulated user by construction: the first prompt depends only on
the ground truth and each click only on ``(prediction, ground truth)``, so no seed, order or model
state enters; each model gets the clicks that user would give for its own mistakes.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from samdistill.data.clicks import next_click
from samdistill.data.prompts import interior_point, tight_box
from samdistill.errors import UserError
from samdistill.eval.metrics import dice

FirstPrompt = Literal["box", "point"]
NOC_THRESHOLD = 0.90


def parse_click_prompt(text: str) -> tuple[FirstPrompt, int] | None:
    """``--prompt`` text -> ``(first, K)`` for the interactive protocol, ``None`` for any other prompt.

    ``clicks:K`` is a tight box then up to K clicks; ``clicks:K:point`` starts from one point instead.
    A malformed ``clicks...`` value is a ``UserError``.
    """
    if not text.startswith("clicks"):
        return None
    parts = text.split(":")
    hint = "write clicks:K (a tight box, then up to K clicks) or clicks:K:point (one point first), K >= 1"
    if len(parts) not in (2, 3) or parts[0] != "clicks" or not parts[1].isdigit() or int(parts[1]) < 1:
        raise UserError(f"--prompt {text!r}: {hint}")
    first = parts[2] if len(parts) == 3 else "box"
    if first not in ("box", "point"):
        raise UserError(f"--prompt {text!r}: the first prompt is box or point; {hint}")
    return first, int(parts[1])  # type: ignore[return-value]


def write_per_image_clicks(summary: dict[str, Any], path) -> None:
    """``per_image_clicks.csv`` from a :func:`click_summary`: id, noc, dice_0 .. dice_K, clicks as JSON."""
    import csv
    import json

    k = summary["clicks"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "noc", *[f"dice_{i}" for i in range(k + 1)], "clicks"])
        for r in summary["per_image"]:
            w.writerow([r["id"], "" if r["noc"] is None else r["noc"], *r["dice_clicks"], json.dumps(r["clicks"])])


def _predictor(model, zoom: float | None | str = "auto"):
    """``model`` as a Predictor: a PyTorch model is wrapped (``Predictor.from_torch`` with ``zoom``; ``"auto"``:
    the zoom a student distilled on crops records); anything else is taken as a Predictor already (PyTorch or
    ONNX: ``set_image``, ``predict``, ``name``, ``prompt_free``), its own zoom kept."""
    import torch

    from samdistill.deploy.predictor import Predictor

    pred = Predictor.from_torch(model, zoom=zoom) if isinstance(model, torch.nn.Module) else model
    if getattr(pred, "prompt_free", False):
        raise UserError(f"{pred.name} is a prompt-free model: the interactive protocol needs prompts")
    return pred


def click_curve(model, image: np.ndarray, gt: np.ndarray, *, first: FirstPrompt = "box",
                clicks: int = 5) -> list[float]:
    """Dice after the first prompt and after each of up to ``clicks`` corrective clicks (``clicks + 1``
    values) for one ``HxW[x3]`` image and its ``HxW`` boolean ground truth (non-empty: a first prompt
    needs foreground; ``ValueError`` otherwise). ``model``: a Predictor or a promptable model."""
    return run_clicks(_predictor(model), image, gt, first=first, clicks=clicks)[0]


def run_clicks(predictor, image: np.ndarray, gt: np.ndarray, *, first: FirstPrompt, clicks: int,
               encoded: bool = False) -> tuple[list[float], list[tuple[int, int, int]]]:
    """The curve and the clicks given, ``(x, y, label)`` in order, on a Predictor. ``encoded``: the
    predictor holds ``image`` already (its ``set_image`` was called by the caller), so no second encoder
    pass is made."""
    if first not in ("box", "point"):
        raise ValueError(f"first prompt must be 'box' or 'point', got {first!r}")
    if clicks < 0:
        raise ValueError(f"clicks must be >= 0, got {clicks}")
    gt = np.asarray(gt, dtype=bool)
    box = tight_box(gt)[None] if first == "box" else None  # 1x4; ValueError on an empty mask
    points: list[tuple[int, int]] = [] if first == "box" else [interior_point(gt)]
    labels: list[int] = [] if first == "box" else [1]
    if not encoded:
        predictor.set_image(image)  # the only encoder pass of this image

    def decode() -> np.ndarray:
        if not points:
            masks, _ = predictor.predict(boxes=box)
        else:  # one prompt: the box (if any) and all its points, 1 x P x 2
            masks, _ = predictor.predict(boxes=box, points=np.asarray(points, np.float64)[None],
                                         labels=np.asarray(labels, np.int64)[None])
        return masks[0]

    pred = decode()
    curve = [dice(pred, gt)]
    given: list[tuple[int, int, int]] = []
    for _ in range(clicks):
        click = next_click(pred, gt)
        if click is None:  # pred == gt: nothing left to correct
            break
        points.append((click.x, click.y))
        labels.append(int(click.positive))
        given.append((click.x, click.y, int(click.positive)))
        pred = decode()
        curve.append(dice(pred, gt))
    curve += [curve[-1]] * (clicks + 1 - len(curve))
    return curve, given


def noc(curve: list[float], threshold: float = NOC_THRESHOLD) -> int | None:
    """Number of clicks to reach Dice >= ``threshold``: 0 if the first prompt does, ``None`` if never."""
    for i, d in enumerate(curve):
        if d >= threshold:
            return i
    return None


def curve_summary(curves: list[list[float]], threshold: float = NOC_THRESHOLD) -> dict[str, Any]:
    """``{"n", "dice_clicks"`` (mean Dice per click index), ``"noc": {"threshold", "mean"`` (over the curves
    that reach it; ``None`` if none does), ``"reached", "never"}}`` of per-image Dice-vs-clicks curves."""
    nocs = [noc(c, threshold) for c in curves]
    reached = [n for n in nocs if n is not None]
    return {"n": len(curves), "dice_clicks": np.mean(curves, axis=0).tolist(),
            "noc": {"threshold": threshold, "mean": float(np.mean(reached)) if reached else None,
                    "reached": len(reached), "never": len(curves) - len(reached)}}


def click_summary(model, dataset, *, split: str = "test", limit: int | None = None,
                  first: FirstPrompt = "box", clicks: int = 5, threshold: float = NOC_THRESHOLD,
                  progress: bool = False, zoom: float | None | str = "auto") -> dict[str, Any]:
    """:func:`click_curve` over ``dataset.ids(split, limit)`` (a :class:`samdistill.data.datasets.SegDataset`).

    Images with an empty ground truth are excluded and counted (no first prompt can be simulated), as in
    ``samdistill eval``. Returns ``{"protocol", "n", "dice_clicks"`` (mean Dice per click index, ``clicks
    + 1`` values), ``"noc": {"threshold", "mean"`` (over the images that reach it; ``None`` if none
    does), ``"reached", "never"}``, ``"excluded_empty_gt"``, ``"per_image": [{"id", "dice_clicks",
    "noc", "clicks": [[x, y, label], ...]}]}``. ``zoom``: the margin a PyTorch ``model`` is wrapped with
    (:class:`~samdistill.deploy.predictor.Predictor`; ``"auto"``: the model's own, None: whole images).
    """
    from tqdm import tqdm

    predictor = _predictor(model, zoom)
    ids = dataset.ids(split, limit)
    if not ids:
        raise UserError(f"split {split!r} of {dataset.name} is empty")
    rows: list[dict[str, Any]] = []
    excluded: list[str] = []
    bar = tqdm(ids, desc=f"clicks {predictor.name} on {dataset.name}/{split}", unit="img", disable=not progress)
    for sample in dataset.iter_samples(bar):
        if not sample.mask.any():
            excluded.append(sample.id)
            continue
        curve, given = run_clicks(predictor, sample.image, sample.mask, first=first, clicks=clicks)
        rows.append({"id": sample.id, "dice_clicks": curve, "noc": noc(curve, threshold),
                     "clicks": [list(c) for c in given]})
    if not rows:
        raise UserError(f"no image of {dataset.name}/{split} could be evaluated (all skipped or empty)")
    first_text = "tight box" if first == "box" else "one positive point at the most interior pixel"
    return {
        "protocol": (f"{first_text}, then up to {clicks} corrective clicks: a positive one at the most interior "
                     "pixel of the largest false-negative component or a negative one in the largest "
                     "false-positive component (8-connected, image border outside), re-decoded on the cached "
                     "embedding; Dice after each"),
        "first": first,
        "clicks": clicks,
        **curve_summary([r["dice_clicks"] for r in rows], threshold),
        "excluded_empty_gt": {"count": len(excluded), "ids": excluded},
        "per_image": rows,
    }
