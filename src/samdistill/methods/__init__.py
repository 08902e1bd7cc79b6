"""Distillation methods, one file each: its run config, its ``build`` (students, phases) and its step.

Importing this package registers every method in :data:`METHODS`: each module of this folder is
imported (so a new method is one new file here, with no list to edit); ``registry`` holds the registry.
"""

import importlib
import pkgutil

from samdistill.methods.registry import METHODS, Built

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "registry":
        importlib.import_module(f"{__name__}.{_m.name}")  # each registers itself

__all__ = ["METHODS", "Built"]
