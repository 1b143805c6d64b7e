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


def accuracy_bars(rows: Sequence[tuple[str, float, float]], path: Path, title: str) -> Path:
    """(system, mean accuracy, std) as bars with error bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    names = [r[0] for r in rows]
    means = [r[1] for r in rows]
    stds = [r[2] for r in rows]
    bars = ax.bar(names, means, yerr=stds, capsize=4, color="#4c72b0")
    for bar, mean in zip(bars, means, strict=True):
        ax.annotate(f"{mean:.1%}", (bar.get_x() + bar.get_width() / 2, mean),
                    ha="center", va="bottom", fontsize=8, xytext=(0, 3),
                    textcoords="offset points")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
