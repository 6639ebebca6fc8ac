"""A run's ``summary.md`` and ``accuracy.png``, from its config and metric rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from byzance.runs.config import RunConfig


def write_report(config: RunConfig, rows: list[dict[str, Any]], out: Path) -> None:
    """``accuracy.png`` and ``summary.md`` for one run."""
    from byzance.runs.plots import plot_curves

    evals = [r for r in rows if "test_loss" in r]
    diverged = bool(rows) and rows[-1].get("diverged", False)
    metric = "accuracy" if any("accuracy" in r for r in evals) else "test_loss"
    label = f"{config.rule().name} vs {config.attack}"
    plot_curves(
        {label: [(r["step"], r[metric]) for r in evals]}, out / "accuracy.png", ylabel=metric
    )
    final = evals[-1] if evals else {}
    lines = [
        f"# Run: {label}",
        "",
        f"{config.dataset}, {config.model}, n={config.workers} workers, "
        f"{config.byzantine} Byzantine ({config.attack}), rule tolerates f={config.tolerated}, "
        f"{config.partition} partition, {config.steps} steps, seed {config.seed}."
        + (
            f" FedAvg rounds: {config.round_size} clients per round "
            f"({config.byzantine_sampling} Byzantine sampling), {config.local_steps} local "
            f"steps at lr {config.local_lr}."
            if config.algorithm == "fedavg"
            else ""
        ),
        "",
        "| metric | value |",
        "| --- | --- |",
    ]
    if diverged:
        lines.insert(
            4,
            f"**Diverged at step {rows[-1]['step']}**: "
            f"{rows[-1].get('reason', 'the model stopped being finite')}\n",
        )
    for key in ("accuracy", "test_loss", "optimum_distance"):
        if key in final:
            lines.append(f"| final {key} | {final[key]:.4f} |")
    if metric == "accuracy" and evals:
        lines.append(f"| best accuracy | {max(r['accuracy'] for r in evals):.4f} |")
    steps = [r for r in rows if "aggregation_ms" in r]
    if steps:
        mean_ms = sum(r["aggregation_ms"] for r in steps) / len(steps)
        lines.append(f"| mean aggregation time | {mean_ms:.2f} ms |")
        dropped = sum(r.get("nonfinite_dropped", 0) for r in steps)
        if dropped:
            lines.append(f"| non-finite inputs dropped (all steps) | {dropped} |")
        if "deviation" in steps[-1]:
            lines.append(f"| last deviation from honest mean | {steps[-1]['deviation']:.4g} |")
        if "honest_rejection_rate" in steps[-1]:
            rate = steps[-1]["honest_rejection_rate"]
            lines.append(f"| honest gradients rejected by the filter | {rate:.3f} |")
            lines.append(f"| honest gradients accepted by the filter | {1.0 - rate:.3f} |")
            if config.byzantine and "byzantine_acceptance_rate" in steps[-1]:
                byz = steps[-1]["byzantine_acceptance_rate"]
                lines.append(f"| Byzantine gradients accepted by the filter | {byz:.3f} |")
            lines.append(f"| simulated time | {steps[-1]['sim_time']:.1f} |")
        if "byzantine_sampled" in steps[-1]:
            sampled = [r["byzantine_sampled"] for r in steps]
            over = sum(bool(r["byzantine_over_f"]) for r in steps)
            lines.append(
                f"| Byzantine clients per round (mean, max) | {sum(sampled) / len(sampled):.2f}, "
                f"{max(sampled)} |"
            )
            lines.append(
                f"| rounds with more Byzantine clients than f={config.tolerated} | {over} of "
                f"{len(steps)} |"
            )
            skipped = sum(bool(r.get("skipped")) for r in steps)
            if skipped:
                lines.append(f"| rounds without an honest client (not applied) | {skipped} |")
        if "server_spread" in steps[-1]:
            lines.append(
                f"| last spread between honest servers | {steps[-1]['server_spread']:.4g} |"
            )
    (out / "summary.md").write_text("\n".join(lines) + "\n")
