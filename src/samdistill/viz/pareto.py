"""bench's ``pareto.png``: Dice against end-to-end latency and against encoder GMACs, one numbered marker
per model (explained in the legend), the Pareto front dashed. Reads only the rows of ``bench.json``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def _model_label(x: dict[str, Any]) -> str:
    """``run/student.pt (torch)`` for a path (its last two parts: the run names the file), the name for a
    registered model; from the string alone, so a bench.json from another machine plots the same."""
    p = Path(x["model"])
    zoom = f", zoom x{x['zoom']:g}" if x.get("zoom") else ""
    return f"{p.parent.name + '/' if p.parent.name else ''}{p.name} ({x['backend']}{zoom})"


def _number_points(ax, pts: list[tuple[int, float, float]], xlim, ylim) -> None:
    """One number label per group of points that would sit on top of each other ("2, 3"), offset up
    and right of the group's first point, so no two labels overlap the way full names did."""
    lx0, lx1 = math.log10(xlim[0]), math.log10(xlim[1])

    def norm(v: float, d: float) -> tuple[float, float]:
        return (math.log10(v) - lx0) / (lx1 - lx0), (d - ylim[0]) / (ylim[1] - ylim[0])

    groups: list[list[tuple[int, float, float]]] = []
    for pt in pts:
        u, w = norm(pt[1], pt[2])
        for g in groups:
            gu, gw = norm(g[0][1], g[0][2])
            if abs(u - gu) < 0.08 and abs(w - gw) < 0.08:
                g.append(pt)
                break
        else:
            groups.append([pt])
    for g in groups:
        ax.annotate(", ".join(str(i) for i, _, _ in g), (g[0][1], g[0][2]), xytext=(7, 7), textcoords="offset points",
                    fontsize=10, fontweight="bold", bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "0.6", "lw": 0.5})


def pareto_figure(rows: list[dict[str, Any]], title: str = "", threads: int | None = None, device: str = "cpu"):
    """Dice vs end-to-end latency and vs encoder GMACs (log axes with plain-number ticks), every model a
    numbered marker explained in the legend below, the Pareto front dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from samdistill.viz.plots import plain_log_ticks

    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osD^vPX*h<>p"
    style = [{"color": colours[i % len(colours)], "marker": markers[i % len(markers)]} for i in range(len(rows))]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    panels = [
        (axes[0], lambda x: x["latency_ms"]["end_to_end"], "end-to-end latency per image, ms (batch 1, log scale)",
         "Dice vs latency"),
        (axes[1], lambda x: x.get("encoder_gmacs"), "image encoder GMACs per image (log scale)",
         "Dice vs encoder compute (PyTorch models; ONNX rows have no MAC count)"),
    ]
    dices = [x["dice"] for x in rows if x.get("dice") is not None]
    lo, hi = (min(dices), max(dices)) if dices else (0.0, 1.0)
    pad = max((hi - lo) * 0.15, 0.01)
    ylim = (max(0.0, lo - pad), min(1.0, hi + pad * 1.6))  # more room on top for the number labels
    for ax, get, xlabel, ptitle in panels:
        pts = [(i + 1, float(get(x)), float(x["dice"])) for i, x in enumerate(rows)
               if get(x) is not None and get(x) > 0 and x.get("dice") is not None]
        for i, v, d in pts:
            ax.scatter(v, d, s=70, zorder=3, edgecolors="black", linewidths=0.6, **style[i - 1])
        front, best = [], -1.0
        for i, v, d in sorted(pts, key=lambda t: (t[1], -t[2])):  # no other model both cheaper and better
            if d > best:
                front.append((v, d))
                best = d
        if len(front) > 1:
            ax.plot(*zip(*front), ls="--", color="grey", lw=1, zorder=2, drawstyle="steps-post")
        if pts:
            vs = [v for _, v, _ in pts]
            xlim = (min(vs) / 1.6, max(vs) * 1.6)
            ax.set_xlim(*xlim)
            ax.set_ylim(*ylim)
            _number_points(ax, pts, xlim, ylim)
        ax.set_xscale("log")
        if pts:
            plain_log_ticks(ax.xaxis)
        ax.set(xlabel=xlabel, ylabel="Dice (tight box, original resolution)", title=ptitle)
        ax.title.set_fontsize(10)
        ax.grid(alpha=0.3, which="both")
    handles = []
    for i, x in enumerate(rows):
        g = x.get("encoder_gmacs")
        cost = f"{x['latency_ms']['end_to_end']:.0f} ms, " + (f"{g:.2f} GMACs" if g is not None else "MACs not counted")
        dice = "n/a" if x.get("dice") is None else f"{x['dice']:.4f}"
        handles.append(Line2D([], [], ls="", markeredgecolor="black", markersize=8, **style[i],
                              label=f"{i + 1}  {_model_label(x)}: Dice {dice}, {cost}"))
    handles.append(Line2D([], [], ls="--", color="grey", label="Pareto front (no model both cheaper and more accurate)"))
    ncol = 1 if len(handles) <= 4 else 2
    nlines = math.ceil(len(handles) / ncol)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    dev = "CPU" if device == "cpu" else device
    where = f"{dev}, {threads} threads" if threads else dev
    fig.suptitle(f"{title}: Dice vs cost ({where}, tight-box prompt)" if title else f"Dice vs cost ({where})")
    fig.tight_layout(rect=(0, min(0.5, 0.045 * nlines + 0.02), 1, 1))
    return fig


def pareto_plot(rows: list[dict[str, Any]], path: Path, title: str = "", threads: int | None = None,
                device: str = "cpu") -> None:
    """``pareto_figure`` saved as a PNG at ``path``."""
    import matplotlib.pyplot as plt

    fig = pareto_figure(rows, title, threads=threads, device=device)
    fig.savefig(path, dpi=100)
    plt.close(fig)
