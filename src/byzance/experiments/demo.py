"""The main job: train on the MNIST digits under attack, every rule against every attack.

n = 20 workers, f = 4 Byzantine; rules average, krum, median, trimmed_mean
and nnm + trimmed_mean; attacks none, large_norm, sign_flip and alie. Each run
is a normal training run in its own directory (finished runs are not redone);
runs go in parallel worker processes. The story it shows: averaging collapses
under a single large vector, robust rules hold, and ALIE hurts some robust
rules too.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from byzance.runs.config import RunConfig, validate

DEMO_RULES = ("average", "krum", "median", "trimmed_mean", "nnm>trimmed_mean")
DEMO_ATTACKS = ("none", "large_norm", "sign_flip", "alie")


def demo_configs(out_dir: Path, *, steps: int = 200, seed: int = 0) -> list[RunConfig]:
    """One config per (rule, attack), each writing to its own subdirectory of ``out_dir``."""
    base = RunConfig(
        dataset="mnist5k",
        model="mlp",
        workers=20,
        byzantine=4,
        steps=steps,
        batch_size=32,
        lr=0.1,
        worker_momentum=0.9,
        eval_every=max(steps // 10, 1),
        checkpoint_every=steps,
        seed=seed,
    )
    configs = []
    for rule in DEMO_RULES:
        for attack in DEMO_ATTACKS:
            name = f"{rule.replace('>', '+')}__{attack}"
            cfg = replace(base, aggregator=rule, attack=attack, out_dir=str(out_dir / name))
            configs.append(validate(cfg))
    return configs


def _run_one(config: RunConfig) -> None:
    from byzance.runs.runner import run_or_resume

    run_or_resume(config, threads=1, replace=True)  # one process per core


def run_demo(
    out_dir: Path,
    *,
    steps: int = 200,
    jobs: int | None = None,
    seed: int = 0,
    on_done: Callable[[str, str, dict[str, Any]], None] | None = None,
) -> dict[tuple[str, str], dict[str, Any]]:
    """Run (or reuse) every demo run; returns the final metrics row per (rule, attack).

    The runs go through the grid's pool: the directory is locked against a
    second demo, the workers die with this process, and Ctrl-C stops them.
    """
    from byzance.experiments.grid_pool import grid_lock, run_in_pool
    from byzance.runs.runner import read_metrics

    configs = demo_configs(out_dir, steps=steps, seed=seed)
    results: dict[tuple[str, str], dict[str, Any]] = {}

    def done(config: RunConfig) -> None:
        final = read_metrics(Path(config.out_dir) / "metrics.jsonl")[-1]
        results[(config.rule().name, config.attack)] = final
        if on_done is not None:
            on_done(config.rule().name, config.attack, final)

    out_dir.mkdir(parents=True, exist_ok=True)
    with grid_lock(out_dir):
        run_in_pool(
            _run_one,
            [(c, c) for c in configs],
            jobs=jobs or multiprocessing.cpu_count(),
            on_done=done,
        )
    write_demo_plot(out_dir, configs)
    return results


def write_demo_plot(out_dir: Path, configs: list[RunConfig]) -> Path:
    """Accuracy curves, one panel per attack, one line per rule: ``out_dir/accuracy.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from byzance.runs.runner import read_metrics

    fig, axes = plt.subplots(1, len(DEMO_ATTACKS), figsize=(4 * len(DEMO_ATTACKS), 3.6), dpi=110)
    for ax, attack in zip(axes, DEMO_ATTACKS, strict=True):
        for cfg in configs:
            if cfg.attack != attack:
                continue
            rows = [r for r in read_metrics(Path(cfg.out_dir) / "metrics.jsonl") if "accuracy" in r]
            ax.plot([r["step"] for r in rows], [r["accuracy"] for r in rows], label=cfg.rule().name)
        ax.set_title(f"attack: {attack}")
        ax.set_xlabel("step")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[-1].legend(fontsize=8)
    fig.suptitle("MNIST digits, n = 20 workers, f = 4 Byzantine")
    fig.tight_layout()
    path = out_dir / "accuracy.png"
    fig.savefig(path)
    plt.close(fig)
    return path
