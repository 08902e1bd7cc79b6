"""The loss registry: name -> loss function or module class."""

from __future__ import annotations

from typing import Any, Callable

from samdistill.registry import Registry

LOSSES: Registry[Callable[..., Any]] = Registry("loss")
