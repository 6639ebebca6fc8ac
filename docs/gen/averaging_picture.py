"""The concepts page's picture: one large vector drags the mean; robust rules stay.

Left: 15 honest vectors in the plane and one Byzantine vector far away, with
what each rule returns. Right: the distance from each rule's output to the
honest mean as the Byzantine vector's norm grows (d = 1000, 15 honest + 1).
Every point is computed by byzance's own rules.

Run by the docs build (docs/gen/pages.py); by hand:
``python docs/gen/averaging_picture.py out.png``.
"""

from __future__ import annotations

import sys
from typing import BinaryIO

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import torch

import byzance.aggregators as agg

HONEST = 15
RULES = ("average", "median", "trimmed_mean", "geometric_median", "krum")
STYLE = {
    "average": ("tab:red", "X"),
    "median": ("tab:blue", "s"),
    "trimmed_mean": ("tab:cyan", "D"),
    "geometric_median": ("tab:green", "^"),
    "krum": ("tab:purple", "P"),
}


def _plane(ax: plt.Axes) -> None:
    g = torch.Generator().manual_seed(0)
    honest = torch.tensor([1.0, 1.0]) + 0.5 * torch.randn(HONEST, 2, generator=g)
    byzantine = torch.tensor([[16.0, -9.0]])
    grads = torch.cat([honest, byzantine])  # (16, 2)
    ax.scatter(*honest.T, s=18, c="0.6", label="honest vectors")
    ax.scatter(*byzantine.T, s=60, c="black", marker="*", label="Byzantine vector")
    ax.scatter(*honest.mean(0), s=120, facecolors="none", edgecolors="black", label="honest mean")
    for name in RULES:
        colour, marker = STYLE[name]
        out = agg.get(name)(grads, f=1)
        ax.scatter(*out, s=55, c=colour, marker=marker, label=name)
        if name == "average":
            ax.annotate(
                "the mean is dragged\ntowards the Byzantine vector",
                xy=(float(out[0]), float(out[1])),
                xytext=(5.0, 1.5),
                fontsize=8,
                arrowprops={"arrowstyle": "->", "color": colour},
            )
    ax.set_title("n = 16 vectors, f = 1 Byzantine")
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="lower left")


def _norm_sweep(ax: plt.Axes) -> None:
    d = 1000
    g = torch.Generator().manual_seed(1)
    honest = torch.randn(HONEST, d, generator=g)
    direction = torch.randn(d, generator=g)
    direction /= direction.norm()
    norms = torch.logspace(0, 8, 17)
    for name in RULES:
        colour, marker = STYLE[name]
        errors = []
        for norm in norms:
            grads = torch.cat([honest, (norm * direction)[None]])
            errors.append(float((agg.get(name)(grads, f=1) - honest.mean(0)).norm()))
        ax.loglog(norms, errors, color=colour, marker=marker, markersize=4, label=name)
    ax.set_xlabel("norm of the Byzantine vector")
    ax.set_ylabel("distance to the honest mean")
    ax.set_title(f"d = {d}: {HONEST} honest + 1 Byzantine")
    ax.legend(fontsize=7)


def draw(out: str | BinaryIO) -> None:
    """Write the two-panel PNG to ``out`` (a path or a binary file)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    _plane(left)
    _norm_sweep(right)
    fig.savefig(out, format="png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    draw(sys.argv[1] if len(sys.argv) > 1 else "averaging.png")
