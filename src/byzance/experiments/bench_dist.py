"""``byzance bench dist``: step time across real processes, robust rules vs all-reduce averaging.

Two ways to be robust are timed against the data-parallel baseline (backward
+ all_reduce + step), each in its own torchrun launch of ``procs`` processes
on this machine (gloo):

- the drop-in :func:`byzance.distributed.robust_step` (all-gather + rule on every rank);
- the same drop-in sharded (``sharded=True``: all-to-all, the rule on 1/world of
  the coordinates per rank, all-gather) and with replicated slices (each slice
  aggregated by 2f + 1 ranks, the copies' median);
- the byzance runner's parameter server (``byzance launch``): point-to-point
  frames with a deadline, the rule on rank 0, parameters sent back; its step
  time is the mean ``step_ms`` of the run's metrics after the first steps
  (it includes drawing batches and the server's evaluation-free bookkeeping).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from byzance.distributed.bench import MODELS, tolerated

RUNNER_MODEL = {"lenet": ("lenet", {}), "mlp-1m": ("mlp", {"hidden": [1024, 256]})}


def _torchrun(nproc: int, args: list[str]) -> str:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        errors = done.stderr.splitlines()
        # The ranks' own one-line errors, else the end of torchrun's report (a rank that
        # died before logging, a rendezvous failure).
        lines = [line for line in errors if "byzance dist" in line][-8:] or errors[-12:]
        raise RuntimeError(
            f"torchrun {' '.join(args)} failed (exit {done.returncode}): " + "\n".join(lines)
        )
    return done.stdout


DROP_IN_KINDS = ("robust_step", "sharded", "replicated")


def _drop_in(
    nproc: int,
    model: str,
    rules: tuple[str, ...],
    steps: int,
    kinds: tuple[str, ...] = DROP_IN_KINDS,
) -> list[dict[str, Any]]:
    modes = ",".join(["average", *(f"{k}:{r}" for k in kinds for r in rules)])
    out = _torchrun(
        nproc,
        [
            "-m",
            "byzance.distributed.bench",
            "--model",
            model,
            "--modes",
            modes,
            "--steps",
            str(steps),
        ],
    )
    return [json.loads(line[6:]) for line in out.splitlines() if line.startswith("BENCH ")]


def launch_config(nproc: int, config: dict[str, Any], tmp: Path, name: str) -> list[dict[str, Any]]:
    """Run ``config`` (a dict of run-config keys) on ``nproc`` processes; its metric rows.

    The config file and the run's outputs go to ``tmp / name``.
    """
    import tomli_w

    config = {"out_dir": str(tmp / name), **config}
    path = tmp / f"{name}.toml"
    path.write_text(tomli_w.dumps(config))
    _torchrun(nproc, ["-m", "byzance.distributed", "--config", str(path)])
    return [json.loads(line) for line in (tmp / name / "metrics.jsonl").open()]


def _runner(nproc: int, model: str, rule: str, steps: int, warmup: int = 3) -> dict[str, Any]:
    name, params = RUNNER_MODEL[model]
    config = {
        "dataset": "mnist5k",
        "model": name,
        "model_params": params,
        "workers": nproc,
        "byzantine": 0,
        "f": tolerated(rule, nproc, 1),
        "aggregator": rule,
        "steps": steps + warmup,
        "eval_every": 10_000,
        "checkpoint_every": 10_000,
        "batch_size": 32,
        "lr": 0.01,
    }
    with tempfile.TemporaryDirectory() as tmp:
        rows = launch_config(nproc, config, Path(tmp), "run")
    timed = [r["step_ms"] for r in rows[warmup:-1]]  # the last step also evaluates and saves
    d = sum(p.numel() for p in _model(model).parameters())
    return {
        "model": model,
        "d": d,
        "procs": nproc,
        "mode": f"server:{rule}",
        "f": config["f"],
        "step_ms": sum(timed) / len(timed),
    }


def _model(name: str):
    from byzance import models

    model, params = MODELS[name]
    return models.build(model, (1, 28, 28), 10, **params)


def run_dist_bench(
    procs: tuple[int, ...] = (4, 8),
    model_names: tuple[str, ...] = ("lenet", "mlp-1m"),
    rules: tuple[str, ...] = ("krum", "median"),
    steps: int = 20,
) -> list[dict[str, Any]]:
    """Mean step times (ms) per (processes, model, mode); ``ratio`` is mode / average."""
    rows: list[dict[str, Any]] = []
    for nproc in procs:
        for model in model_names:
            group = _drop_in(nproc, model, rules, steps)
            group += [_runner(nproc, model, rule, steps) for rule in rules]
            base = next(r["step_ms"] for r in group if r["mode"] == "average")
            for row in group:
                row["ratio"] = row["step_ms"] / base
            rows += group
    return rows


def render_dist_bench(rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(title="Step time across processes (gloo, this machine): robust vs all-reduce")
    for col in ("procs", "model", "d", "mode", "f", "step ms", "x average"):
        table.add_column(col, justify="left" if col in ("model", "mode") else "right")
    for r in rows:
        ratio = r["ratio"]
        colour = "green" if ratio <= 1.5 else "yellow"
        table.add_row(
            str(r["procs"]),
            r["model"],
            f"{r['d']:,}",
            r["mode"],
            str(r["f"]),
            f"{r['step_ms']:.1f}",
            f"[{colour}]{ratio:.2f}",
        )
    console.print(table)
