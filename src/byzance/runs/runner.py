"""One training run: build everything from a config, train, write metrics, checkpoints, report.

Output directory: ``config.toml`` (the resolved config), ``metrics.jsonl``
(one row per step), ``metrics.csv``, ``accuracy.png``, ``summary.md`` and
``checkpoint.pt``. A killed run resumes from its last checkpoint to the same
numbers as an uninterrupted one (every random draw comes from a generator
saved in the checkpoint).
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json
import os
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from byzance import aggregators, attacks, models
from byzance.runs.config import ConfigError, RunConfig, load, validate
from byzance.sim import SyncSimulator, TrainingDivergedError, flatten_params
from byzance.sim.asynchronous import AsyncSimulator
from byzance.sim.servers import MultiServerSimulator

TIME_KEYS = ("aggregation_ms", "elapsed_s")
Progress = Callable[[int, dict[str, Any]], None]


@dataclass(frozen=True)
class RunResult:
    """What a finished run reports."""

    out_dir: Path
    final: dict[str, Any]
    best_accuracy: float | None
    steps: int
    seconds: float


def bind_generators(rule: aggregators.Rule, generator: torch.Generator) -> aggregators.Rule:
    """Give randomized stages (bucketing) the run's generator, unless seeded explicitly."""
    stages = getattr(rule, "stages", None)
    if not stages:
        return rule
    bound = []
    for stage in stages:
        accepts = "generator" in inspect.signature(stage.impl).parameters
        if accepts and stage.defaults.get("seed") is None and "generator" not in stage.defaults:
            stage = stage.partial(generator=generator)
        bound.append(stage)
    return aggregators.compose(*bound)


def make_scheduler(config: RunConfig, optimizer: torch.optim.Optimizer):
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
    if config.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step_size, config.lr_gamma)
    return None


def build_training(
    config: RunConfig,
) -> tuple[Any, list[torch.Tensor], torch.nn.Module, torch.optim.SGD]:
    """What every run builds from its config and seed, identically in every process.

    Returns the data set, one shard of training indices per worker, the model
    (initialized from the seed) and the server's SGD optimizer over it.
    """
    from byzance.data import load as load_dataset
    from byzance.data import partition

    data = load_dataset(
        config.dataset,
        seed=config.seed,
        test_fraction=config.test_fraction,
        **config.dataset_params,
    )
    shards = partition(
        data.y_train,
        config.workers,
        config.partition if data.task == "classification" else "iid",
        alpha=config.alpha,
        classes_per_worker=config.classes_per_worker,
        seed=config.seed,
    )
    torch.manual_seed(config.seed)
    model = models.build(config.model, data.input_shape, data.num_classes, **config.model_params)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    return data, shards, model, optimizer


def with_optimum_distance(
    result: dict[str, float], model: torch.nn.Module, data: Any
) -> dict[str, float]:
    """``result`` plus, for a task with a known optimum, the model's distance to it."""
    if data.optimum is not None:
        theta = flatten_params(model).double()
        result["optimum_distance"] = float((theta - data.optimum).norm())
    return result


class Run:
    """A configured simulator and the files of its output directory."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.out = Path(config.out_dir)
        self.data, shards, self.model, optimizer = build_training(config)
        self.rule_gen = torch.Generator().manual_seed(config.seed * 1_000_003 + 3)
        rule = bind_generators(config.rule(), self.rule_gen)
        attack = None if config.attack == "none" else attacks.get(config.attack)
        l2 = self.data.l2 if config.l2 < 0 else config.l2
        common = dict(
            f=config.tolerated,
            byzantine=config.byzantine if attack is not None else 0,
            attack=attack,
            attack_params=config.attack_params,
            batch_size=config.batch_size,
            l2=l2,
            task=self.data.task,
            num_classes=self.data.num_classes,
            seed=config.seed,
        )
        data = (self.model, self.data.x_train, self.data.y_train, shards)
        # Honest workers' delay rates: the last slow_workers ones are slow.
        honest = config.workers - common["byzantine"]
        slow = min(config.slow_workers, honest)
        rates = [1.0] * (honest - slow) + [config.slow_rate] * slow
        if config.mode == "async":
            self.sim = AsyncSimulator(
                *data,
                **common,
                optimizer=optimizer,
                rates=rates,
                byzantine_rate=config.byzantine_rate,
                kardam=config.kardam,
                window=config.kardam_window,
                max_rejections=config.kardam_max_rejections,
                staleness=config.staleness,
                staleness_beta=config.staleness_beta,
            )
        elif config.servers > 1:
            self.sim = MultiServerSimulator(
                *data,
                **common,
                rule=rule,
                servers=config.servers,
                byzantine_servers=config.byzantine_servers,
                server_rule=aggregators.get(config.server_rule),
                server_attack=config.server_attack,
                exchange_every=config.exchange_every,
                lr=config.lr,
            )
        else:
            self.sim = SyncSimulator(
                *data,
                **common,
                rates=rates if slow else None,
                rule=rule,
                optimizer=optimizer,
                scheduler=make_scheduler(config, optimizer),
                worker_momentum=config.worker_momentum,
            )

    # -- files ---------------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        state = {"sim": self.sim.state_dict(), "rule_gen": self.rule_gen.get_state()}
        save_atomically(state, self.checkpoint_path)

    def restore(self) -> int:
        """Load the checkpoint and drop metric rows written after it; returns its step."""
        state = torch.load(self.checkpoint_path, weights_only=False)
        self.sim.load_state_dict(state["sim"])
        self.rule_gen.set_state(state["rule_gen"])
        step = self.sim.step_count
        drop_metrics_after(self.metrics_path, step)
        return step

    # -- training ------------------------------------------------------------------------
    def _lr(self) -> float:
        optimizer = getattr(self.sim, "optimizer", None)
        return optimizer.param_groups[0]["lr"] if optimizer is not None else self.config.lr

    def evaluate(self) -> dict[str, float]:
        result = self.sim.evaluate(self.data.x_test, self.data.y_test)
        return with_optimum_distance(result, self.model, self.data)

    def train(self, *, resume: bool = False, progress: Progress | None = None) -> RunResult:
        self.out.mkdir(parents=True, exist_ok=True)
        start_step = 0
        if resume and self.checkpoint_path.exists():
            start_step = self.restore()
        else:
            write_config(self.config, self.out / "config.toml")
            self.metrics_path.write_text("")
        started = time.perf_counter()
        cfg = self.config
        with self.metrics_path.open("a") as log:
            for step in range(start_step + 1, cfg.steps + 1):
                try:
                    stats = self.sim.step()
                except TrainingDivergedError:
                    row = {"step": step, "diverged": True, **self.evaluate()}
                    log.write(json.dumps(row) + "\n")
                    if progress is not None:
                        progress(cfg.steps, row)
                    break
                row: dict[str, Any] = {"step": step, "lr": self._lr(), **_stats_row(stats)}
                row["elapsed_s"] = time.perf_counter() - started
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    row.update(self.evaluate())
                log.write(json.dumps(row) + "\n")
                log.flush()
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    self.save_checkpoint()
                if progress is not None:
                    progress(step, row)
        rows = read_metrics(self.metrics_path)
        write_csv(rows, self.out / "metrics.csv")
        write_report(self.config, rows, self.out)
        accuracies = [r["accuracy"] for r in rows if r.get("accuracy") is not None]
        return RunResult(
            out_dir=self.out,
            final=rows[-1] if rows else {},
            best_accuracy=max(accuracies) if accuracies else None,
            steps=cfg.steps,
            seconds=time.perf_counter() - started,
        )


def _stats_row(stats: Any) -> dict[str, Any]:
    """A simulator's step statistics as metric columns (seconds become milliseconds)."""
    row = dataclasses.asdict(stats)
    row["aggregation_ms"] = 1e3 * row.pop("aggregation_seconds", 0.0)
    return row


def train(
    config: RunConfig, *, resume: bool = False, progress: Progress | None = None
) -> RunResult:
    """Train one run described by ``config`` (validated again here)."""
    return Run(validate(config)).train(resume=resume, progress=progress)


def is_finished(config: RunConfig) -> bool:
    """Whether the run in ``config.out_dir`` completed (all steps, or diverged) and was reported."""
    out = Path(config.out_dir)
    rows = read_metrics(out / "metrics.jsonl")
    if not (out / "summary.md").exists() or not rows:
        return False
    return rows[-1]["step"] == config.steps or bool(rows[-1].get("diverged", False))


def run_or_resume(config: RunConfig, *, threads: int | None = None) -> list[dict[str, Any]]:
    """Make sure the run is complete: skip it if finished, resume it if interrupted, else train.

    Idempotent, for sweeps; returns the run's metric rows. ``threads`` sets
    torch's threads (1 when runs go one per core).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    out = Path(config.out_dir)
    if not is_finished(config):
        train(config, resume=(out / "checkpoint.pt").exists())
    return read_metrics(out / "metrics.jsonl")


def resume(out_dir: str | Path, *, progress: Progress | None = None) -> RunResult:
    """Continue the run in ``out_dir`` from its last checkpoint (or restart it if it has none)."""
    out = Path(out_dir)
    if not (out / "config.toml").is_file():
        raise ConfigError(f"{str(out)!r} holds no run to resume: config.toml is missing.")
    config = load(out / "config.toml", {"out_dir": str(out)})
    return Run(config).train(resume=True, progress=progress)


# -- files -----------------------------------------------------------------------------------
def write_config(config: RunConfig, path: Path) -> None:
    """The resolved config as TOML (read back by :func:`~byzance.runs.config.load`)."""
    import tomli_w

    path.write_text(tomli_w.dumps(config.to_dict()))
    tomllib.loads(path.read_text())  # what we write must load


def save_atomically(state: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a kill never leaves half a checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def drop_metrics_after(path: Path, step: int) -> None:
    """Keep the rows of metrics.jsonl up to ``step`` (a resumed run rewrites the rest)."""
    kept = [r for r in read_metrics(path) if r["step"] <= step]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl file (a torn last line, from a kill, is ignored)."""
    rows = []
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """The metrics as CSV, one column per key seen in any row."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


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
        f"{config.partition} partition, {config.steps} steps, seed {config.seed}.",
        "",
        "| metric | value |",
        "| --- | --- |",
    ]
    if diverged:
        lines.insert(
            4,
            f"**Diverged at step {rows[-1]['step']}**: the model's parameters stopped being finite.\n",
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
        if "deviation" in steps[-1]:
            lines.append(f"| last deviation from honest mean | {steps[-1]['deviation']:.4g} |")
        if "honest_rejection_rate" in steps[-1]:
            rate = steps[-1]["honest_rejection_rate"]
            lines.append(f"| honest gradients rejected by the filter | {rate:.3f} |")
            lines.append(f"| simulated time | {steps[-1]['sim_time']:.1f} |")
        if "server_spread" in steps[-1]:
            lines.append(
                f"| last spread between honest servers | {steps[-1]['server_spread']:.4g} |"
            )
    (out / "summary.md").write_text("\n".join(lines) + "\n")
