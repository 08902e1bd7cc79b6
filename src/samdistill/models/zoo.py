"""Every model family registers here; ``load_model`` turns a name or a checkpoint file into a model.

A samdistill checkpoint is one file holding
``{"format": "samdistill/1", "family", "config", "state_dict", "preprocess", "provenance"}``.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from samdistill.atomic import atomic_torch_save
from samdistill.errors import CheckpointError, UserError
from samdistill.registry import Registry

CHECKPOINT_FORMAT = "samdistill/1"

#: name -> builder(pretrained: bool = True, checkpoint: str | None = None, **config) -> nn.Module.
#: ``meta``: kind ("teacher" | "student"), input_size, weights (where they come from).
MODELS: Registry[Callable[..., nn.Module]] = Registry("model")

_FAMILY_MODULES = (
    "samdistill.models.teachers.litemedsam",
    "samdistill.models.teachers.sam",
    "samdistill.models.teachers.mobilesam",
    "samdistill.models.teachers.test_sam",
    "samdistill.models.students.promptable",
    "samdistill.models.students.fusion",
    "samdistill.models.students.unet_student",
    "samdistill.models.nas.genotype",
)
_populated = False


def populate() -> Registry:
    """Import the family modules so that their decorators run (cheap: heavy imports are lazy)."""
    global _populated
    if not _populated:
        for mod in _FAMILY_MODULES:
            importlib.import_module(mod)
        _populated = True
    return MODELS


def list_models(kind: str | None = None) -> list[str]:
    populate()
    return [e.name for e in MODELS if kind is None or e.meta.get("kind") == kind]


def freeze(model: nn.Module) -> nn.Module:
    """Teachers are frozen and in eval mode."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_state(model: nn.Module, state: dict[str, torch.Tensor], *, source: str, expected: str) -> None:
    """``load_state_dict`` that fails with a one-line message naming the file and what was expected."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).split("\n")[1:2]
        raise CheckpointError(
            f"{source} does not fit {expected}: {first[0].strip() if first else exc}"
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not fit {expected}: {len(missing)} missing keys (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:2]})"
        )


def read_torch_file(path: str | os.PathLike, *, expected: str) -> Any:
    """``torch.load`` on CPU with a clear error for missing, empty or truncated files."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p} (expected {expected})")
    if p.stat().st_size == 0:
        raise CheckpointError(f"checkpoint is empty: {p} (expected {expected})")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle garbage, wrong format
        raise CheckpointError(
            f"cannot read checkpoint {p} ({type(exc).__name__}); expected {expected}. Is the file complete?"
        ) from None


def save_model(model: nn.Module, path: str | os.PathLike, provenance: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as one samdistill checkpoint file (atomically: temp file, fsync, rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "family": model.family,
        "config": dict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "preprocess": model.preprocess.to_dict() if hasattr(model, "preprocess") else None,
        "provenance": dict(provenance or {}),
    }
    return atomic_torch_save(payload, p)


def load_model(
    name_or_path: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    pretrained: bool | str | None = None,
    device: str | torch.device = "cpu",
    **config: Any,
) -> nn.Module:
    """A registered name (``litemedsam``, ``sam_vit_b`` + ``checkpoint=``...) or a samdistill checkpoint file.

    ``pretrained``: for teachers, ``False`` builds the random-init architecture (default: real weights);
    for students, a local timm weights file (default: random init).
    """
    populate()
    key = str(name_or_path)
    if key in MODELS:
        if pretrained is not None:
            config["pretrained"] = pretrained
        model = MODELS.get(key)(checkpoint=checkpoint, **config)
    elif Path(key).is_file() or key.endswith((".pt", ".pth")):
        model = _load_checkpoint(Path(key), family_hint=None)
    elif Path(key).is_dir():
        raise UserError(_folder_message(Path(key)))
    else:
        raise UserError(
            f"{MODELS.unknown_message(key)} (or give the path of a samdistill checkpoint file)"
        )
    return model.to(device)


def _folder_message(folder: Path) -> str:
    """Why a folder is not a model here: an ONNX export (its manifest names what it was exported from), a run
    folder (its student.pt is), or neither."""
    if (folder / "manifest.json").is_file():  # the export manifest (deploy.onnx.MANIFEST; models never import deploy)
        try:
            source = json.loads((folder / "manifest.json").read_text()).get("source")
        except (OSError, ValueError, AttributeError):
            source = None
        src = f", or this command on the checkpoint it came from ({source})" if source else ""
        return (f"{folder} is an ONNX export folder: this command takes a model name or a samdistill .pt checkpoint; "
                f"use `samdistill bench`, `predict` or `demo` with the export folder{src}")
    if (folder / "student.pt").is_file():
        return f"{folder} is a run folder; give its checkpoint: {folder / 'student.pt'}"
    return f"{folder} is a folder, not a model: give a model name (`samdistill list`) or a samdistill .pt checkpoint"


def _load_checkpoint(path: Path, family_hint: str | None) -> nn.Module:
    payload = read_torch_file(path, expected=f"a {CHECKPOINT_FORMAT} checkpoint written by samdistill")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a samdistill checkpoint (no 'format': '{CHECKPOINT_FORMAT}'). For an official "
            "SAM/MedSAM/MobileSAM file use its model name with --checkpoint, e.g. "
            f"`--model sam_vit_b --checkpoint {path}`"
        )
    family = payload["family"]
    if family_hint is not None and family != family_hint:
        raise CheckpointError(f"{path} holds a {family!r} model, expected {family_hint!r}")
    if family not in MODELS:
        raise CheckpointError(f"{path} holds an unknown model family {family!r}; known: {', '.join(MODELS.names())}")
    entry = MODELS.entry(family)
    model = entry.obj(**({"pretrained": False} if entry.meta.get("kind") == "teacher" else {}), **payload["config"])
    load_state(model, payload["state_dict"], source=str(path), expected=f"the {family} architecture")
    if entry.meta.get("kind") == "teacher":
        freeze(model)
    else:
        model.eval()
    model.provenance = payload.get("provenance", {})
    return model
