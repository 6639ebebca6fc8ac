"""Plots (PNG, matplotlib's Agg backend; imported only when a plot is written)."""

from __future__ import annotations

from pathlib import Path


def plot_curves(
    curves: dict[str, list[tuple[float, float]]],
    path: Path,
    *,
    xlabel: str = "step",
    ylabel: str = "accuracy",
    title: str | None = None,
) -> None:
    """One line per label, from (x, y) points, written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120, layout="constrained")
    for label, points in curves.items():
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, label=label, marker="o" if len(points) < 12 else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path)
    plt.close(fig)
