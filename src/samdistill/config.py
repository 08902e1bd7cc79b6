"""Recipes: YAML files validated into typed objects, with ``key=value`` overrides on dotted keys.

Unknown or mistyped keys are rejected with their full dotted name and the closest valid key.
The resolved config is saved as ``config.yaml`` in the run directory.
"""

from __future__ import annotations

import difflib
import functools
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, ClassVar, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

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
    # train and validate on the crop of zoom x each mask's tight box (a student used with `predict --zoom`); None: whole images
    # (added_neutral: a run from before this key trained on whole images, i.e. zoom None, and stays that run)
    zoom: Optional[float] = Field(None, ge=1, json_schema_extra={"added_neutral": True})
    # knowsam / meanteacher: a folder of images without masks, unlabeled training images beside the train split's
    # (added_neutral: a run from before this key had none)
    unlabeled: Optional[str] = Field(None, json_schema_extra={"added_neutral": True})

    @field_validator("labels")
    @classmethod
    def _foreground_labels(cls, v: Optional[list[int]]) -> Optional[list[int]]:
        if v is not None and (not v or min(v) < 1):
            raise ValueError("labels are the mask values that are foreground (1 or more), e.g. [1, 2]; 0 is background")
        return v


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


class DistillConfig(Strict):
    """What every run has, whatever its method. A method's own sections (``stage1``, ``knowsam``, ...) live in
    its config, a subclass in ``methods/<name>.py`` with ``method: Literal["<name>"]``; a run's config is the
    union of those, told apart by ``method`` (:func:`run_config_types`), so a run carries its own method's
    sections only."""

    method: str = "kdsam"
    teacher: str = "litemedsam"
    teacher_checkpoint: Optional[str] = None
    data: DataConfig = DataConfig()
    cache: CacheConfig = CacheConfig()
    seed: int = 0
    device: str = "cpu"
    threads: Optional[int] = Field(None, ge=1)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", json_schema_extra={"added_neutral": True}, description="arithmetic of training and validation forwards: auto = bf16 autocast on CUDA, fp32 "
        "elsewhere; bf16 = bf16 autocast on CUDA or CPU (on a CPU it pays where it has AMX / AVX512-BF16, e.g. "
        "Intel Xeon 4th gen and later; elsewhere it can be slower than fp32)")
    val_every: int = Field(1, ge=1)
    checkpoint_every: Optional[int] = Field(None, ge=1)  # also checkpoint every N steps (besides epoch ends)
    overlays: int = Field(4, ge=0)
    progress: bool = True
    #: whether the method's student takes a box (``data.zoom`` crops around each mask's box, which only a promptable
    #: student is used on; for a semi-supervised method it would also show the unlabeled images' masks)
    promptable: ClassVar[bool] = True

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        from samdistill.devices import valid_device_name

        try:
            return valid_device_name(v)
        except UserError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _zoom_needs_a_box(self) -> "DistillConfig":
        if self.data.zoom is not None and not self.promptable:
            raise ValueError(f"data.zoom crops around each mask's box, for a student that is given a box; {self.method}'s "
                             "student is prompt-free (and the crop would show the unlabeled images' masks): drop data.zoom")
        return self

    @model_validator(mode="after")
    def _precision_on_device(self) -> "DistillConfig":
        from samdistill.devices import training_dtype

        try:
            training_dtype(self.device, self.precision)
        except UserError as exc:
            raise ValueError(str(exc)) from None
        return self


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config tree -> its dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (what overrides name)."""
    if isinstance(tree, dict) and tree:
        return {k: v for key, val in tree.items() for k, v in flatten(val, f"{prefix}.{key}" if prefix else key).items()}
    return {prefix: tree}


def added_neutral_keys(model: BaseModel, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of ``model`` (recursively) that were added after runs had been trained, with the default that
    trains what a run from before them trained (marked ``json_schema_extra={"added_neutral": True}``), and that
    default: a finished run whose config.yaml lacks such a key is read as having it."""
    from pydantic_core import PydanticUndefined, to_jsonable_python

    out: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        key = f"{prefix}{name}"
        value = getattr(model, name)
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("added_neutral"):
            if field.default is PydanticUndefined:
                raise TypeError(f"{key} is marked added_neutral but has no plain default to read an older run with")
            out[key] = to_jsonable_python(field.default)  # as config.yaml holds it
        if isinstance(value, BaseModel):
            out.update(added_neutral_keys(value, key + "."))
    return out


_RUN_CONFIGS: list[Callable[[], dict[str, type[DistillConfig]]]] = []


def provide_run_configs(provider: Callable[[], dict[str, type[DistillConfig]]]) -> None:
    """Called once by the methods registry (``samdistill.methods``) with a function that lists each registered
    method's run config. So config, at the bottom of the layers, imports no method: the methods hand it theirs
    (the package ``samdistill`` imports ``samdistill.methods``, so they are registered before any recipe loads)."""
    _RUN_CONFIGS[:] = [provider]


def run_config_types() -> dict[str, type[DistillConfig]]:
    """Each registered method's run config, by method name."""
    if not _RUN_CONFIGS:
        raise RuntimeError("no methods are registered: import samdistill.methods before loading a recipe")
    return _RUN_CONFIGS[0]()


@functools.lru_cache(maxsize=8)
def _union(types: tuple[type[DistillConfig], ...]) -> TypeAdapter:
    """The run config as a pydantic union discriminated by ``method``."""
    if len(types) == 1:
        return TypeAdapter(types[0])
    return TypeAdapter(Annotated[Union[types], Field(discriminator="method")])


def _valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        keys.append(prefix + name)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _valid_keys(ann, prefix + name + ".")
    return keys


def _first_key(section: str, value: Any) -> str:
    """``"knowsam", {"labeled": 0.1}`` -> ``"knowsam.labeled"``: the dotted key the user wrote."""
    while isinstance(value, dict) and len(value) == 1:
        (k, value), = value.items()
        section += f".{k}"
    return section


def _message(exc: ValidationError, schema: type[BaseModel], others: dict[str, type[BaseModel]] | None = None) -> str:
    """The first error as one line; ``others`` (the other methods' configs) name a section's owner."""
    err = exc.errors()[0]
    parts = [str(p) for p in err["loc"]]
    if err["type"].startswith("union_tag"):  # the discriminator itself: an unknown method
        return f"bad config value for 'method': {err['msg']}"
    method = getattr(schema.model_fields.get("method"), "default", None)
    if parts and parts[0] == method and len(parts) > 1:  # the union's tag, not part of the key
        parts = parts[1:]
    loc = ".".join(parts)
    if err["type"] == "extra_forbidden":
        owners = [name for name, m in (others or {}).items() if len(parts) and parts[0] in m.model_fields]
        if len(parts) == 1 and owners:
            key = _first_key(loc, err.get("input"))
            return (f"config key {key!r} belongs to method {' / '.join(owners)}, not {method} (this run's method; "
                    f"set method={owners[0]} or drop the key)")
        close = difflib.get_close_matches(loc, _valid_keys(schema), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown config key {loc!r}{hint}"
    if parts == [method] or not parts:  # a check across keys (a model validator): its message names the keys
        return f"bad config: {err['msg'].removeprefix('Value error, ')}"
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


def _exact_epochs(tree: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """An ``epochs`` given without a ``min_steps`` beside it means exactly those epochs: the recipe's
    ``min_steps`` floor of that section (any section with both keys: a trainer ``Phase``'s epoch floor, kdsam's
    stages today) is dropped (``stage1.epochs=3`` runs 3 epochs, not the floor's 61 on a
    small set; a saved run config from before ``min_steps`` existed reads back as the run it was)."""
    for key, sub in given.items():
        if not isinstance(sub, dict) or not isinstance(tree.get(key), dict):
            continue
        if "epochs" in sub and "min_steps" not in sub and tree[key].get("min_steps") is not None:
            tree[key] = {**tree[key], "min_steps": None}
        else:
            tree[key] = _exact_epochs(tree[key], sub)
    return tree


def read_recipe(recipe: str | Path) -> dict[str, Any]:
    """A recipe's keys as written (not validated): a YAML file, or the name of a shipped recipe."""
    p: Path | Traversable = Path(recipe)
    if not p.is_file():  # a path wins over a shipped name, as before
        shipped = shipped_recipes()
        if str(recipe) not in shipped:
            raise UserError(f"recipe not found: {recipe} (give a recipe YAML file, or the name of a shipped recipe: "
                            f"{', '.join(sorted(shipped)) or 'none are installed'})")
        p = shipped[str(recipe)]
    try:
        tree = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:  # a checkpoint or another binary file given as --recipe
        raise UserError(f"recipe {p} is not a YAML text file (byte {exc.object[exc.start]:#04x} at offset "
                        f"{exc.start} is not UTF-8); give a recipe YAML file or a shipped recipe's name") from None
    except yaml.YAMLError as exc:
        raise UserError(f"recipe {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if tree is None:  # empty, or comments only: it would silently run the method's bare defaults
        raise UserError(f"recipe {p} is empty (no keys); give the keys of a recipe (start from a copy of a shipped "
                        f"one: {', '.join(sorted(shipped_recipes()))}), or drop --recipe")
    if not isinstance(tree, dict):
        raise UserError(f"recipe {p} must be a mapping of keys to values")
    return tree


def load_config(recipe: str | Path | None = None, overrides: list[str] | dict | None = None) -> DistillConfig:
    """Recipe YAML (a file path, or the name of a shipped recipe) + overrides -> the validated run config of
    its ``method`` (a :class:`DistillConfig` subclass; ``kdsam`` when the recipe names none)."""
    tree = read_recipe(recipe) if recipe is not None else {}
    if overrides:
        given = overrides if isinstance(overrides, dict) else parse_overrides(list(overrides))
        tree = _exact_epochs(merge(tree, given), given)
    types = run_config_types()
    tree = {"method": DistillConfig.model_fields["method"].default, **tree}
    if isinstance(tree["method"], str) and tree["method"] not in types:
        close = difflib.get_close_matches(tree["method"], list(types), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserError(f"unknown method {tree['method']!r}{hint} (valid: {', '.join(sorted(types))})")
    try:
        return _union(tuple(types.values())).validate_python(tree)
    except ValidationError as exc:
        method = tree["method"]
        schema = types.get(method, DistillConfig) if isinstance(method, str) else DistillConfig
        raise UserError(_message(exc, schema, {n: t for n, t in types.items() if t is not schema})) from None


def dump_config(cfg: DistillConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
