"""The methods registry: each ``methods/<name>.py`` registers its ``build`` here with one decorator.

Usage (the whole of a method's wiring)::

    class ToyConfig(DistillConfig):          # the run config: shared fields + this method's sections
        method: Literal["toy"] = "toy"
        toy: ToySection = ToySection()

    @METHODS.register("toy", config=ToyConfig, cli_keys={"student": "toy.student"})
    def build(cfg: ToyConfig, teacher, cache, train_keys, val_keys) -> Built:
        \"\"\"One line for `samdistill list`.\"\"\"
        ...
        return Built(model=..., student=..., phases=[Phase(...)], student_name=...)

``config`` is the method's run config (a :class:`~samdistill.config.DistillConfig` subclass whose
``method`` is the registered name); ``cli_keys`` maps the ``samdistill distill`` options that depend on
the method (``student``, ``labeled``) to the config keys they set. The distill job looks the method up
by ``cfg.method``, calls its ``build`` and hands the phases to the one ``Trainer``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from samdistill.config import provide_run_configs
from samdistill.errors import UserError
from samdistill.registry import Registry
from samdistill.train.trainer import Phase


@dataclass
class Built:
    """What a method's ``build`` hands the distill job."""

    model: nn.Module  # everything that trains (checkpointed by the trainer)
    student: nn.Module  # the model saved as student.pt (part of ``model``)
    phases: list[Phase]
    student_name: str  # as the summary and the overlays name it
    extra: dict[str, Any] = field(default_factory=dict)  # plain numbers/strings for summary.json and provenance
    labeled_ids: list[str] | None = None  # semi-supervised: the train images that kept their labels
    # the likely cause when a resume finds another architecture in the checkpoint (the trainer's error adds it)
    resume_hint: str = ""


class MethodRegistry(Registry[Callable[..., Built]]):
    """A :class:`Registry` whose entries carry their run config; a config whose ``method`` is not the
    registered name is refused at registration, when the mistake is made."""

    def register(self, name: str, *, config: type, cli_keys: dict[str, str] | None = None,
                 **meta: Any) -> Callable[[Callable[..., Built]], Callable[..., Built]]:
        tag = getattr(config.model_fields.get("method"), "default", None)
        if tag != name:
            raise ValueError(f"method {name!r}: its config {config.__name__} has method={tag!r}; give it "
                             f"method: Literal[{name!r}] = {name!r}")
        return super().register(name, config=config, cli_keys=dict(cli_keys or {}), **meta)

    def refuse_unlabeled(self, cfg: Any, job: str | None = None) -> None:
        """A one-line ``UserError`` when ``cfg.data.unlabeled`` (images without masks) is set for a job that would
        not read it: ``job`` (e.g. the architecture search), else ``cfg.method`` unless its ``cli_keys`` take it."""
        if not cfg.data.unlabeled or (job is None and "unlabeled" in self.entry(cfg.method).meta["cli_keys"]):
            return
        takes = ", ".join(e.name for e in self if "unlabeled" in e.meta["cli_keys"])
        raise UserError(f"data.unlabeled (images without masks) is for {takes}; {job or 'method ' + cfg.method} "
                        "trains on masks only")


METHODS = MethodRegistry("method")
provide_run_configs(lambda: {e.name: e.meta["config"] for e in METHODS})  # config reads them; it imports no method
