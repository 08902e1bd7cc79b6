"""Training curves (loss, embedding MSE and validation Dice per epoch, phases labelled) as a PNG."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# Loss terms that only involve the image encoder. A phase whose training terms are all among these
# (KD SAM / NAS stage 1) has no decoder target: the validation Dice it logs is that of the decoder as it
# was initialised (copied from the teacher) on the student's embedding, often ~0 until the embedding is
# close. The plot draws that Dice faded and says so, and shows the embedding MSE the phase does optimise.
EMBEDDING_TERMS = frozenset({"loss", "mse", "perceptual", "sal_embedding"})


def plain_log_ticks(axis) -> None:
    """Ticks on a log ``axis`` (``ax.xaxis`` / ``ax.yaxis``) as plain numbers ("100", "0.9") instead of
    matplotlib's default mantissa x 10^k labels, which collide on short ranges: the 1-2-5 values in the
    view, or, when fewer than 3 of those fall in it (less than a decade), evenly spaced round values."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

    lo, hi = sorted(axis.get_view_interval())
    if not (lo > 0 and hi > lo):
        return
    ticks = [m * 10.0**k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
             for m in (1, 2, 5) if lo <= m * 10.0**k <= hi]
    if len(ticks) > 9:
        ticks = [t for t in ticks if f"{t:g}"[0] == "1"]
    if len(ticks) < 3:
        ticks = [t for t in MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi) if lo <= t <= hi]
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.6g}"))
    axis.set_minor_formatter(NullFormatter())


def _phase_spans(history: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """``(phase, first, last)`` epoch numbers (1-based, counted over all phases) of each phase in order."""
    spans: list[tuple[str, int, int]] = []
    for i, h in enumerate(history, 1):
        if spans and spans[-1][0] == h["phase"]:
            spans[-1] = (h["phase"], spans[-1][1], i)
        else:
            spans.append((h["phase"], i, i))
    return spans


def encoder_only(rows: list[dict[str, Any]]) -> bool:
    """Whether these rows (one phase) trained only embedding terms (see EMBEDDING_TERMS)."""
    terms = {k[len("train_"):] for r in rows for k in r if k.startswith("train_") and k != "train_seconds"}
    return bool(terms) and terms <= EMBEDDING_TERMS


def _series(history: list[dict[str, Any]], key: str, lo: int, hi: int) -> tuple[list[int], list[float]]:
    pts = [(i, float(history[i - 1][key])) for i in range(lo, hi + 1)
           if history[i - 1].get(key) not in (None, "") and history[i - 1][key] == history[i - 1][key]]
    return [i for i, _ in pts], [v for _, v in pts]


def curves_figure(history: list[dict[str, Any]]):
    """The figure :func:`plot_curves` saves: training loss, embedding MSE to the teacher (when logged) and
    validation Dice, against the epoch counted over all phases, each phase shaded and named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    from matplotlib.transforms import blended_transform_factory

    spans = _phase_spans(history)
    enc_only = {name: encoder_only([h for h in history if h["phase"] == name]) for name, _, _ in spans}
    has_mse = any(k in h for h in history for k in ("val_mse", "train_mse"))
    n = 3 if has_mse else 2
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.8))
    loss_ax, dice_ax = axes[0], axes[-1]
    mse_ax = axes[1] if has_mse else None
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (name, lo, hi) in enumerate(spans):
        c = colours[k % len(colours)]
        loss_ax.plot(*_series(history, "train_loss", lo, hi), marker="o", ms=3, color=c, label=f"{name}")
        if mse_ax is not None:
            mse_ax.plot(*_series(history, "val_mse", lo, hi), marker="o", ms=3, color=c, label=f"{name} validation")
            mse_ax.plot(*_series(history, "train_mse", lo, hi), ls="--", color=c, alpha=0.7, label=f"{name} train")
        if enc_only[name]:
            dice_ax.plot(*_series(history, "val_dice", lo, hi), marker="x", ms=4, ls=":", color="grey",
                         label=f"{name} (decoder not trained yet)")
        else:
            dice_ax.plot(*_series(history, "val_dice", lo, hi), marker="o", ms=3, color=c, label=f"{name}")
    loss_ax.set(title="training loss (each phase its own objective)", ylabel="loss (log)")
    loss_ax.set_yscale("log")
    if mse_ax is not None:
        mse_ax.set(title="image embedding MSE to the teacher", ylabel="MSE (log)")
        mse_ax.set_yscale("log")
    dice_ax.set(title="validation Dice (tight box, input frame)", ylabel="Dice", ylim=(0, 1.02))
    x_max = len(history)
    for ax in axes:
        ax.set_title(ax.get_title(), pad=14)  # room for the phase names
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (counted over all phases)")
        ax.set_xlim(0.5, x_max + 0.5)
        ax.grid(alpha=0.3)
        top = blended_transform_factory(ax.transData, ax.transAxes)
        for k, (name, lo, hi) in enumerate(spans):
            if k:
                ax.axvline(lo - 0.5, color="grey", ls="--", lw=1)
            if k % 2:
                ax.axvspan(lo - 0.5, hi + 0.5, color="grey", alpha=0.08, lw=0)
            # above the plotting area (under the title), so no curve runs through the phase names
            ax.text((lo + hi) / 2, 1.01, name + (" (encoder)" if enc_only[name] else ""), transform=top,
                    ha="center", va="bottom", fontsize=8, color="dimgrey")
    for ax in (loss_ax, mse_ax):
        if ax is not None:
            plain_log_ticks(ax.yaxis)
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    notes = [f"{name} trains the image encoder only (target: the teacher's embedding), so its Dice is that of the "
             "decoder as initialised on the student's embedding" for name, _, _ in spans if enc_only[name]]
    if notes:
        fig.text(0.5, 0.01, "; ".join(notes) + ".", ha="center", va="bottom", fontsize=8, color="dimgrey", wrap=True)
    fig.tight_layout(rect=(0, 0.05 if notes else 0, 1, 1))
    return fig


def plot_curves(history: list[dict[str, Any]], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    fig = curves_figure(history)
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


def plot_validation_curves(curves: dict[str, list[tuple[int, float]]], path: str | Path, *, title: str = "",
                           ylabel: str = "validation Dice", shade_from: float | None = None) -> None:
    """Validation curves against the optimiser step (``{label: [(step, value), ...]}``, one line each) as a
    PNG; ``shade_from``: a step from which the plot is shaded to the end (e.g. the window a convergence rule
    reads). :func:`plot_curves` draws a run's own history per epoch; this compares runs on a step axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for label, pts in curves.items():
        ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o", ms=3, label=label)
    if shade_from is not None:
        hi = max((s for pts in curves.values() for s, _ in pts), default=shade_from)
        ax.axvspan(shade_from, hi, color="grey", alpha=0.12, lw=0, label=f"from step {shade_from:g} (rule's window)")
    ax.set(title=title, xlabel="optimiser step", ylabel=ylabel, ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
