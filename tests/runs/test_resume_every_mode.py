"""One resume test over every mode: a run SIGKILLed between two checkpoints, then resumed,
ends with the parameters and metrics of an uninterrupted run, with no step missing or twice.

Modes: synchronous (with worker momentum, centered clipping's carried center and a
step schedule), asynchronous with the Kardam filter, several servers (each carrying
its own center), federated rounds (sampled clients, local steps), a grid cell, and the distributed parameter server and
decentralized topologies (real torchrun processes, worker momentum included).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from byzance.distributed.launch import torchrun_command
from byzance.runs.config import load
from byzance.runs.rundir import load_checkpoint_file, read_metrics
from byzance.runs.runner import resume, train

STEPS, EVERY, KILL_AT = 10, 4, 7  # killed after step 7: the last checkpoint is step 4
TIMING = {"elapsed_s", "aggregation_ms", "step_ms", "compute_ms", "wait_ms"}
BASE: dict[str, Any] = {
    "dataset": "mnist5k",
    "model": "mlp",
    "model_params": {"hidden": [16]},
    "workers": 7,
    "byzantine": 1,
    "steps": STEPS,
    "checkpoint_every": EVERY,
    "eval_every": 5,
    "batch_size": 8,
}
MODES: dict[str, dict[str, Any]] = {
    "sync": {
        "aggregator": "centered_clipping",
        "attack": "alie",
        "worker_momentum": 0.9,
        "lr_schedule": "step",
        "lr_step_size": 3,
    },
    "async_kardam": {
        "mode": "async",
        "kardam": True,
        "aggregator": "average",
        "attack": "sign_flip",
        "slow_workers": 2,
    },
    "servers": {
        "servers": 3,
        "byzantine_servers": 1,
        "server_attack": "per_worker",
        "aggregator": "centered_clipping",
        "attack": "sign_flip",
        "worker_momentum": 0.5,
    },
    "fedavg": {
        "algorithm": "fedavg",
        "workers": 12,
        "byzantine": 3,
        "clients_per_round": 5,
        "byzantine_sampling": "random",  # the clients stream must resume too
        "local_steps": 2,
        "local_momentum": 0.5,
        "lr": 1.0,
        "f": 1,
        "aggregator": "bucketing>centered_clipping",  # the rule's stream and carried center
        "attack": "large_norm",
        "attack_params": {"direction": "random"},
    },
}

KILLED_RUN = """
import os, signal, sys
from byzance.runs.config import load
from byzance.runs.runner import train

def die(step, row):
    if step == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)

train(load({config!r}, {{"out_dir": {out!r}}}), progress=die)
"""


def _killed(config_path: Path, out: Path) -> None:
    """Train ``config_path`` into ``out`` in another process, SIGKILLed after step KILL_AT."""
    code = textwrap.dedent(
        KILLED_RUN.format(kill_at=KILL_AT, config=str(config_path), out=str(out))
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]


def _write(path: Path, values: dict[str, Any]) -> Path:
    import tomli_w

    path.write_text(tomli_w.dumps(values))
    return path


def _rows(out: Path) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(out / "metrics.jsonl")
    ]


def _state(out: Path) -> dict[str, Any]:
    return load_checkpoint_file(out / "checkpoint.pt")["state"]


def _assert_same(a: Any, b: Any, where: str = "state") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _assert_resumed_like_whole(whole: Path, resumed: Path) -> None:
    rows = _rows(resumed)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # no duplicate, none missing
    assert rows == _rows(whole)
    _assert_same(_state(whole), _state(resumed))


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_killed_simulated_run_resumes_to_the_uninterrupted_numbers(
    tmp_path: Path, mode: str
) -> None:
    config = _write(tmp_path / "run.toml", {**BASE, **MODES[mode], "out_dir": "unused"})
    whole = train(load(config, {"out_dir": str(tmp_path / "whole")})).out_dir
    killed = tmp_path / "killed"
    _killed(config, killed)
    assert [r["step"] for r in read_metrics(killed / "metrics.jsonl")] == list(
        range(1, KILL_AT + 1)
    )
    assert load_checkpoint_file(killed / "checkpoint.pt")["state"]["step"] == EVERY
    resume(killed)
    _assert_resumed_like_whole(whole, killed)
    elapsed = [r["elapsed_s"] for r in read_metrics(killed / "metrics.jsonl")]
    assert elapsed == sorted(elapsed)  # the resumed segment's time adds to the first's


def test_a_killed_grid_cell_resumes_to_the_uninterrupted_numbers(tmp_path: Path) -> None:
    """An asynchronous Kardam cell: grid reruns of such cells used to fail on the filter's state."""
    from byzance.experiments.grid import load_grid, run_grid

    grid = {"base": {**BASE, **MODES["async_kardam"]}, "axes": {"seed": [3]}}
    grid_file = _write(tmp_path / "grid.toml", grid)
    grid = load_grid(grid_file, tmp_path / "grid")
    (cell,) = grid.feasible
    cell_config = _write(tmp_path / "cell.toml", {**BASE, **MODES["async_kardam"], "seed": 3})
    out = Path(cell.config.out_dir)
    _killed(cell_config, out)
    first_segment = read_metrics(out / "metrics.jsonl")[:EVERY]
    run_grid(grid, jobs=1)
    assert read_metrics(out / "metrics.jsonl")[:EVERY] == first_segment  # resumed, not redone
    whole = train(load(cell_config, {"out_dir": str(tmp_path / "whole")})).out_dir
    _assert_resumed_like_whole(whole, out)


DIST = {
    **BASE,
    "attack": "large_norm",
    "attack_params": {"direction": "random"},  # a new direction each step: the stream must resume
    "aggregator": "median",
    "worker_momentum": 0.9,
    "step_timeout": 30.0,
    "worker_timeout": 60.0,
}
# Parameter server: every rank dies before step 8 (the workers only ever wait for the
# server, so all of step 7 is recorded). Decentralized: the reporter dies before step 8
# and the others finish without it (killing them too could lose a step-7 vector in flight).
TOPOLOGIES = {
    "parameter_server": ({"workers": 3, "byzantine_ranks": [2]}, [0, 1, 2]),
    "decentralized": ({"workers": 4, "byzantine_ranks": [3]}, [0]),
}


def _launch(config: Path, nproc: int, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = torchrun_command(nproc, str(config), list(extra))
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("topology", sorted(TOPOLOGIES))
def test_a_killed_distributed_run_resumes_to_the_uninterrupted_numbers(
    tmp_path: Path, topology: str
) -> None:
    ranks, crashing = TOPOLOGIES[topology]
    values = {**DIST, **ranks, "topology": topology}
    nproc = values["workers"]
    whole = tmp_path / "whole"
    done = _launch(_write(tmp_path / "whole.toml", {**values, "out_dir": str(whole)}), nproc)
    assert done.returncode == 0, done.stderr[-3000:]
    killed = tmp_path / "killed"
    crash = {str(r): f"crash@{KILL_AT + 1}" for r in crashing}
    config = _write(tmp_path / "killed.toml", {**values, "out_dir": str(killed), "faults": crash})
    _launch(config, nproc)  # the reporter's record ends at step 7, its checkpoint at 4
    assert [r["step"] for r in read_metrics(killed / "metrics.jsonl")] == list(
        range(1, KILL_AT + 1)
    )
    done = _launch(killed / "config.toml", nproc, "--resume", "--faults", "{}")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _rows(killed)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert rows == _rows(whole)
    a, b = _state(whole), _state(killed)
    _assert_same(a["parts"]["server"]["model"], b["parts"]["server"]["model"])
