"""The public Python API; the CLI calls only what is here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from samdistill.data.datasets import list_datasets, open_dataset
from samdistill.eval.evaluate import PromptProtocol, evaluate
from samdistill.models.zoo import list_models, load_model, save_model

__all__ = ["evaluate_model", "list_datasets", "list_models", "load_model", "open_dataset", "save_model"]


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
    progress: bool = True,
) -> dict[str, Any]:
    """Load ``model``, open ``data``, evaluate under box/point prompts; returns the summary dict."""
    ds = open_dataset(data, layout=layout, on_error=on_error, mask_threshold=mask_threshold, seed=seed)
    m = load_model(model, checkpoint=checkpoint, device=device)
    name = Path(str(model)).stem if Path(str(model)).is_file() else str(model)
    return evaluate(
        m, ds, out_dir=out_dir, model_name=name, split=split, limit=limit,
        protocol=PromptProtocol(kind=prompt, jitter=box_jitter, seed=seed),  # type: ignore[arg-type]
        threads=threads, device=device, progress=progress,
    )
