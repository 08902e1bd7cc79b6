"""Recipes: YAML files validated into typed objects, with ``key=value`` overrides on dotted keys.

Unknown or mistyped keys are rejected with their full dotted name and the closest valid key.
The resolved config is saved as ``config.yaml`` in the run directory.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from samdistill.errors import UserError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Strict):
    path: Union[str, list[str]] = "synthetic"  # folder, name, manifest .csv/.jsonl, synthetic[:..], or a list of folders
    layout: Optional[str] = None
    train_split: str = "train"
    val_split: str = "val"
    limit_train: Optional[int] = Field(None, ge=1)
    limit_val: Optional[int] = Field(None, ge=1)
    on_error: Literal["raise", "skip"] = "raise"
    mask_threshold: Optional[int] = Field(None, ge=1, le=255)
    labels: Optional[list[int]] = None  # label-map masks: foreground = pixels with these values; 0 and others background
    seed: int = 0

    @field_validator("labels")
    @classmethod
    def _foreground_labels(cls, v: Optional[list[int]]) -> Optional[list[int]]:
        if v is not None and (not v or min(v) < 1):
            raise ValueError("labels are the mask values that are foreground (1 or more), e.g. [1, 2]; 0 is background")
        return v


class StudentConfig(Strict):
    name: str = "mobilenetv4_conv_small"
    decoder: Literal["teacher", "slim"] = "teacher"
    neck_width: Optional[int] = Field(None, ge=4)
    pretrained: Optional[str] = None  # local timm weights file


class CacheConfig(Strict):
    dir: Optional[str] = None  # default: <out>/../.cache or $SAMDISTILL_CACHE
    flips: bool = False
    in_memory: bool = True


class OptimConfig(Strict):
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    schedule: Literal["cosine", "linear"] = "cosine"  # after warm-up: cosine or linear decay to min_lr_ratio
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    betas: Optional[tuple[float, float]] = None  # adam/adamw moment decays; None: torch's (0.9, 0.999)
    warmup_steps: int = Field(20, ge=0)
    min_lr_ratio: float = Field(0.01, ge=0, le=1)
    clip_grad: Optional[float] = Field(1.0, gt=0)


class Stage1Config(Strict):
    """Encoder distillation: embedding MSE + perceptual (teacher decoder activations)."""

    epochs: int = Field(10, ge=0)
    batch_size: int = Field(8, ge=1)
    optim: OptimConfig = OptimConfig()
    mse: float = Field(1.0, ge=0)
    perceptual: float = Field(0.1, ge=0)
    perceptual_net: Literal["decoder", "vgg16"] = "decoder"
    vgg16_weights: Optional[str] = None


class Stage2Config(Strict):
    """Decoder (and encoder) training with prompts: Dice + BCE + logit KD + IoU head + embedding MSE."""

    epochs: int = Field(5, ge=0)
    batch_size: int = Field(8, ge=1)
    optim: OptimConfig = OptimConfig(lr=3e-4)
    train_encoder: bool = True
    box_jitter: float = Field(5.0, ge=0)  # px in the input frame, uniform 0..s per side (LiteMedSAM trained with 0..5 at 256)
    dice: float = Field(1.0, ge=0)
    bce: float = Field(1.0, ge=0)
    kd: float = Field(0.5, ge=0)
    temperature: float = Field(1.0, gt=0)
    iou: float = Field(0.1, ge=0)
    mse: float = Field(0.5, ge=0)


class KnowSAMConfig(Strict):
    """Semi-supervised SAM-induced distillation into a prompt-free UNet + VNet (``method: knowsam``)."""

    student: str = "knowsam_student"
    input_size: int | None = Field(None, ge=32)  # student's input frame; None: the teacher's (SAM still sees its own)
    labeled: float = Field(0.1, gt=0)  # <= 1: fraction of the train split (1 = all); > 1: a count
    unlabeled: bool = True  # false: train on the labeled subset alone (the supervised baseline)
    adapters: Literal["none", "encoder"] = "none"  # none: frozen encoder, cached embeddings (CPU-friendly)
    decoder_adapters: bool = True  # adapters in SAM's mask decoder (the authors' code has them; work with adapters=none)
    adapter_ratio: float = Field(0.25, gt=0, le=1)
    prompt_tokens: int = Field(2, ge=1)
    sam: bool = True  # false: no SAM at all (co-training only)
    sam_decode: Literal["per_class", "foreground"] = "per_class"  # foreground: one decode, logits [0, l] (binary)
    fusion: bool = True  # false: plain logit average instead of the Hybrid Aggregation Module
    epochs: int = Field(10, ge=0)  # one epoch = one pass over the unlabeled images
    batch_size: int = Field(8, ge=2)
    labeled_bs: int = Field(4, ge=1)
    optim: OptimConfig = OptimConfig(name="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4, schedule="linear",
                                     warmup_steps=0, min_lr_ratio=0.0, clip_grad=None)
    sam_optim: OptimConfig = OptimConfig(name="adam", lr=1e-4, weight_decay=0.0, schedule="linear", warmup_steps=0,
                                         min_lr_ratio=0.0, clip_grad=None)
    sup: float = Field(1.0, ge=0)
    kd: float = Field(1.0, ge=0)
    temperature: float = Field(10.0, gt=0)
    consistency: float = Field(1.0, ge=0)
    consistency_rampup: float = Field(0.4, ge=0)  # fraction of the run over which consistency ramps up
    entropy: float = Field(0.9, ge=0)
    kd_rampup: float = Field(0.0, ge=0)  # fraction of the run over which KD and entropy ramp up; 0: constant (published)
    mix: float = Field(1.0, ge=0)
    mix_after: float = Field(0.2, ge=0, le=1)  # fraction of the run before uncertainty-guided mixing starts
    mix_grid: int = Field(4, ge=1)
    mix_top_k: int = Field(5, ge=1)
    strong_aug: float = Field(0.2, ge=0)


class NASSearchConfig(Strict):
    """Differentiable architecture search of the student encoder (``samdistill nas search``)."""

    epochs: int = Field(4, ge=1)  # passes over the weight half of the train split
    warmup_epochs: int = Field(1, ge=0)  # weights only, before architecture steps start
    batch_size: int = Field(4, ge=1)
    # operation weights (first-order DARTS, on the weight half) and architecture parameters (on the other
    # half): constant learning rates; weight gradients clipped at 5, architecture ones not
    w_optim: OptimConfig = OptimConfig(name="adamw", lr=1e-3, weight_decay=1e-4, warmup_steps=0, min_lr_ratio=1.0,
                                       clip_grad=5.0)
    a_optim: OptimConfig = OptimConfig(name="adam", lr=1e-2, weight_decay=1e-3, betas=(0.5, 0.999), warmup_steps=0,
                                       min_lr_ratio=1.0, clip_grad=None)
    beta: float = Field(0.5, ge=0)  # weight of the resource term in the architecture objective
    resource: Literal["hinge", "linear"] = "hinge"  # hinge: max(0, E[MACs]/budget - 1); linear: E[MACs]/budget
    max_skip: Optional[int] = Field(None, ge=0)  # skips kept per stage when deriving (default: layers - 1)
    macs_budget: Optional[float] = Field(None, gt=0)  # encoder GMACs; default: teacher encoder / 30
    sampling: Literal["softmax", "gumbel"] = "softmax"
    tau: float = Field(1.0, gt=0)
    widths: Optional[list[list[int]]] = None  # per stage; default [[24,32,48],[48,64,96],[96,128,192]]
    layers: Optional[list[int]] = None  # searchable layers per stage; default [2, 3, 3]
    neck_width: Optional[int] = Field(None, ge=8)
    box_jitter: float = Field(5.0, ge=0)


class NASTrainConfig(Strict):
    """Distillation of the found architecture (``samdistill nas train --genotype g.json``)."""

    genotype: Optional[str] = None
    stage1_epochs: int = Field(8, ge=0)
    stage2_epochs: int = Field(6, ge=0)
    batch_size: int = Field(8, ge=1)
    optim1: OptimConfig = OptimConfig(lr=2e-3)
    optim2: OptimConfig = OptimConfig(lr=5e-4)
    mse: float = Field(1.0, ge=0)
    saliency: float = Field(1.0, ge=0)
    saliency_kind: Literal["activation", "input_gradient"] = "activation"
    kd: float = Field(0.5, ge=0)
    temperature: float = Field(1.0, gt=0)
    dice: float = Field(1.0, ge=0)
    bce: float = Field(1.0, ge=0)
    box_jitter: float = Field(10.0, ge=0)


class NASConfig(Strict):
    search: NASSearchConfig = NASSearchConfig()
    train: NASTrainConfig = NASTrainConfig()


class DistillConfig(Strict):
    method: Literal["kdsam", "knowsam", "nas"] = "kdsam"
    teacher: str = "litemedsam"
    teacher_checkpoint: Optional[str] = None
    student: StudentConfig = StudentConfig()
    data: DataConfig = DataConfig()
    cache: CacheConfig = CacheConfig()
    stage1: Stage1Config = Stage1Config()
    stage2: Stage2Config = Stage2Config()
    knowsam: KnowSAMConfig = KnowSAMConfig()
    nas: NASConfig = NASConfig()
    stages: list[Literal[1, 2]] = [1, 2]
    seed: int = 0
    device: str = "cpu"
    threads: Optional[int] = Field(None, ge=1)
    val_every: int = Field(1, ge=1)
    checkpoint_every: Optional[int] = Field(None, ge=1)  # also checkpoint every N steps (besides epoch ends)
    overlays: int = Field(4, ge=0)
    progress: bool = True

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        from samdistill.devices import valid_device_name

        try:
            return valid_device_name(v)
        except UserError as exc:
            raise ValueError(str(exc)) from None


def _valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        keys.append(prefix + name)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _valid_keys(ann, prefix + name + ".")
    return keys


def _message(exc: ValidationError, schema: type[BaseModel]) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(loc, _valid_keys(schema), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown config key {loc!r}{hint}"
    return f"bad config value for {loc!r}: {err['msg']} (got {err.get('input')!r})"


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise UserError(f"cannot set {key!r}: {p!r} is not a section")
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["stage1.epochs=3", "student.name=repvit_m0_9"]`` -> nested dict (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"override {item!r} must look like key=value (e.g. stage1.epochs=3)")
        set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    return tree


def merge(base: dict, extra: dict) -> dict:
    """Deep-merge ``extra`` into a copy of ``base`` (extra wins)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def shipped_recipes() -> dict[str, Traversable]:
    """The recipes packaged with samdistill (``samdistill/recipes/*.yaml``), by name.

    Read through :mod:`importlib.resources`, not a path relative to the source tree, so an installed
    wheel finds them as well as a checkout does.
    """
    root = resources.files("samdistill") / "recipes"
    if not root.is_dir():
        return {}
    return {f.name[: -len(".yaml")]: f for f in root.iterdir() if f.name.endswith(".yaml") and f.is_file()}


def load_config(recipe: str | Path | None = None, overrides: list[str] | dict | None = None) -> DistillConfig:
    """Recipe YAML (a file path, or the name of a shipped recipe) + overrides -> validated :class:`DistillConfig`."""
    tree: dict[str, Any] = {}
    if recipe is not None:
        p: Path | Traversable = Path(recipe)
        if not p.is_file():  # a path wins over a shipped name, as before
            shipped = shipped_recipes()
            if str(recipe) not in shipped:
                raise UserError(f"recipe not found: {recipe} (give a recipe YAML file, or the name of a shipped recipe: "
                                f"{', '.join(sorted(shipped)) or 'none are installed'})")
            p = shipped[str(recipe)]
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"recipe {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(tree, dict):
            raise UserError(f"recipe {p} must be a mapping of keys to values")
    if overrides:
        tree = merge(tree, overrides if isinstance(overrides, dict) else parse_overrides(list(overrides)))
    try:
        return DistillConfig.model_validate(tree)
    except ValidationError as exc:
        raise UserError(_message(exc, DistillConfig)) from None


def dump_config(cfg: DistillConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
