"""The grid: expansion, infeasible cells, outputs, resume after a kill, parallel = serial."""

from __future__ import annotations

import csv
import shutil

import pytest
from typer.testing import CliRunner

from byzance.cli import app
from byzance.experiments.grid import load_grid, run_grid
from byzance.experiments.report import report
from byzance.runs.config import ConfigError
from byzance.runs.runner import read_metrics, train

GRID = """
name = "tiny"
[base]
dataset = "digits"
model = "logistic"
workers = 7
steps = 6
eval_every = 3
checkpoint_every = 2
batch_size = 8
[axes]
aggregator = ["average", "krum", "nnm>median"]
attack = ["none", "sign_flip"]
byzantine = [1, 2]
"""


def grid_file(tmp_path, text: str = GRID):
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


def test_expansion_flags_infeasible_cells(tmp_path):
    grid = load_grid(grid_file(tmp_path), tmp_path / "out")
    assert len(grid.cells) == 3 * 2 * 2
    infeasible = [c for c in grid.cells if c.config is None]
    # krum needs n >= 2f + 3 = 7 with f = 2: feasible; make it infeasible with 6 workers.
    assert not infeasible
    grid = load_grid(
        grid_file(tmp_path, GRID.replace("workers = 7", "workers = 6")), tmp_path / "o"
    )
    infeasible = [c for c in grid.cells if c.config is None]
    assert {(c.rule, c.f) for c in infeasible} == {("krum", 2)}
    assert all("krum requires n >= 2f + 3" in c.infeasible for c in infeasible)


def test_invalid_values_stop_the_grid_before_it_runs(tmp_path):
    with pytest.raises(ConfigError, match="Did you mean 'median'"):
        load_grid(grid_file(tmp_path, GRID.replace('"nnm>median"', '"medain"')))
    with pytest.raises(ConfigError, match="non-empty list"):
        load_grid(grid_file(tmp_path, GRID.replace("byzantine = [1, 2]", "byzantine = 2")))


def test_grid_outputs_and_resume_after_a_kill(tmp_path):
    text = GRID.replace("workers = 7", "workers = 6")
    grid = load_grid(grid_file(tmp_path, text), tmp_path / "out")
    run_grid(grid, jobs=1)
    out = tmp_path / "out"
    for name in (
        "results.csv",
        "results.md",
        "heatmap_worst_case.png",
        "heatmap_sign_flip.png",
        "grid.toml",
    ):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 12
    assert sum(r["status"] == "infeasible" for r in rows) == 2
    assert all(r["status"] in ("finished", "infeasible", "diverged") for r in rows)
    assert "infeasible" in (out / "results.md").read_text()

    # Simulate a kill: one cell rerun from scratch and killed at step 5 (checkpoint at 4).
    victim = grid.feasible[0]
    stamps = {
        c.name: (out / "cells" / c.name / "metrics.jsonl").stat().st_mtime_ns for c in grid.feasible
    }
    shutil.rmtree(out / "cells" / victim.name)

    def kill_at_5(step, row):
        if step == 5:
            raise KilledError

    with pytest.raises(KilledError):
        train(victim.config, progress=kill_at_5)
    path = out / "cells" / victim.name / "metrics.jsonl"
    assert len(read_metrics(path)) == 5
    run_grid(load_grid(grid_file(tmp_path, text), tmp_path / "out"), jobs=1)
    assert read_metrics(path)[-1]["step"] == 6
    for cell in grid.feasible[1:]:  # finished cells were not rerun
        again = (tmp_path / "out" / "cells" / cell.name / "metrics.jsonl").stat().st_mtime_ns
        assert again == stamps[cell.name], cell.name


class KilledError(Exception):
    pass


def test_parallel_and_serial_give_identical_numbers(tmp_path):
    text = GRID.replace('["average", "krum", "nnm>median"]', '["median"]').replace("[1, 2]", "[1]")
    serial = load_grid(grid_file(tmp_path, text), tmp_path / "serial")
    parallel = load_grid(grid_file(tmp_path, text), tmp_path / "parallel")
    run_grid(serial, jobs=1)
    run_grid(parallel, jobs=2)

    def strip(rows):
        return [
            {k: v for k, v in r.items() if k not in ("aggregation_ms", "elapsed_s")} for r in rows
        ]

    for a, b in zip(serial.feasible, parallel.feasible, strict=True):
        assert strip(
            read_metrics(tmp_path / "serial" / "cells" / a.name / "metrics.jsonl")
        ) == strip(read_metrics(tmp_path / "parallel" / "cells" / b.name / "metrics.jsonl"))


def test_report_regenerates_from_a_partial_grid(tmp_path):
    text = GRID.replace('["average", "krum", "nnm>median"]', '["median", "average"]').replace(
        "[1, 2]", "[1]"
    )
    grid = load_grid(grid_file(tmp_path, text), tmp_path / "partial")
    grid.out_dir.mkdir(parents=True)
    (grid.out_dir / "grid.toml").write_text(text)
    train(grid.feasible[0].config)  # only one cell done
    rows = report(grid.out_dir)
    assert [r["status"] for r in rows].count("finished") == 1
    assert (grid.out_dir / "heatmap_worst_case.png").is_file()
    result = CliRunner().invoke(app, ["report", str(grid.out_dir)])
    assert result.exit_code == 0, result.output


def test_grid_command(tmp_path):
    text = GRID.replace('["average", "krum", "nnm>median"]', '["median"]').replace("[1, 2]", "[1]")
    result = CliRunner().invoke(
        app,
        [
            "grid",
            "--config",
            str(grid_file(tmp_path, text)),
            "--out",
            str(tmp_path / "g"),
            "--jobs",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "| median |" in result.output


def test_a_table_axis_sets_several_keys_together(tmp_path):
    text = GRID.replace(
        'attack = ["none", "sign_flip"]',
        'attack = ["none", { attack = "ipm", attack_params = { epsilon = 100.0 } }]',
    )
    grid = load_grid(grid_file(tmp_path, text), tmp_path / "t")
    attacks = {c.attack for c in grid.cells}
    assert attacks == {"none", "ipm(epsilon=100.0)"}
    ipm = next(c for c in grid.cells if c.attack != "none")
    assert ipm.config.attack_params == {"epsilon": 100.0}
    assert "attack=ipm" in ipm.name and "epsilon=100.0" in ipm.name


def test_shipped_grids_are_valid(tmp_path, monkeypatch):
    import pickle
    from pathlib import Path

    import numpy as np

    # The CIFAR-10 grid reads $BYZANCE_DATA_DIR: a small folder in the real format.
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (60, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, 60)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    monkeypatch.setenv("BYZANCE_DATA_DIR", str(tmp_path))
    grids = sorted((Path(__file__).parents[2] / "examples" / "grids").glob("*.toml"))
    assert len(grids) >= 4
    for path in grids:
        grid = load_grid(path, "/tmp/unused")
        assert grid.feasible, path


def test_async_and_multi_server_modes_run_in_a_grid(tmp_path):
    text = GRID.replace('aggregator = ["average", "krum", "nnm>median"]', 'aggregator = ["median"]')
    text = text.replace(
        "byzantine = [1, 2]",
        'where = [{ mode = "async", byzantine = 1 }, '
        "{ servers = 3, byzantine_servers = 1, byzantine = 1 }]",
    )
    text = text.replace('attack = ["none", "sign_flip"]', 'attack = ["sign_flip"]')
    grid = load_grid(grid_file(tmp_path, text), tmp_path / "modes")
    run_grid(grid, jobs=1)
    rows = list(csv.DictReader((tmp_path / "modes" / "results.csv").open()))
    assert [r["status"] for r in rows] == ["finished", "finished"]
    metrics = [
        read_metrics(tmp_path / "modes" / "cells" / c.name / "metrics.jsonl") for c in grid.cells
    ]
    assert "honest_rejection_rate" in metrics[0][-1] and "server_spread" in metrics[1][-1]
