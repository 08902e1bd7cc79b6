"""Seeded phantoms with known masks: a textured lesion-like blob on a textured background.

Used by the tests and the quickstart (no data needed). ``phantom(seed, index)`` is a pure function
of its arguments, so a synthetic dataset costs nothing to store and is identical on every machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage


def phantom(seed: int, index: int, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """One image (``HxWx3 uint8``, H, W in [0.75*size, size]) and its mask (``HxW bool``)."""
    rng = np.random.default_rng([seed, index])
    h, w = (int(v) for v in rng.integers(int(0.75 * size), size + 1, size=2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)

    # A wobbly ellipse: radius modulated by a few low-frequency harmonics of the angle.
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    ry, rx = rng.uniform(0.12, 0.28) * h, rng.uniform(0.12, 0.28) * w
    theta = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    ang = np.arctan2(v / ry, u / rx)
    wobble = 1.0 + sum(rng.uniform(-0.08, 0.08) * np.cos(k * ang + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    mask = (u / rx) ** 2 + (v / ry) ** 2 <= wobble**2

    def texture(sigma: float) -> np.ndarray:
        t = ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma)
        return t / (np.abs(t).max() + 1e-8)

    base = 70 + 30 * texture(size / 10) + 10 * texture(2)
    lesion = 165 + 25 * texture(size / 25)
    soft = ndimage.gaussian_filter(mask.astype(np.float64), 1.5)
    grey = base * (1 - soft) + lesion * soft + rng.normal(0, 6, (h, w))
    tint = rng.uniform(0.8, 1.1, size=3)
    img = np.clip(grey[:, :, None] * tint[None, None, :], 0, 255).astype(np.uint8)
    return img, mask


def write_folder(root: str | Path, n: int, *, seed: int = 0, size: int = 256) -> Path:
    """Write ``n`` phantoms as a ``folder``-layout dataset (``images/*.png`` + ``masks/*.png``)."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, mask = phantom(seed, i, size)
        Image.fromarray(img).save(root / "images" / f"case_{i:04d}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"case_{i:04d}.png")
    return root
