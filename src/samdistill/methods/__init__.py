"""Distillation methods, one file each: its run config, its ``build`` (students, phases) and its step.

Importing this package registers every shipped method in :data:`METHODS`.
"""

from samdistill.methods.registry import METHODS, Built

from samdistill.methods import kdsam, knowsam, nas  # noqa: E402,F401  (each registers itself)

__all__ = ["METHODS", "Built"]
