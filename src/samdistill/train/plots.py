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


def plot_arch_weights(rows: list[dict[str, Any]], space: Any, path: str | Path) -> None:
    """Architecture probabilities over search steps: one panel per searchable layer (ops), one per
    stage (widths), and the expected MACs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    n_layers = sum(space.layers)
    n_panels = n_layers + len(space.widths) + 1
    cols = 4
    nrows = (n_panels + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 2.6 * nrows), squeeze=False)
    x = [r["step"] for r in rows]
    panels = [(f"layer {li} ops", [(o, f"alpha{li}_{o}") for o in space.ops]) for li in range(n_layers)]
    panels += [(f"stage {si} width", [(str(w), f"beta{si}_{w}") for w in ws]) for si, ws in enumerate(space.widths)]
    for ax, (title, series) in zip(axes.flat, panels):
        for label, key in series:
            ax.plot(x, [r.get(key, float("nan")) for r in rows], label=label, lw=1)
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, 1)
    axes.flat[0].legend(fontsize=6, ncol=2)
    axes.flat[n_layers].legend(fontsize=7)
    ax = axes.flat[len(panels)]
    ax.plot(x, [r["expected_gmacs"] for r in rows], color="black")
    ax.set_title("expected encoder GMACs", fontsize=9)
    for extra in list(axes.flat)[len(panels) + 1:]:
        extra.axis("off")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
