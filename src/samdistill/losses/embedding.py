"""Embedding regression: the student encoder reproduces the teacher's image embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from samdistill.losses.registry import LOSSES


@LOSSES.register("embedding_mse")
def embedding_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all elements. ``student``: ``Bx256xgxg`` (or more channels: see
    :func:`teacher_channels`); ``teacher``: ``Bx256xGxG``, brought to the student's grid by
    :func:`pooled_embedding` when ``G != g``. Returns a scalar."""
    return F.mse_loss(teacher_channels(student, teacher), pooled_embedding(teacher, student.shape[-1]).to(student.dtype))


def teacher_channels(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The channels of a student embedding that live in the teacher's embedding space: its first
    ``teacher.shape[1]``. A student may carry more after them (a packed detail map,
    :mod:`samdistill.models.students.detail`), which no embedding loss compares."""
    return student[:, : teacher.shape[1]]


def pooled_embedding(embedding: torch.Tensor, grid: int) -> torch.Tensor:
    """``Bx256xGxG -> Bx256xgxg`` by averaging each ``(G/g)x(G/g)`` block (unchanged when ``g == G``).

    The target of a coarse-grid student: each student token stands for the block of teacher tokens it
    covers. Averaging keeps the embedding in the space the teacher's decoder reads (its weights start
    the student's decoder), which a learned up-projection of the student's grid would not guarantee.
    """
    g = embedding.shape[-1]
    if g == grid:
        return embedding
    if g % grid:
        raise ValueError(f"cannot pool a {g}x{g} embedding to {grid}x{grid}")
    return F.avg_pool2d(embedding, g // grid)
