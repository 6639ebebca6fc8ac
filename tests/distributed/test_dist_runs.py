"""Multi-process runs on localhost (gloo), started by torchrun exactly as users start them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from byzance.distributed.launch import torchrun_command
from byzance.runs import runner
from byzance.runs.config import load
from byzance.runs.rundir import load_checkpoint_file

BASE = {
    "dataset": "mnist5k",
    "model": "mlp",
    "byzantine": 0,
    "aggregator": "median",
    "steps": 20,
    "eval_every": 10,
    "batch_size": 32,
    "lr": 0.1,
    "step_timeout": 20.0,
    "worker_timeout": 60.0,
}


def _write_config(tmp_path: Path, **keys) -> Path:
    import tomli_w

    values = {**BASE, "out_dir": str(tmp_path / "run"), **keys}
    path = tmp_path / "run.toml"
    path.write_text(tomli_w.dumps(values))
    return path


def _launch(nproc: int, config: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = torchrun_command(nproc, str(config), list(extra))
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def _why(done: subprocess.CompletedProcess) -> str:
    """byzance's own messages in a failed launch (torchrun's report hides them)."""
    return "\n".join(line for line in done.stderr.splitlines() if "byzance" in line)[-3000:]


def _rows(tmp_path: Path) -> list[dict]:
    return runner.read_metrics(tmp_path / "run" / "metrics.jsonl")


def _model(out: Path) -> dict[str, torch.Tensor]:
    """The server's model in a run's checkpoint (read with weights_only, as byzance reads it)."""
    return load_checkpoint_file(out / "checkpoint.pt")["state"]["parts"]["server"]["model"]


def _final_accuracy(tmp_path: Path) -> float:
    return [r for r in _rows(tmp_path) if "accuracy" in r][-1]["accuracy"]


def test_median_learns_under_a_large_norm_rank_and_average_breaks(tmp_path: Path) -> None:
    robust = tmp_path / "median"
    robust.mkdir()
    done = _launch(5, _write_config(robust, byzantine=1, attack="large_norm"))
    assert done.returncode == 0, _why(done)
    assert _final_accuracy(robust) > 0.5
    assert all(r["arrived"] == 5 for r in _rows(robust) if "arrived" in r)
    assert (robust / "run" / "summary.md").read_text().count("Distributed run") == 1
    for name in ("metrics.csv", "accuracy.png", "checkpoint.pt", "config.toml"):
        assert (robust / "run" / name).exists()

    broken = tmp_path / "average"
    broken.mkdir()
    done = _launch(5, _write_config(broken, byzantine=1, attack="large_norm", aggregator="average"))
    assert done.returncode == 0, _why(done)
    last = _rows(broken)[-1]
    assert last.get("diverged") or last["accuracy"] < 0.3


def test_decentralized_honest_ranks_end_identical(tmp_path: Path) -> None:
    config = _write_config(
        tmp_path,
        topology="decentralized",
        aggregator="krum",
        byzantine_ranks=[1],
        attack="sign_flip",
        steps=8,
    )
    done = _launch(5, config)
    assert done.returncode == 0, _why(done)
    out = tmp_path / "run"
    params = [torch.load(out / f"params-rank{r}.pt") for r in (0, 2, 3, 4)]
    assert all(torch.equal(params[0], p) for p in params[1:])
    assert not (out / "params-rank1.pt").exists()  # the forger keeps no model
    assert _rows(tmp_path)[-1]["byzantine_selected"] is not None


def test_a_sigkilled_worker_does_not_stop_the_others(tmp_path: Path) -> None:
    config = _write_config(tmp_path, faults={"2": "crash@3"}, steps=8)
    done = _launch(4, config)
    assert done.returncode == 0, _why(done)
    assert "killed by signal 9" in done.stderr
    rows = _rows(tmp_path)
    assert rows[-1]["step"] == 8
    assert rows[1]["arrived"] == 4 and rows[-1]["arrived"] == 3
    assert rows[-1]["crashed"] == [2]
    assert "rank 2 left the run" in (tmp_path / "run" / "summary.md").read_text()


def test_wrong_sizes_are_faulty_messages_and_a_hung_worker_is_left_behind(tmp_path: Path) -> None:
    faults = {"3": "wrong_size@2", "2": "sleep@3:5"}
    config = _write_config(tmp_path, faults=faults, steps=7, step_timeout=1.5)
    done = _launch(4, config)
    assert done.returncode == 0, _why(done)
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 8))
    assert rows[0]["arrived"] == 4 and rows[0]["missing"] == {}
    for row in rows[1:]:
        assert row["missing"]["3"].startswith("faulty: sent")
        assert row["crashed"] == []
    assert rows[2]["missing"]["2"] == "timeout"  # asleep during step 3: not waited for
    assert "2" not in rows[-1]["missing"]  # awake again, and back in the run


@pytest.mark.parametrize("topology", ["parameter_server", "decentralized"])
def test_simulator_and_distributed_run_reach_the_same_parameters(
    tmp_path: Path, topology: str
) -> None:
    keys = {"steps": 4, "aggregator": "median", "eval_every": 4, "topology": topology}
    config = _write_config(tmp_path, workers=4, **keys)
    done = _launch(4, config)
    assert done.returncode == 0, _why(done)
    dist_model = _model(tmp_path / "run")

    sim_config = load(config, {"out_dir": str(tmp_path / "sim")})
    result = runner.train(sim_config)
    sim_model = _model(result.out_dir)
    for name, value in sim_model.items():
        torch.testing.assert_close(dist_model[name], value, rtol=1e-4, atol=1e-5)


def test_outside_torchrun_the_error_says_how_to_start(tmp_path: Path) -> None:
    config = _write_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR")}
    done = subprocess.run(
        [sys.executable, "-m", "byzance.distributed", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "torchrun" in done.stderr and "byzance launch" in done.stderr
    json.dumps(done.stderr)


def test_over_lossy_udp_the_median_still_learns(tmp_path: Path) -> None:
    from byzance.distributed.udp import generate_key_file

    generate_key_file(tmp_path / "keys.json", 5)
    config = _write_config(
        tmp_path,
        byzantine=1,
        attack="large_norm",
        transport="udp",
        udp_keys=str(tmp_path / "keys.json"),
        udp_loss={"drop": 0.1},
        udp_datagram_bytes=1472,
    )
    done = _launch(5, config)
    assert done.returncode == 0, _why(done)
    rows = _rows(tmp_path)
    assert sum(r["coordinates_missing"] for r in rows) > 0
    assert sum(r["datagrams_dropped"] for r in rows) > 0
    assert all(sum(r["datagrams_rejected"].values()) == 0 for r in rows)
    assert _final_accuracy(tmp_path) > 0.5


def test_sharded_aggregation_goes_on_without_a_killed_rank(tmp_path: Path) -> None:
    # Replicated slices (each aggregated by 2f + 1 = 3 ranks), a distance-based rule whose
    # Weiszfeld iterations all-reduce their distances, a Byzantine rank, and a rank killed.
    config = _write_config(
        tmp_path,
        topology="decentralized",
        aggregation="replicated",
        aggregator="geometric_median",
        byzantine_ranks=[3],
        attack="large_norm",
        faults={"2": "crash@3"},
        steps=5,
        step_timeout=2.0,
    )
    done = _launch(4, config)
    assert done.returncode == 0, _why(done)
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 6))
    assert rows[0]["arrived"] == 4 and rows[-1]["arrived"] == 3
    assert rows[-1]["crashed"] == [2]
    assert all(r["deviation"] < 10 * r["honest_norm"] + 1 for r in rows)  # large_norm resisted
    out = tmp_path / "run"
    assert torch.equal(torch.load(out / "params-rank0.pt"), torch.load(out / "params-rank1.pt"))
    assert "(replicated aggregation)" in (out / "summary.md").read_text()
