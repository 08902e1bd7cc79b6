"""Loss-weight ramps for semi-supervised training (consistency, KD): a weight that grows from ~0 to 1
over a fraction of the run, so that terms whose targets start as noise (an untrained teacher, random
learned prompts) do not dominate the first steps."""

from __future__ import annotations

import math


def sigmoid_rampup(progress: float, length: float = 1.0) -> float:
    """exp(-5 (1 - p)²) with p = progress / length clipped to [0, 1] (Laine & Aila's ramp-up); 1 after
    the end, and always 1 when ``length`` is 0 (no ramp). ``progress``: fraction of the run done."""
    if length <= 0:
        return 1.0
    p = min(max(progress / length, 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - p) ** 2))
