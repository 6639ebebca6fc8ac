"""A distributed run from a config: process group, roles, outputs, checkpoints.

Started once per process by torchrun (``torchrun --nproc-per-node 5 -m
byzance.distributed --config run.toml``), which sets RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT. The reporter (rank 0 with a parameter server; the first honest rank
when decentralized) writes the simulator's outputs into ``out_dir``:
``config.toml``, ``metrics.jsonl`` / ``metrics.csv`` (with the distributed
columns ``arrived``, ``missing``, ``crashed``, ``step_ms``), ``accuracy.png``,
``summary.md`` and ``checkpoint.pt``; decentralized, every rank that keeps a
model also writes its final parameters to ``params-rank{r}.pt``. ``--resume`` continues from the
checkpoint; every rank reads it, so ``out_dir`` must be visible to all ranks
(one machine, or a shared file system). Workers' momentum (``worker_momentum``)
is checkpointed by the reporter, which receives every worker's momentum each
step; a rank whose vector did not reach it at the checkpoint's step restarts
its momentum from zero. A new run refuses a directory holding another run
(``--overwrite`` replaces it).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from byzance.distributed.backend import init_distributed
from byzance.distributed.node import Node
from byzance.distributed.sharded_loop import run_sharded
from byzance.distributed.topologies import (
    Membership,
    run_decentralized,
    run_server,
    run_worker,
)
from byzance.runs.config import ConfigError, RunConfig, validate
from byzance.runs.report import write_report
from byzance.runs.rundir import (
    RunDirectory,
    read_metrics,
    write_config,
    write_csv,
)
from byzance.sim import flatten_params


def init_process_group(timeout_s: float = 1800.0, device: str = "cpu") -> tuple[int, int]:
    """Join the process group torchrun described in the environment; returns (rank, world).

    The backend follows the run's device (:func:`~byzance.distributed.backend.backend_for`:
    gloo on the CPU, NCCL for CUDA tensors beside gloo for host ones). The frames
    travel with point-to-point operations on gloo (host tensors) whatever the
    device: models on a GPU send their flat vectors through host memory, and
    several ranks may share a GPU.
    """
    missing = [
        k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ
    ]
    if missing and not dist.is_initialized():
        raise RuntimeError(
            f"byzance dist runs under torchrun (missing {', '.join(missing)} in the environment): "
            "`torchrun --nproc-per-node 5 -m byzance.distributed --config run.toml`, or on one machine "
            "`byzance launch --nproc 5 --config run.toml`."
        )
    init_distributed(device, timeout_s=timeout_s, one_rank_per_gpu=False)
    return dist.get_rank(), dist.get_world_size()


class Reporter:
    """The metric rows, evaluations and checkpoints of the run (written by one rank)."""

    def __init__(self, node: Node, out: Path, elapsed_before: float = 0.0) -> None:
        self.node, self.out, self.config = node, out, node.config
        self.dir = RunDirectory(out)
        self.started = time.perf_counter() - elapsed_before  # a resumed run's time adds up
        self.last = time.perf_counter()
        self.log = (out / "metrics.jsonl").open("a")

    def __call__(self, step: int, row: dict[str, Any]) -> None:
        if row.get("diverged"):
            row.update(self.node.evaluate())
            print(f"[byzance dist] step {step}: diverged ({row.get('reason', 'not finite')})")
            self.log.write(json.dumps(row) + "\n")
            self.log.flush()
            return
        now = time.perf_counter()
        row["step_ms"] = 1e3 * (now - self.last)
        self.last = now
        row["elapsed_s"] = now - self.started
        cfg = self.config
        if step % cfg.eval_every == 0 or step == cfg.steps:
            row.update(self.node.evaluate())
            shown = {k: row[k] for k in ("loss", "accuracy", "test_loss", "arrived") if k in row}
            print(f"[byzance dist] step {step}/{cfg.steps} {shown}", flush=True)
        self.log.write(json.dumps(row) + "\n")
        self.log.flush()
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            self.dir.save_checkpoint(self.config, self.node.state_dict(), row["elapsed_s"])

    def close(self, members: Membership) -> None:
        self.log.close()
        rows = read_metrics(self.out / "metrics.jsonl")
        write_csv(rows, self.out / "metrics.csv")
        write_report(self.config, rows, self.out)
        lines = [
            "",
            "## Distributed run",
            "",
            f"{self.node.world} processes, topology {self.config.topology} "
            f"({self.config.aggregation} aggregation), Byzantine ranks "
            f"{self.node.byzantine or 'none'}, step_timeout {self.config.step_timeout} s.",
            "",
        ]
        steps = [r for r in rows if "step_ms" in r]
        if steps:
            mean_ms = sum(r["step_ms"] for r in steps) / len(steps)
            lines.append(f"Mean step time: {mean_ms:.1f} ms.")
        if members.crashed:
            for rank, why in sorted(members.crashed.items()):
                lines.append(f"- rank {rank} left the run: {why}")
        else:
            lines.append("No rank crashed.")
        with (self.out / "summary.md").open("a") as fh:
            fh.write("\n".join(lines) + "\n")


def restore(node: Node, out: Path, *, reporter: bool) -> tuple[int, float]:
    """Load ``out/checkpoint.pt`` into ``node`` (every rank reads it); (its step, its time).

    The reporter drops the metric rows written after the checkpoint; a forging
    rank takes back its own streams. No checkpoint (a run killed before its
    first one): start again from step 0.
    """
    directory = RunDirectory(out)
    if not directory.checkpoint_path.exists():
        return 0, 0.0
    elapsed = directory.restore(node.config, node, drop_metrics=reporter)
    if node.is_byzantine and node.gradient_attack:
        node.restore_forger(out)
    return node.step_count, elapsed


def claim_output(config: RunConfig, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run into a directory holding another (checked by every rank)."""
    directory = RunDirectory(config.out_dir)
    directory.check_usable()
    if resume:
        if not directory.config_path.is_file():
            raise ConfigError(f"{config.out_dir!r} holds no run to resume: config.toml is missing.")
        if not directory.saved_config_matches(config):
            raise ConfigError(
                f"{config.out_dir!r} holds a run of another config than the one given to "
                "--resume: resume it with its own config.toml, or start over with --overwrite."
            )
    elif not overwrite:
        directory.claim_check("byzance launch --resume")


def check_runs_distributed(config: RunConfig) -> RunConfig:
    """``config`` if real processes can run it; else one :class:`ConfigError` line."""
    if config.algorithm != "sgd":
        raise ConfigError(
            f"algorithm {config.algorithm!r} runs in the simulator (byzance train, byzance "
            "grid); real processes run algorithm = 'sgd'."
        )
    return config


def run(config: RunConfig, *, resume: bool = False, overwrite: bool = False) -> Membership | None:
    """Run this process's part of the distributed run described by ``config``."""
    check_runs_distributed(config)
    rank, world = init_process_group(device=config.device)
    if config.workers != world:
        print(
            f"[byzance dist] rank {rank}: workers = {world} (the number of processes), "
            f"not the config's {config.workers}.",
            file=sys.stderr,
        )
        config.workers = world
    validate(config)  # for this many workers: the rule must tolerate f among them
    claim_output(config, resume=resume, overwrite=overwrite)
    dist.barrier()  # every rank has checked the directory before the reporter writes to it
    node = Node(config, rank, world)
    out = Path(config.out_dir)
    is_reporter = rank == node.reporter
    start, elapsed = restore(node, out, reporter=is_reporter) if resume else (0, 0.0)
    dist.barrier()  # every rank has read the checkpoint before the reporter writes the next
    if is_reporter and start == 0:
        RunDirectory(out).claim(config, overwrite=True)  # checked above, by every rank
    elif is_reporter:
        write_config(config, out / "config.toml")  # the same run, perhaps for more steps
    report = Reporter(node, out, elapsed) if is_reporter else None
    members = None
    if config.topology == "parameter_server":
        if rank == 0:
            members = run_server(node, start, report)
        else:
            run_worker(node, start)
    else:
        loop = run_sharded if config.aggregation != "gathered" else run_decentralized
        members = loop(node, start, report or (lambda step, row: None))
        if not (node.is_byzantine and node.gradient_attack):
            out.mkdir(parents=True, exist_ok=True)
            torch.save(flatten_params(node.model).cpu(), out / f"params-rank{rank}.pt")
    if report is not None:
        report.close(members or Membership())
    return members
