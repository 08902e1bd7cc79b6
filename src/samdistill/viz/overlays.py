"""Overlay images: ground truth and predictions drawn over the image, for a quick look."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

# The demo page colours its models in this order (its own palette; side-by-side panels use the named ones below).
COLOURS = [(0, 255, 0), (255, 60, 60), (60, 140, 255), (255, 200, 0)]

# Side-by-side panels: Okabe-Ito colours, told apart with every common colour-vision deficiency and
# visible on both the reddish endoscopy images and the grey ultrasound / phantom ones.
GROUND_TRUTH = (240, 228, 66)  # yellow
TEACHER = (86, 180, 233)  # sky blue
STUDENT = (0, 158, 115)  # bluish green (vermillion and orange drowned in the reddish endoscopy tissue)

MIN_TILE_WIDTH = 256  # smaller images (64-px tests, phantoms) are upscaled so the titles stay legible
GAP = 6  # white columns between panels


@dataclass(frozen=True)
class Panel:
    """One tile of :func:`save_side_by_side`: ``masks`` drawn in ``colour`` over the image, ``title`` above it
    with a swatch of the colour, and ``dice`` (vs the ground truth) on the line below when given; ``note``
    replaces that line otherwise."""

    title: str
    masks: list[np.ndarray]
    colour: tuple[int, int, int]
    dice: float | None = None
    note: str = ""


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


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (needs FreeType)
    except (TypeError, OSError, ImportError):  # pragma: no cover - Pillow built without FreeType
        return ImageFont.load_default()


def _fitting_font(draw: ImageDraw.ImageDraw, lines: list[str], width: int, size: int):
    """The largest font <= ``size`` (down to 8 px) at which every line fits in ``width``."""
    while True:
        font = _font(size)
        if size <= 8 or all(draw.textlength(t, font=font) <= width for t in lines):
            return font, size
        size -= 1


def save_side_by_side(path: str | Path, image: np.ndarray, panels: list[Panel]) -> list[tuple[int, int, int]]:
    """One row of panels (each: the image with its masks in the panel's colour, a colour swatch and
    the title above it), saved as PNG. Returns each panel's image placement ``(x0, y0, scale)`` in the
    PNG: the image's pixel (r, c) is at (y0 + r * scale, x0 + c * scale)."""
    h, w = image.shape[:2]
    scale = max(1, math.ceil(MIN_TILE_WIDTH / w))
    if scale > 1:  # nearest-neighbour, so mask edges stay where they are
        image = image.repeat(scale, 0).repeat(scale, 1)
    tw, th = w * scale, h * scale
    pad = max(4, tw // 64)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    texts = [[p.title, f"Dice {p.dice:.3f} vs ground truth" if p.dice is not None else p.note] for p in panels]
    swatch = max(10, tw // 20)
    # one font for every panel, the largest (<= tile/16) at which every title (after its swatch) and note fits
    font, size = _fitting_font(probe, [t for ts in texts for t in ts], tw - 3 * pad - swatch, max(12, tw // 16))
    swatch = min(swatch, size)
    header = 2 * pad + 2 * int(size * 1.25)
    canvas = Image.new("RGB", (len(panels) * tw + (len(panels) - 1) * GAP, header + th), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    placements = []
    for i, (p, (title, second)) in enumerate(zip(panels, texts)):
        masks = [m.repeat(scale, 0).repeat(scale, 1) if scale > 1 else m for m in p.masks]
        x0 = i * (tw + GAP)
        canvas.paste(Image.fromarray(overlay(image, masks, colours=[p.colour])), (x0, header))
        line = int(size * 1.25)
        sy = pad + (line - swatch) // 2
        draw.rectangle([x0 + pad, sy, x0 + pad + swatch, sy + swatch], fill=p.colour, outline=(0, 0, 0))
        draw.text((x0 + 2 * pad + swatch, pad), title, fill=(0, 0, 0), font=font)
        if second:
            draw.text((x0 + pad, pad + line), second, fill=(60, 60, 60), font=font)
        placements.append((x0, header, scale))
    canvas.save(path)
    return placements
