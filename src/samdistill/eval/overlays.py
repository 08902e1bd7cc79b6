"""Overlay images: ground truth and predictions drawn over the image, for a quick look."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

COLOURS = [(0, 255, 0), (255, 60, 60), (60, 140, 255), (255, 200, 0)]


def overlay(image: np.ndarray, masks: list[np.ndarray], alpha: float = 0.35,
            colours: list[tuple[int, int, int]] | None = None) -> np.ndarray:
    """``HxWx3 uint8`` image with each mask filled (translucent) and outlined, in ``colours`` (default
    COLOURS) order."""
    colours = colours or COLOURS
    out = image.astype(np.float32).copy()
    for i, m in enumerate(masks):
        colour = np.array(colours[i % len(colours)], np.float32)
        out[m] = (1 - alpha) * out[m] + alpha * colour
        edge = m & ~ndimage.binary_erosion(m, iterations=max(1, min(image.shape[:2]) // 200))
        out[edge] = colour
    return out.clip(0, 255).astype(np.uint8)


def save_side_by_side(path: str | Path, image: np.ndarray, panels: list[tuple[str, list[np.ndarray]]]) -> None:
    """One row of panels (each: the image with its masks), saved as PNG; titles go in the file name order."""
    tiles = [overlay(image, masks) for _, masks in panels]
    Image.fromarray(np.concatenate(tiles, axis=1)).save(path)
