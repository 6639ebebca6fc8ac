"""A grid's life: killed, run twice at once, interrupted, edited, with long names, resumed."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from typer.testing import CliRunner

from byzance.cli import app
from byzance.experiments import grid as grid_module
from byzance.experiments.grid import load_grid, run_grid
from byzance.experiments.grid_cells import (
    FINGERPRINT,
    MAX_NAME,
    cell_name,
    cell_state,
    prepare_cell,
)
from byzance.experiments.grid_pool import grid_lock
from byzance.experiments.report import cell_result, run_seconds, write_grid_report
from byzance.runs.config import ConfigError, load

T = TypeVar("T")

BASE = """
name = "life"
[base]
dataset = "digits"
model = "logistic"
workers = 7
byzantine = 1
steps = 6
eval_every = 3
checkpoint_every = 2
batch_size = 8
"""
TWO_CELLS = BASE + '[axes]\naggregator = ["median", "average"]\n'
LONG = 100_000  # steps that no test waits for: such a cell must be stopped


def grid_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


def wait_for(condition: Callable[[], T], seconds: float, what: str) -> T:
    """Poll ``condition`` until it is truthy (returned) or ``seconds`` pass (fails)."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.05)


def statuses(out: Path) -> dict[str, str]:
    return {r["cell"]: r["status"] for r in csv.DictReader((out / "results.csv").open())}


# -- 1. workers die with a SIGKILLed grid ---------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from the state on


def _workers(parent: int) -> list[tuple[int, str]]:
    """The parent's pool workers, as (pid, start time) so that a reused pid does not count."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is None or int(fields[1]) != parent:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            found.append((int(entry.name), fields[19]))
    return found


def _alive(worker: tuple[int, str]) -> bool:
    fields = _stat(worker[0])
    return fields is not None and fields[19] == worker[1] and fields[0] not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_a_killed_grid(tmp_path):
    text = TWO_CELLS.replace("steps = 6", f"steps = {LONG}")
    out = tmp_path / "out"
    code = (
        "from byzance.experiments.grid import load_grid, run_grid\n"
        f"run_grid(load_grid({str(grid_file(tmp_path, text))!r}, {str(out)!r}), jobs=2)\n"
    )
    log = (tmp_path / "grid.log").open("w")
    grid = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=log)
    workers: list[tuple[int, str]] = []
    try:
        cells = out / "cells"
        wait_for(lambda: cells.is_dir() and any(cells.iterdir()), 180, "a cell directory")
        workers = wait_for(lambda: _workers(grid.pid), 30, "the pool's workers")
        grid.kill()
        grid.wait()
        wait_for(lambda: not any(map(_alive, workers)), 30, f"workers {workers} to die")
    finally:
        if grid.poll() is None:
            grid.kill()
            grid.wait()
        for worker in workers:  # on failure, leave nothing running behind
            if _alive(worker):
                os.kill(worker[0], signal.SIGKILL)
        log.close()


# -- 2. one grid at a time per directory ----------------------------------------------------
def test_a_second_grid_on_a_directory_in_use_refuses(tmp_path):
    grid = load_grid(grid_file(tmp_path, TWO_CELLS), tmp_path / "out")
    grid.out_dir.mkdir()
    with grid_lock(grid.out_dir):
        in_use = rf"'{re.escape(str(grid.out_dir))}' is in use .*pid {os.getpid()}\)"
        with pytest.raises(ConfigError, match=in_use):
            run_grid(grid, jobs=1)
        result = CliRunner().invoke(
            app, ["grid", "--config", str(tmp_path / "grid.toml"), "--out", str(grid.out_dir)]
        )
    assert result.exit_code == 2, result.output
    assert "is in use by another byzance grid" in " ".join(result.output.split())
    assert not (grid.out_dir / "cells").exists()


def test_the_lock_dies_with_its_holder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from byzance.experiments.grid_pool import grid_lock\n"
        f"with grid_lock(Path({str(out)!r})):\n"
        "    print('locked', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=rf"pid {holder.pid}\)"), grid_lock(out):
            pass
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the kernel releases the lock
        holder.wait()
    with grid_lock(out):
        assert (out / ".lock").read_text().strip() == str(os.getpid())


# -- 3. Ctrl-C stops the queue at once and reports what finished ----------------------------
def _interrupt_after_first(cell) -> None:
    raise KeyboardInterrupt


def test_ctrl_c_stops_queued_and_running_cells_and_writes_the_report(tmp_path):
    text = BASE.replace("steps = 6\n", "") + (
        f'[axes]\naggregator = ["median"]\nsteps = [6, {LONG}, {LONG + 1}, {LONG + 2}]\n'
    )
    grid = load_grid(grid_file(tmp_path, text), tmp_path / "out")
    with pytest.raises(KeyboardInterrupt, match="stopped after 1 of 4 cells"):
        run_grid(grid, jobs=2, on_done=_interrupt_after_first)
    short, *long = grid.cells
    status = statuses(grid.out_dir)
    assert status[short.name] == "finished"
    assert all(status[c.name] in ("partial", "missing") for c in long), status
    assert not Path(long[-1].config.out_dir).exists()  # queued: never started
    report = (grid.out_dir / "results.md").read_text()
    section = report.split("## steps = 6\n")[1].split("##")[0]
    row = next(line for line in section.splitlines() if line.startswith("| median |"))
    assert 0.0 <= float(row.split("|")[2]) <= 1.0  # the finished cell's accuracy
    assert "Not finished" in report and all(c.name in report for c in long)
    with grid_lock(grid.out_dir):  # the lock was released
        pass


def test_ctrl_c_in_a_serial_grid(tmp_path):
    text = BASE.replace("steps = 6\n", "") + '[axes]\naggregator = ["median"]\nsteps = [6, 7]\n'
    grid = load_grid(grid_file(tmp_path, text), tmp_path / "out")
    with pytest.raises(KeyboardInterrupt, match="stopped after 1 of 2 cells"):
        run_grid(grid, jobs=1, on_done=_interrupt_after_first)
    assert list(statuses(grid.out_dir).values()) == ["finished", "missing"]


def test_the_grid_command_on_ctrl_c(tmp_path, monkeypatch):
    real = grid_module.run_grid

    def interrupted(spec, *, jobs=None, on_done=None):
        def done(cell):
            on_done(cell)
            raise KeyboardInterrupt

        real(spec, jobs=1, on_done=done)

    monkeypatch.setattr(grid_module, "run_grid", interrupted)
    result = CliRunner().invoke(
        app,
        ["grid", "--config", str(grid_file(tmp_path, TWO_CELLS)), "--out", str(tmp_path / "g")],
    )
    assert result.exit_code == 130, result.output
    assert "interrupted: stopped after 1 of 2 cells" in result.output
    assert "Traceback" not in result.output


# -- 4. a cell is its whole config ----------------------------------------------------------
def _mtimes(grid) -> dict[str, int]:
    return {
        c.name: (Path(c.config.out_dir) / "metrics.jsonl").stat().st_mtime_ns for c in grid.cells
    }


def _lr(cell) -> float:
    """The lr the cell's directory records (config.toml, read as the runner reads it)."""
    out = Path(cell.config.out_dir)
    return load(out / "config.toml", {"out_dir": str(out)}).lr


def test_editing_the_base_reruns_the_cells_it_changes(tmp_path):
    out = tmp_path / "out"
    first = load_grid(grid_file(tmp_path, TWO_CELLS), out)
    run_grid(first, jobs=1)
    before = _mtimes(first)
    assert all(cell_state(c.config) == "same" for c in first.cells)

    edited = load_grid(grid_file(tmp_path, TWO_CELLS.replace("[base]", "[base]\nlr = 0.05")), out)
    assert [c.name for c in edited.cells] == [c.name for c in first.cells]
    # Before the rerun, the report does not pass the old numbers off as the new grid's.
    assert {r["status"] for r in write_grid_report(edited)} == {"stale"}
    run_grid(edited, jobs=1)
    assert all(_lr(c) == 0.05 for c in edited.cells)
    after = _mtimes(edited)
    assert all(before[name] != after[name] for name in before)
    assert set(statuses(out).values()) == {"finished"}

    # One axis value changed: only its cells run; the other is skipped.
    axis = TWO_CELLS.replace('"average"', '"trimmed_mean"').replace("[base]", "[base]\nlr = 0.05")
    again = load_grid(grid_file(tmp_path, axis), out)
    kept = _mtimes(edited)[again.cells[0].name]
    run_grid(again, jobs=1)
    assert _mtimes(again)[again.cells[0].name] == kept
    assert set(statuses(out).values()) == {"finished"}


def test_a_changed_cell_is_rerun_from_scratch_even_with_a_checkpoint(tmp_path):
    out = tmp_path / "out"
    grid = load_grid(grid_file(tmp_path, TWO_CELLS), out)
    cell = grid.cells[0]
    prepare_cell(cell.config)
    (Path(cell.config.out_dir) / FINGERPRINT).write_text("another config\n")
    (Path(cell.config.out_dir) / "checkpoint.pt").write_text("not this run's")
    assert cell_state(cell.config) == "changed"
    run_grid(grid, jobs=1)
    assert set(statuses(out).values()) == {"finished"}
    assert cell_state(cell.config) == "same"


# -- 5. names fit the file system -----------------------------------------------------------
def test_cell_names_stay_short_and_unique_with_many_long_axes(tmp_path):
    values = {f"axis_number_{i}": f"a_rather_long_value_{i}_" + "x" * 40 for i in range(12)}
    name = cell_name(values)
    assert len(name.encode()) <= MAX_NAME < 255
    assert name.startswith("axis_number_0=a_rather_long_value_0_")
    other = cell_name({**values, "axis_number_11": values["axis_number_11"] + "y"})
    assert other != name and len(other) == len(name)
    assert cell_name({"aggregator": "krum"}) == "aggregator=krum"
    (tmp_path / name).mkdir()  # the file system takes it

    long_values = [f"env:{'K' * 200}", f"env:{'K' * 199}L", "env:a b", "env:a_b"]
    text = BASE + f"[axes]\nudp_keys = {json.dumps(long_values)}\n"
    grid = load_grid(grid_file(tmp_path, text), tmp_path / "out")
    names = [c.name for c in grid.cells]
    assert len(set(names)) == 4 and all(len(n) <= MAX_NAME for n in names)
    assert names[2] == "udp_keys=env_a_b"  # short names stay readable
    with pytest.raises(ConfigError, match="same axis values"):
        load_grid(grid_file(tmp_path, BASE + "[axes]\nseed = [0, 0]\n"))


# -- 6. a resumed cell's time is the sum of its segments -------------------------------------
def test_run_seconds_adds_the_segments_of_a_resumed_run():
    assert run_seconds([]) == 0.0
    assert run_seconds([{"elapsed_s": 1.0}, {"elapsed_s": 2.5}]) == 2.5
    restarted = [{"elapsed_s": 1.0}, {"elapsed_s": 4.0}, {"elapsed_s": 0.5}, {"elapsed_s": 1.5}]
    assert run_seconds(restarted) == 5.5
    continued = [{"elapsed_s": 1.0}, {"elapsed_s": 4.0}, {"elapsed_s": 4.5}, {"diverged": True}]
    assert run_seconds(continued) == 4.5


def test_a_resumed_cell_reports_the_time_of_both_segments(tmp_path):
    grid = load_grid(grid_file(tmp_path, BASE + '[axes]\naggregator = ["median"]\n'), tmp_path)
    cell = grid.cells[0]
    prepare_cell(cell.config)
    out = Path(cell.config.out_dir)
    elapsed = [1.0, 2.0, 3.0, 4.0, 0.7, 1.4]  # killed after the checkpoint at 4, resumed
    rows = [{"step": s, "loss": 1.0, "elapsed_s": e} for s, e in enumerate(elapsed, start=1)]
    rows[-1]["accuracy"] = 0.5
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "summary.md").write_text("done\n")
    result = cell_result(cell)
    assert result["status"] == "finished" and result["steps"] == 6
    assert result["seconds"] == pytest.approx(5.4)
