"""Plots of the voting experiments (PNG, matplotlib's Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_poisoning(
    rows: Sequence[dict[str, Any]],
    attacks: Sequence[str],
    rules: Sequence[str],
    path: Path,
    title: str,
) -> None:
    """Attacked item's rank (top) and top-k overlap (bottom) against the fake-account fraction."""
    plt = _pyplot()
    fig, axes = plt.subplots(
        2, len(attacks), figsize=(4.2 * len(attacks), 7), dpi=110, squeeze=False
    )
    for col, attack in enumerate(attacks):
        for rule in rules:
            pts = sorted(
                (r["fraction"], r["rank"], r["overlap"])
                for r in rows
                if r["attack"] == attack and r["rule"] == rule
            )
            if not pts:
                continue
            xs = [100 * p[0] for p in pts]
            axes[0][col].plot(xs, [p[1] for p in pts], marker="o", label=rule)
            axes[1][col].plot(xs, [p[2] for p in pts], marker="o", label=rule)
        item = "buried competitor" if attack == "bury" else "pushed target"
        axes[0][col].set_title(f"{attack}: rank of the {item}")
        axes[0][col].set_yscale("log")
        axes[0][col].invert_yaxis() if attack != "bury" else None
        axes[1][col].set_title(f"{attack}: top-10 overlap with clean")
        axes[1][col].set_ylim(-0.05, 1.05)
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xlabel("fake accounts (% of users)")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_reputation(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Target rank against the fake-account fraction, unweighted (dashed) and weighted (solid)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    rules = list(dict.fromkeys(r["rule"] for r in rows))
    for i, rule in enumerate(rules):
        for weighted, style in ((False, "--"), (True, "-")):
            pts = sorted(
                (r["fraction"], r["rank"])
                for r in rows
                if r["rule"] == rule and r["weighted"] == weighted
            )
            label = f"{rule} ({'account age' if weighted else 'equal'} weights)"
            ax.plot(
                [100 * p[0] for p in pts],
                [p[1] for p in pts],
                style,
                marker="o",
                color=f"C{i}",
                label=label,
            )
    ax.set_yscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("new fake accounts (% of users)")
    ax.set_ylabel("rank of the pushed target")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_strategy(
    rows: Sequence[dict[str, Any]], predicted: dict[str, float], path: Path, title: str
) -> None:
    """Mean strategic gain alpha against n per rule; dashed: the large-n prediction."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    rules = list(dict.fromkeys(r["rule"] for r in rows))
    for i, rule in enumerate(rules):
        pts = sorted((r["n"], r["alpha_mean"]) for r in rows if r["rule"] == rule)
        ax.plot(
            [p[0] for p in pts],
            [max(p[1], 1e-4) for p in pts],
            marker="o",
            color=f"C{i}",
            label=rule,
        )
        if rule in predicted:
            ax.axhline(max(predicted[rule], 1e-4), color=f"C{i}", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of voters n")
    ax.set_ylabel("mean strategic gain alpha")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
