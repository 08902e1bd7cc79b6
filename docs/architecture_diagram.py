"""Draws docs/architecture.png: how a run flows through samdistill and where each part lives.

    python docs/architecture_diagram.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

RUN = "#0072B2"     # the training path
USE = "#009E73"     # what uses a run's student
PART = "#E69F00"    # the parts a method is built from

BOXES = {
    # name: (x, y, w, h, colour, title, where)
    "recipe": (0.2, 5.0, 2.3, 1.0, RUN, "recipe (YAML)", "recipes/kdsam.yaml\n+ key=value overrides"),
    "config": (3.0, 5.0, 2.3, 1.0, RUN, "config", "config.py: validated,\none section per method"),
    "method": (5.8, 5.0, 2.5, 1.0, RUN, "METHODS[name].build", "methods/<name>.py: config,\nbuild, step"),
    "trainer": (8.8, 5.0, 2.3, 1.0, RUN, "Trainer", "train/trainer.py: one loop,\ncheckpoints, resume"),
    "rundir": (11.6, 5.0, 2.4, 1.0, RUN, "run folder", "config.yaml, checkpoints/,\nstudent.pt, plots/"),
    "teachers": (3.0, 2.9, 2.3, 1.0, PART, "teachers", "models/teachers/\n(LiteMedSAM, SAM, ...)"),
    "students": (5.8, 2.9, 2.5, 1.0, PART, "students", "models/students/ (timm\nbackbone + SAM heads)"),
    "data": (8.8, 2.9, 2.3, 1.0, PART, "data + cache", "data/ (layouts, prompts,\nteacher-embedding cache)"),
    "losses": (0.2, 2.9, 2.3, 1.0, PART, "losses", "losses/ (MSE, KD,\nDice/BCE, saliency)"),
    "eval": (11.6, 2.9, 2.4, 1.0, USE, "eval / bench", "eval/: Dice, HD95, MACs,\nlatency side by side"),
    "deploy": (11.6, 0.8, 2.4, 1.0, USE, "export / predict", "deploy/: ONNX + manifest,\nPredictor, volumes"),
    "demo": (8.8, 0.8, 2.3, 1.0, USE, "demo", "demo/: local page,\nteacher vs students"),
}
ARROWS = [("recipe", "config"), ("config", "method"), ("method", "trainer"), ("trainer", "rundir"),
          ("teachers", "method"), ("students", "method"), ("data", "method"), ("losses", "method"),
          ("rundir", "eval"), ("eval", "deploy"), ("deploy", "demo")]


def centre(name: str, side: str) -> tuple[float, float]:
    x, y, w, h = BOXES[name][:4]
    return {"right": (x + w, y + h / 2), "left": (x, y + h / 2), "top": (x + w / 2, y + h),
            "bottom": (x + w / 2, y)}[side]


def sides(a: str, b: str) -> tuple[str, str]:
    ax, ay = BOXES[a][:2]
    bx, by = BOXES[b][:2]
    if abs(ay - by) < 0.1:
        return ("right", "left") if bx > ax else ("left", "right")
    return ("bottom", "top") if by < ay else ("top", "bottom")


def main(out: Path = Path(__file__).resolve().parent / "architecture.png") -> None:
    fig, ax = plt.subplots(figsize=(14.5, 6.6))
    for name, (x, y, w, h, colour, title, where) in BOXES.items():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.04", fc="white", ec=colour, lw=2))
        ax.text(x + w / 2, y + h - 0.22, title, ha="center", va="center", fontsize=11, weight="bold", color=colour)
        ax.text(x + w / 2, y + 0.36, where, ha="center", va="center", fontsize=8.2, color="#333333")
    for a, b in ARROWS:
        sa, sb = sides(a, b)
        if (a, b) in {("teachers", "method"), ("students", "method"), ("data", "method"), ("losses", "method")}:
            sa, sb = "top", "bottom"
        ax.add_patch(FancyArrowPatch(centre(a, sa), centre(b, sb), arrowstyle="-|>", mutation_scale=16,
                                     color="#555555", lw=1.4, connectionstyle="arc3,rad=0.0"))
    ax.text(0.2, 6.55, "samdistill: a run's path (blue), the parts a method is built from (orange), "
            "what uses the student (green)", fontsize=12.5, weight="bold")
    ax.text(0.2, 0.35, "Imports point down: cli -> methods / train / eval / deploy -> models / losses / data -> "
            "registry, config.\nA method never imports another method; train/ runs whatever method it is handed.",
            fontsize=9, color="#333333", va="bottom")
    ax.set_xlim(0, 14.3)
    ax.set_ylim(0.1, 6.9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
