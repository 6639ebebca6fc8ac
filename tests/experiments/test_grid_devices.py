"""Grid cells on GPUs: which GPU each cell takes, the pools, cells_per_device, identity.

No GPU here: ``torch.cuda`` is faked where a config must name CUDA, and the
pools are recorded instead of started.
"""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from byzance.cli import app
from byzance.errors import InvalidParameterError
from byzance.experiments import grid as grid_module
from byzance.experiments import grid_pool, report
from byzance.experiments.grid import load_grid, run_grid
from byzance.experiments.grid_cells import fingerprint, identity_device
from byzance.experiments.grid_pool import Lane, bind_gpu, cell_gpus, plan_lanes
from byzance.runs.config import ConfigError, load
from byzance.runs.rundir import fingerprint as run_fingerprint

GRID = """
name = "tiny"
{top}
[base]
dataset = "digits"
model = "logistic"
workers = 5
byzantine = 1
steps = 2
device = "{device}"
[axes]
aggregator = ["average", "median"]
seed = [0, 1, 2]
"""


def grid_file(tmp_path, device: str = "cpu", top: str = ""):
    path = tmp_path / "grid.toml"
    path.write_text(GRID.format(device=device, top=top))
    return path


def fake_gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


# -- which GPU a cell takes -----------------------------------------------------------------
def test_cpu_cells_stay_on_the_cpu():
    assert cell_gpus(["cpu"] * 3, 0) == [None] * 3
    assert cell_gpus(["cpu"] * 3, 4) == [None] * 3
    assert cell_gpus(["auto"] * 2, 0) == [None, None]  # auto without a GPU: the CPU


def test_cuda_cells_are_dealt_round_robin_over_the_visible_gpus():
    assert cell_gpus(["cuda"] * 5, 2) == [0, 1, 0, 1, 0]
    assert cell_gpus(["auto"] * 4, 3) == [0, 1, 2, 0]
    # cpu cells take no turn; a cell that names its GPU stays there and takes no turn either
    assert cell_gpus(["cpu", "cuda", "cuda:1", "auto", "cuda", "cpu"], 2) == [
        None,
        0,
        1,
        1,
        0,
        None,
    ]


def test_cuda_cells_without_a_gpu_or_a_missing_gpu_are_refused():
    with pytest.raises(InvalidParameterError, match="no CUDA device is visible"):
        cell_gpus(["cpu", "cuda"], 0)
    with pytest.raises(InvalidParameterError, match=r"2 CUDA device\(s\) are visible"):
        cell_gpus(["cuda:3"], 2)


def test_lanes_one_pool_per_gpu_with_cells_per_device_workers():
    work = [(f"c{i}", i) for i in range(6)]
    gpus = [None, 0, 1, 0, 1, None]
    lanes = plan_lanes(work, gpus, jobs=8, cells_per_device=3)
    assert lanes == [
        Lane([("c0", 0), ("c5", 5)], 8, None),
        Lane([("c1", 1), ("c3", 3)], 3, 0),
        Lane([("c2", 2), ("c4", 4)], 3, 1),
    ]
    assert plan_lanes(work, [None] * 6, jobs=2, cells_per_device=1) == [Lane(work, 2, None)]
    assert plan_lanes([], [], jobs=2, cells_per_device=1) == []
    with pytest.raises(InvalidParameterError, match="cells_per_device must be >= 1"):
        plan_lanes(work, gpus, jobs=2, cells_per_device=0)


def test_a_worker_binds_its_gpu(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    bind_gpu(None)
    assert calls == []
    bind_gpu(1)
    assert calls == [1]


# -- identity ---------------------------------------------------------------------------------
def test_identity_device_keeps_the_kind_not_the_index():
    assert identity_device("cuda:1", True) == identity_device("cuda:0", True) == "cuda"
    assert identity_device("cuda", True) == "cuda"
    assert identity_device("auto", True) == "cuda"
    assert identity_device("auto", False) == "cpu"
    assert identity_device("cpu", True) == "cpu"


def test_a_cell_s_fingerprint_ignores_which_gpu_it_ran_on(monkeypatch):
    fake_gpus(monkeypatch, 2)
    prints = {d: fingerprint(load(None, {"device": d})) for d in ("cuda", "cuda:0", "cuda:1")}
    assert len(set(prints.values())) == 1
    assert fingerprint(load(None, {"device": "auto"})) == prints["cuda"]  # auto is CUDA here
    assert fingerprint(load(None, {"device": "cpu"})) != prints["cuda"]  # other random streams


def test_a_cpu_cell_s_fingerprint_is_unchanged_by_the_device_key(monkeypatch):
    fake_gpus(monkeypatch, 0)
    cpu, auto = load(None, {"device": "cpu"}), load(None, {"device": "auto"})
    assert fingerprint(cpu) == fingerprint(auto)
    assert fingerprint(cpu) == run_fingerprint(cpu, ignore=("out_dir", "device"))


# -- the grid ---------------------------------------------------------------------------------
def test_cells_per_device_from_the_grid_file(tmp_path):
    assert load_grid(grid_file(tmp_path), tmp_path / "a").cells_per_device == 1
    grid = load_grid(grid_file(tmp_path, top="cells_per_device = 3"), tmp_path / "b")
    assert grid.cells_per_device == 3
    for bad in ("0", "-1", '"2"', "true", "1.5"):
        with pytest.raises(ConfigError, match="cells_per_device must be a whole number >= 1"):
            load_grid(grid_file(tmp_path, top=f"cells_per_device = {bad}"), tmp_path / "c")


def test_a_cuda_grid_without_cuda_is_refused_before_it_runs(tmp_path, monkeypatch):
    fake_gpus(monkeypatch, 0)
    with pytest.raises(ConfigError, match="no CUDA device is available here"):
        load_grid(grid_file(tmp_path, device="cuda"), tmp_path / "out")


def record_lanes(monkeypatch, gpus: int) -> list:
    recorded: list = []
    monkeypatch.setattr(grid_module, "visible_gpus", lambda: gpus)
    monkeypatch.setattr(
        grid_module, "run_in_lanes", lambda fn, lanes, on_done: recorded.extend(lanes)
    )
    monkeypatch.setattr(report, "write_grid_report", lambda grid: [])
    return recorded


def test_cuda_cells_spread_over_the_gpus_cells_per_device_each(tmp_path, monkeypatch):
    fake_gpus(monkeypatch, 2)
    grid = load_grid(grid_file(tmp_path, device="cuda", top="cells_per_device = 2"), tmp_path / "o")
    lanes = record_lanes(monkeypatch, 2)
    run_grid(grid, jobs=4)
    assert [(lane.gpu, lane.jobs, len(lane.work)) for lane in lanes] == [(0, 2, 3), (1, 2, 3)]
    # the cells' configs are not changed: "cuda" is the worker's GPU
    assert {config.device for lane in lanes for _, config in lane.work} == {"cuda"}
    lanes.clear()
    run_grid(grid, jobs=4, cells_per_device=5)  # the option overrides the file
    assert [lane.jobs for lane in lanes] == [5, 5]


def test_cpu_cells_keep_their_single_pool(tmp_path, monkeypatch):
    fake_gpus(monkeypatch, 2)  # GPUs there, but the cells say cpu
    grid = load_grid(grid_file(tmp_path, device="cpu"), tmp_path / "o")
    lanes = record_lanes(monkeypatch, 2)
    run_grid(grid, jobs=3)
    assert [(lane.gpu, lane.jobs, len(lane.work)) for lane in lanes] == [(None, 3, 6)]


def test_the_cli_option_sets_cells_per_device(tmp_path, monkeypatch):
    seen = {}

    def fake_run_grid(spec, *, jobs=None, on_done=None, **_):
        seen["per_device"] = spec.cells_per_device
        (spec.out_dir / "results.md").parent.mkdir(parents=True, exist_ok=True)
        (spec.out_dir / "results.md").write_text("done\n")

    monkeypatch.setattr(grid_module, "run_grid", fake_run_grid)
    path = grid_file(tmp_path, top="cells_per_device = 2")
    out = str(tmp_path / "out")
    result = CliRunner().invoke(app, ["grid", "--config", str(path), "--out", out])
    assert result.exit_code == 0, result.output
    assert seen["per_device"] == 2
    args = ["grid", "--config", str(path), "--out", out, "--cells-per-device", "4"]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert seen["per_device"] == 4
    args[-1] = "-1"
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "cells_per_device must be a whole number >= 1" in result.output


def test_visible_gpus(monkeypatch):
    fake_gpus(monkeypatch, 0)
    assert grid_pool.visible_gpus() == 0
    fake_gpus(monkeypatch, 3)
    assert grid_pool.visible_gpus() == 3
