"""Embedding regression: the student encoder reproduces the teacher's image embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from samdistill.losses.registry import LOSSES


@LOSSES.register("embedding_mse")
def embedding_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all elements. ``student``, ``teacher``: ``Bx256xgxg``. Returns a scalar."""
    return F.mse_loss(student, teacher.to(student.dtype))
