"""Training curves (loss and validation Dice per epoch) as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_curves(history: list[dict[str, Any]], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    x = list(range(1, len(history) + 1))
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(x, [h.get("train_loss", float("nan")) for h in history], marker="o")
    a.set_yscale("log")
    a.set_title("train loss")
    b.plot(x, [h.get("val_dice", float("nan")) for h in history], marker="o", color="tab:green")
    b.set_title("validation Dice (input frame, tight box)")
    for ax in (a, b):
        ax.set_xlabel("epoch (all phases)")
        ax.grid(alpha=0.3)
    phases = [h["phase"] for h in history]
    for i in range(1, len(phases)):
        if phases[i] != phases[i - 1]:
            for ax in (a, b):
                ax.axvline(i + 0.5, color="grey", ls="--")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
