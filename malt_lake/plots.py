"""PNG charts for reports and asset metadata (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def loss_curves(curves: Mapping[str, Sequence[tuple[int, float]]], path: Path,
                title: str) -> Path:
    """One line per training stage: step against loss."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    for name, points in curves.items():
        if points:
            steps, losses = zip(*points, strict=True)
            ax.plot(steps, losses, marker="o", markersize=3, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def accuracy_intervals(systems: Sequence[tuple[str, float, float, float]],
                       differences: Sequence[tuple[str, float, float, float]], path: Path,
                       title: str) -> Path:
    """Two panels: (system, accuracy, low, high) as bars with interval whiskers, and
    (label, paired difference, low, high) as points with whiskers around a zero line."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.9), dpi=110,
                                      gridspec_kw={"width_ratios": [3, 2]})
    names = [s[0] for s in systems]
    means = [s[1] for s in systems]
    whiskers = [[m - s[2] for m, s in zip(means, systems, strict=True)],
                [s[3] - m for m, s in zip(means, systems, strict=True)]]
    bars = left.bar(names, means, yerr=whiskers, capsize=4, color="#4c72b0")
    for bar, mean in zip(bars, means, strict=True):
        left.annotate(f"{mean:.1%}", (bar.get_x() + bar.get_width() / 2, mean),
                      ha="center", va="bottom", fontsize=7, xytext=(8, 2),
                      textcoords="offset points")
    left.set_ylim(0, 1)
    left.set_ylabel("accuracy (95% CI)")
    left.set_title(title, fontsize=9)
    left.tick_params(axis="x", labelrotation=45, labelsize=7)
    left.grid(axis="y", alpha=0.3)
    labels = [d[0] for d in differences]
    deltas = [d[1] for d in differences]
    spans = [[m - d[2] for m, d in zip(deltas, differences, strict=True)],
             [d[3] - m for m, d in zip(deltas, differences, strict=True)]]
    rows = list(range(len(labels)))
    colors = ["#55a868" if d[2] > 0 else "#c44e52" if d[3] < 0 else "#8c8c8c"
              for d in differences]
    for row, delta, low, high, color in zip(rows, deltas, *spans, colors, strict=True):
        right.errorbar([delta], [row], xerr=[[low], [high]], fmt="o", color=color, capsize=4)
    right.axvline(0, color="black", linewidth=0.8)
    right.set_yticks(rows, labels, fontsize=7)
    right.invert_yaxis()
    right.set_xlabel("accuracy difference (95% CI)")
    right.set_title("paired differences (grey: within noise)", fontsize=9)
    right.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
