"""One training run of the simulator: build it from a config, train, write its directory.

Output directory: see :mod:`byzance.runs.rundir`. A killed run resumes from
its last checkpoint to the same numbers as an uninterrupted one (every random
draw comes from a generator saved in the checkpoint), and its ``elapsed_s``
continues from the checkpoint's, so a resumed run's time is the sum of its
segments.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from byzance.devices import peak_memory_mib
from byzance.runs.build import build_simulator, build_training, with_optimum_distance
from byzance.runs.config import ConfigError, RunConfig, load, validate
from byzance.runs.report import write_report
from byzance.runs.rundir import (
    CheckpointError,
    RunDirectory,
    drop_metrics_after,
    read_metrics,
    save_atomically,
    write_config,
    write_csv,
)
from byzance.sim import TrainingDivergedError

TIME_KEYS = ("aggregation_ms", "elapsed_s")
Progress = Callable[[int, dict[str, Any]], None]

__all__ = [
    "TIME_KEYS",
    "CheckpointError",
    "Run",
    "RunResult",
    "drop_metrics_after",
    "is_finished",
    "read_metrics",
    "resume",
    "run_or_resume",
    "save_atomically",
    "train",
    "write_config",
    "write_csv",
    "write_report",
]


@dataclass(frozen=True)
class RunResult:
    """What a finished run reports."""

    out_dir: Path
    final: dict[str, Any]
    best_accuracy: float | None
    steps: int
    seconds: float


class Run:
    """A configured simulator and the files of its output directory."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.dir = RunDirectory(config.out_dir)
        self.out = self.dir.out
        self.data, shards, self.model, optimizer = build_training(config)
        self.sim = build_simulator(config, self.data, shards, self.model, optimizer)
        self.device = next(self.model.parameters()).device

    # -- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, elapsed_s: float) -> None:
        self.dir.save_checkpoint(self.config, self.sim.state_dict(), elapsed_s)

    def restore(self) -> tuple[int, float]:
        """Load the checkpoint and drop metric rows written after it; (its step, its time)."""
        elapsed = self.dir.restore(self.config, self.sim, drop_metrics=True)
        return self.sim.step_count, elapsed

    # -- training ------------------------------------------------------------------------
    def _lr(self) -> float:
        optimizer = getattr(self.sim, "optimizer", None)
        return optimizer.param_groups[0]["lr"] if optimizer is not None else self.config.lr

    def evaluate(self) -> dict[str, float]:
        result = self.sim.evaluate(self.data.x_test, self.data.y_test)
        return with_optimum_distance(result, self.model, self.data)

    def train(
        self,
        *,
        resume: bool = False,
        overwrite: bool = False,
        progress: Progress | None = None,
    ) -> RunResult:
        """Train to ``config.steps``: a new run (``resume=False``) or the directory's run."""
        start_step, before = 0, 0.0
        if resume:
            self.dir.check_usable()
            if self.dir.checkpoint_path.exists():
                start_step, before = self.restore()
                write_config(self.config, self.dir.config_path)  # perhaps for more steps
            else:  # killed before its first checkpoint: start again, in the same directory
                self.dir.claim(self.config, overwrite=True)
        else:
            self.dir.claim(self.config, overwrite=overwrite)
        started = time.perf_counter()
        cfg = self.config
        with self.dir.metrics_path.open("a") as log:
            for step in range(start_step + 1, cfg.steps + 1):
                try:
                    stats = self.sim.step()
                except TrainingDivergedError as err:
                    row = {"step": step, "diverged": True, "reason": str(err), **self.evaluate()}
                    log.write(json.dumps(row) + "\n")
                    if progress is not None:
                        progress(cfg.steps, row)
                    break
                row: dict[str, Any] = {"step": step, "lr": self._lr(), **_stats_row(stats)}
                elapsed = before + time.perf_counter() - started
                row["elapsed_s"] = elapsed
                peak = peak_memory_mib(self.device)
                if peak is not None:
                    row["peak_memory_mib"] = peak
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    row.update(self.evaluate())
                log.write(json.dumps(row) + "\n")
                log.flush()
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    self.save_checkpoint(elapsed)
                if progress is not None:
                    progress(step, row)
        rows = read_metrics(self.dir.metrics_path)
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
    config: RunConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> RunResult:
    """Train one run described by ``config`` (validated again here) into ``config.out_dir``.

    A directory holding another run is refused unless ``overwrite``.
    """
    return Run(validate(config)).train(resume=resume, overwrite=overwrite, progress=progress)


def is_finished(config: RunConfig) -> bool:
    """Whether the run in ``config.out_dir`` completed (all steps, or diverged) and was reported."""
    out = Path(config.out_dir)
    rows = read_metrics(out / "metrics.jsonl")
    if not (out / "summary.md").exists() or not rows:
        return False
    return rows[-1]["step"] == config.steps or bool(rows[-1].get("diverged", False))


def run_or_resume(
    config: RunConfig, *, threads: int | None = None, replace: bool = False
) -> list[dict[str, Any]]:
    """Make sure the run is complete: skip it if finished, resume it if interrupted, else train.

    Idempotent, for sweeps; returns the run's metric rows. A directory holding
    a run of another config, or a longer one, is refused, or with ``replace``
    trained over from scratch. ``threads`` sets torch's threads (1 when runs go
    one per core).
    """
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    directory = RunDirectory(config.out_dir)
    if directory.holds_a_run() and not _same_run(directory, config):
        if not replace:
            raise ConfigError(
                f"{str(directory.out)!r} holds a run of another config; remove it to run this one."
            )
        train(config, overwrite=True)
    elif not is_finished(config):
        train(config, resume=directory.holds_a_run())
    return read_metrics(directory.metrics_path)


def _same_run(directory: RunDirectory, config: RunConfig) -> bool:
    """The directory holds ``config``'s run, no further than ``config.steps``."""
    rows = read_metrics(directory.metrics_path)
    longer = bool(rows) and rows[-1]["step"] > config.steps
    return directory.saved_config_matches(config) and not longer


def resume(out_dir: str | Path, *, progress: Progress | None = None) -> RunResult:
    """Continue the run in ``out_dir`` from its last checkpoint (or restart it if it has none)."""
    out = Path(out_dir)
    if not (out / "config.toml").is_file():
        raise ConfigError(f"{str(out)!r} holds no run to resume: config.toml is missing.")
    config = load(out / "config.toml", {"out_dir": str(out)})
    return Run(config).train(resume=True, progress=progress)
