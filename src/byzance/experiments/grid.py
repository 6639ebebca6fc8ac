"""The experiment grid: a base run and axes to sweep, every cell a normal training run.

A grid file (TOML)::

    name = "ALIE against the rules"
    cells_per_device = 2        # cells at a time on each GPU (CUDA cells only; default 1)
    [base]                      # any run config key
    dataset = "mnist5k"
    steps = 200
    [axes]                      # any run config key, a list of values each
    aggregator = ["average", "krum", "median"]
    # a table sets several keys together:
    attack = ["none", "alie", {attack = "ipm", attack_params = {epsilon = 100.0}}]
    byzantine = [2, 4]
    seed = [0, 1]
    # one parameter of the rule or the attack (the table's other entries are kept):
    "aggregator_params.tau" = [1.0, 10.0]
    "preaggregator_params.bucketing.s" = [2, 4]

(see :mod:`~byzance.experiments.grid_axes`: parameter axes, results columns).

The product of the axes is expanded and every cell validated before any runs:
a cell whose rule cannot tolerate its f is infeasible (recorded, not run); any
other invalid value stops the grid before it starts. Cells run in parallel
worker processes, each in ``DIR/cells/<cell>``; rerunning skips finished cells
and resumes interrupted ones, so a kill loses at most the cells in flight. A
cell is the same cell only while its whole config is (see
:mod:`~byzance.experiments.grid_cells`): edit ``[base]`` and the cells it
changes are rerun from scratch. One grid at a time holds a directory, its
workers die with it, and Ctrl-C stops the queue at once and writes the report
of what finished (see :mod:`~byzance.experiments.grid_pool`).

Devices: CPU cells run ``jobs`` at a time (default: the cores). Cells whose
``device`` resolves to CUDA (``"cuda"``, or ``"auto"`` on a machine with a GPU)
are dealt round-robin to the visible GPUs, ``cells_per_device`` at a time on
each (so ``K * cells_per_device`` at once on K GPUs); ``"cuda:N"`` keeps its
cell on GPU N. Which GPU a cell ran on is not part of its identity.
"""

from __future__ import annotations

import itertools
import multiprocessing
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from byzance.errors import ToleranceError
from byzance.experiments.grid_axes import cell_spec, read_axes
from byzance.experiments.grid_cells import cell_name, cell_state, hashed_name, run_cell, values_hash
from byzance.experiments.grid_pool import (
    cell_gpus,
    grid_lock,
    plan_lanes,
    run_in_lanes,
    visible_gpus,
)
from byzance.runs.config import ConfigError, RunConfig, load
from byzance.runs.rundir import RunDirectory


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its axis values and its validated config (None if infeasible)."""

    name: str
    values: dict[str, Any]
    config: RunConfig | None
    infeasible: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)  # base + values, unvalidated

    @property
    def rule_name(self) -> str:
        """The rule's name, pre-aggregators first (``nnm>trimmed_mean``)."""
        if self.config is not None:
            return self.config.rule().name
        aggregator = str(self.spec.get("aggregator", "average"))
        return ">".join([*self.spec.get("preaggregators", []), aggregator])

    @property
    def rule(self) -> str:
        """The rule's name with each stage's parameters: ``bucketing(s=2)>centered_clipping``."""
        if self.config is not None:
            pre, params = self.config.preaggregator_params, self.config.aggregator_params
        else:
            pre = self.spec.get("preaggregator_params") or {}
            params = self.spec.get("aggregator_params")
        *stages, final = self.rule_name.split(">")
        labels = [_label(s, pre.get(s) if isinstance(pre, dict) else None) for s in stages]
        return ">".join([*labels, _label(final, params)])

    @property
    def attack_name(self) -> str:
        """The attack's name alone."""
        return self.config.attack if self.config else str(self.spec.get("attack", "none"))

    @property
    def attack(self) -> str:
        """The attack's name, with its parameters when any: ``ipm(epsilon=100.0)``."""
        params = self.config.attack_params if self.config else self.spec.get("attack_params", {})
        return _label(self.attack_name, params)

    @property
    def f(self) -> int:
        """The f the rule tolerates."""
        if self.config is not None:
            return self.config.tolerated
        f = int(self.spec.get("f", -1))
        return int(self.spec.get("byzantine", 4)) if f < 0 else f


def _label(name: str, params: Any) -> str:
    """``name(k=v, ...)``, parameters sorted; ``name`` alone without parameters."""
    if not params or not isinstance(params, dict):
        return name
    return f"{name}({', '.join(f'{k}={v}' for k, v in sorted(params.items()))})"


@dataclass
class Grid:
    """An expanded grid: its name, axes and cells, written under ``out_dir``."""

    name: str
    out_dir: Path
    axes: dict[str, list[Any]]
    cells: list[Cell] = field(default_factory=list)
    source: Path | None = None
    cells_per_device: int = 1  # CUDA cells running at a time on each GPU

    @property
    def feasible(self) -> list[Cell]:
        return [c for c in self.cells if c.config is not None]


def load_grid(path: str | Path, out_dir: str | Path | None = None) -> Grid:
    """Read and expand a grid file; validates every cell (raises on any error but infeasibility)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"grid file {str(path)!r} does not exist.")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"grid file {str(path)!r} is not valid TOML: {err}") from None
    unknown = set(raw) - {"name", "base", "axes", "out_dir", "cells_per_device"}
    if unknown:
        raise ConfigError(
            f"grid file {str(path)!r}: unknown top-level keys {sorted(unknown)}; "
            "a grid has name, out_dir, cells_per_device, [base] and [axes]."
        )
    per_device = check_cells_per_device(raw.get("cells_per_device", 1), f"grid file {str(path)!r}")
    for section in ("base", "axes"):
        if not isinstance(raw.get(section, {}), dict):
            raise ConfigError(
                f"grid file {str(path)!r}: {section} must be a table ([{section}] with keys); "
                f"got {raw[section]!r}."
            )
    base = dict(raw.get("base", {}))
    axes = read_axes(raw.get("axes", {}))
    out = Path(out_dir or raw.get("out_dir") or Path("runs") / path.stem)
    RunDirectory(out).check_usable()  # a file where the grid's directory should be
    grid = Grid(
        name=str(raw.get("name", path.stem)),
        out_dir=out,
        axes=axes,
        source=path,
        cells_per_device=per_device,
    )
    names: set[str] = set()
    hashes: set[str] = set()
    for combination in itertools.product(*axes.values()):
        values = dict(zip(axes, combination, strict=True))
        name = cell_name(values)
        if values_hash(values) in hashes:
            raise ConfigError(
                f"grid cell {name}: two cells have the same axis values; "
                "remove the duplicate values from the axes."
            )
        hashes.add(values_hash(values))
        if name in names:  # values that differ only in characters a file name cannot hold
            name = hashed_name(values)
        names.add(name)
        try:
            spec = cell_spec(base, values)
        except ConfigError as err:
            raise ConfigError(f"grid cell {name}: {err}") from None
        overrides = {**spec, "out_dir": str(out / "cells" / name)}
        try:
            config = load(None, overrides)
        except ToleranceError as err:
            grid.cells.append(Cell(name, values, None, infeasible=str(err), spec=spec))
            continue
        except ConfigError as err:
            raise ConfigError(f"grid cell {name}: {err}") from None
        grid.cells.append(Cell(name, values, config, spec=spec))
    return grid


def check_cells_per_device(value: Any, where: str = "the grid") -> int:
    """``value`` if it is a whole number >= 1; else one :class:`ConfigError` line."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"{where}: cells_per_device must be a whole number >= 1 (cells at a time on each "
            f"GPU); got {value!r}."
        )
    return value


class GridInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a grid; the report of the cells that finished was written."""

    def __init__(self, grid: Grid, finished: int) -> None:
        self.grid = grid
        self.finished = finished
        super().__init__(
            f"stopped after {finished} of {len(grid.feasible)} cells; results so far in "
            f"{grid.out_dir / 'results.md'}; run the grid again to continue."
        )


def run_grid(
    grid: Grid,
    *,
    jobs: int | None = None,
    cells_per_device: int | None = None,
    on_done: Callable[[Cell], None] | None = None,
) -> None:
    """Run every feasible cell not yet finished, ``jobs`` CPU cells at a time (default: the
    cores) and ``cells_per_device`` (default: the grid's) CUDA cells on each GPU.

    ``jobs=1`` runs in this process, one cell after the other (CUDA cells on the
    current GPU). A finished cell whose config is unchanged is skipped; an
    unfinished one is resumed; one whose config changed is rerun from scratch. Raises :class:`ConfigError`
    if another grid holds ``grid.out_dir``, and :class:`GridInterrupted` (a
    ``KeyboardInterrupt``) on Ctrl-C, once the queued cells are cancelled, the
    running ones stopped and the report of the finished ones written.
    """
    from byzance.experiments.report import write_grid_report
    from byzance.runs.runner import is_finished

    grid.out_dir.mkdir(parents=True, exist_ok=True)
    with grid_lock(grid.out_dir):
        if grid.source is not None:
            (grid.out_dir / "grid.toml").write_text(grid.source.read_text())
        done = [
            c for c in grid.feasible if cell_state(c.config) == "same" and is_finished(c.config)
        ]
        todo = [c for c in grid.feasible if not any(c is d for d in done)]
        try:
            for cell in done:
                if on_done is not None:
                    on_done(cell)
            jobs = jobs or multiprocessing.cpu_count()
            if jobs == 1:
                for cell in todo:
                    run_cell(cell.config)
                    if on_done is not None:
                        on_done(cell)
            else:
                per_device = check_cells_per_device(cells_per_device or grid.cells_per_device)
                work = [(cell, cell.config) for cell in todo]
                gpus = cell_gpus([c.config.device for c in todo], visible_gpus() if todo else 0)
                lanes = plan_lanes(work, gpus, jobs=jobs, cells_per_device=per_device)
                run_in_lanes(run_cell, lanes, on_done=on_done)
        except KeyboardInterrupt:
            results = write_grid_report(grid)
            finished = sum(r["status"] in ("finished", "diverged") for r in results)
            raise GridInterrupted(grid, finished) from None
        write_grid_report(grid)
