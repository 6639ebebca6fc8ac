"""Tables and heatmaps of a grid, from its cells' metrics (finished or partial).

``results.csv`` has one row per cell: its name, ``rule`` and ``attack`` (names),
``f``, one column per parameter of the rule and the attack (``aggregator.tau``,
``bucketing.s``, ``attack.sigma``) and per swept parameter, one per axis (a
table axis: one per key it sets), then the status and the numbers.
``results.md`` has one table per value of the axes that are not rows (rules,
with their parameters), columns (attacks, with theirs) or seeds.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from byzance.experiments.grid import Cell, Grid, load_grid
from byzance.experiments.grid_axes import PRE, axis_columns, describe, param_columns
from byzance.experiments.grid_cells import cell_state
from byzance.runs.runner import is_finished, read_metrics

# Axes that are the table's rows, columns, or averaged over: the rest split tables.
_LAYOUT_AXES = {"aggregator", "preaggregators", "attack", "seed", "out_dir"}
# Tables whose parameters are in the rows' and columns' labels (``krum(m=2)``).
_LABELLED = ("aggregator_params", "attack_params", PRE)


def run_seconds(rows: list[dict[str, Any]]) -> float:
    """A run's training time: the sum of its segments' ``elapsed_s``.

    A resumed run may restart its clock (``elapsed_s`` falls between two
    rows): each segment counts its last value. A clock that continues from
    the checkpoint never falls, and its last value is the total.
    """
    total, last = 0.0, None
    for row in rows:
        elapsed = row.get("elapsed_s")
        if elapsed is None:
            continue
        if last is not None and elapsed < last:
            total += last
        last = float(elapsed)
    return total + (last or 0.0)


def cell_result(cell: Cell) -> dict[str, Any]:
    """One results row: the axis values, the run's status and final numbers.

    A cell whose directory holds a run of another config (the grid was
    edited since) is ``stale``: its numbers are not this cell's.
    """
    row: dict[str, Any] = {
        "cell": cell.name,
        "rule": cell.rule_name,
        "attack": cell.attack_name,
        "f": cell.f,
    }
    config = cell.config.to_dict() if cell.config is not None else cell.spec
    row.update(param_columns(config, cell.values))
    row.update(axis_columns(cell.values))
    if cell.config is None:
        return {**row, "status": "infeasible", "note": cell.infeasible}
    if cell_state(cell.config) == "changed":
        note = "its config changed since it ran; run the grid again to rerun it"
        empty = {"final_accuracy": None, "best_accuracy": None, "steps": 0, "seconds": 0.0}
        return {**row, "status": "stale", "note": note, **empty}
    rows = read_metrics(Path(cell.config.out_dir) / "metrics.jsonl")
    evals = [r for r in rows if "accuracy" in r]
    status = "finished" if is_finished(cell.config) else ("partial" if rows else "missing")
    diverged = bool(rows) and bool(rows[-1].get("diverged"))
    return {
        **row,
        "status": "diverged" if diverged and status == "finished" else status,
        "final_accuracy": evals[-1]["accuracy"] if evals and status == "finished" else None,
        "best_accuracy": max(r["accuracy"] for r in evals) if evals else None,
        "steps": rows[-1]["step"] if rows else 0,
        "seconds": run_seconds(rows),
    }


def _split_key(
    cell: Cell, grid: Grid, also: frozenset[str] = frozenset()
) -> tuple[tuple[str, Any], ...]:
    """The values of the axes that split tables (all but rows, columns, seeds and ``also``)."""
    skip = _LAYOUT_AXES | also
    return tuple(
        (k, json.dumps(cell.values[k]))
        for k in grid.axes
        if k not in skip and k.split(".")[0] not in _LABELLED
    )


def _title(split: tuple[tuple[str, Any], ...], sep: str = ", ") -> str:
    """A table split's axis values, as people read them: ``byzantine = 2, attack.sigma = 1.0``."""
    return sep.join(describe(k, json.loads(v)) for k, v in split)


_F_AXES = frozenset({"f", "byzantine"})  # the heatmaps' columns


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def write_grid_report(grid: Grid) -> list[dict[str, Any]]:
    """Write results.csv, results.md and the heatmaps into ``grid.out_dir``; returns the rows."""
    grid.out_dir.mkdir(parents=True, exist_ok=True)
    results = [cell_result(c) for c in grid.cells]
    keys = list(dict.fromkeys(k for r in results for k in r))
    with (grid.out_dir / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(results)
    by_cell = {r["cell"]: r for r in results}

    groups: dict[tuple, list[Cell]] = defaultdict(list)
    for cell in grid.cells:
        groups[_split_key(cell, grid)].append(cell)
    lines = [
        f"# {grid.name}",
        "",
        f"Final test accuracy, mean ± std over seeds; {len(grid.cells)} cells.",
    ]
    for split, cells in groups.items():
        title = _title(split) or "all cells"
        rules = list(dict.fromkeys(c.rule for c in cells))
        attacks = list(dict.fromkeys(c.attack for c in cells))
        lines += ["", f"## {title}", "", "| rule | " + " | ".join(attacks) + " |"]
        lines.append("| --- |" + " --- |" * len(attacks))
        for rule in rules:
            cells_row = []
            for attack in attacks:
                chosen = [c for c in cells if c.rule == rule and c.attack == attack]
                if chosen and all(c.config is None for c in chosen):
                    cells_row.append("infeasible")
                    continue
                values = [by_cell[c.name]["final_accuracy"] for c in chosen]
                cells_row.append(_mean_std([v for v in values if v is not None]))
            lines.append(f"| {rule} | " + " | ".join(cells_row) + " |")
    unfinished = [r for r in results if r["status"] not in ("finished", "diverged", "infeasible")]
    if unfinished:
        lines += ["", "Not finished (run the grid again to complete them):", ""]
        lines += [f"- {r['cell']}: {r['status']}" for r in unfinished]
    infeasible = [r for r in results if r["status"] == "infeasible"]
    if infeasible:
        lines += ["", "Infeasible cells (not run):", ""]
        lines += [f"- {r['cell']}: {r['note']}" for r in infeasible]
    (grid.out_dir / "results.md").write_text("\n".join(lines) + "\n")
    write_heatmaps(grid, results)
    return results


def _accuracy_table(
    grid: Grid, results: list[dict[str, Any]], cells: list[Cell], attack: str | None
) -> tuple[list[str], list[int], list[list[float]]]:
    """Rows rules, columns f: mean accuracy over seeds (worst over attacks when attack is None)."""
    by_cell = {r["cell"]: r for r in results}
    rules = list(dict.fromkeys(c.rule for c in cells))
    fs = sorted({c.f for c in cells})
    table = []
    for rule in rules:
        row = []
        for f in fs:
            per_attack: dict[str, list[float]] = defaultdict(list)
            for c in cells:
                if c.rule == rule and c.f == f and (attack is None or c.attack == attack):
                    value = by_cell[c.name].get("final_accuracy")
                    if value is not None:
                        per_attack[c.attack].append(value)
            means = [statistics.mean(v) for v in per_attack.values() if v]
            row.append(min(means) if means else math.nan)
        table.append(row)
    return rules, fs, table


_CHAR_IN = 0.075  # inches per character of a 10-point tick label


def _heatmap_size(rules: list[str], fs: list[int], title: str) -> tuple[float, float]:
    """A heatmap's (width, height) in inches: room for its cells, rule labels, title, colorbar.

    A figure sized for the cells alone leaves no room for long labels (a
    rule with parameters), and matplotlib's layout then gives up with a warning.
    """
    labels = _CHAR_IN * max((len(r) for r in rules), default=0)
    cells = 1.1 * len(fs)
    title_width = 0.07 * max((len(line) for line in title.splitlines()), default=0)
    width = max(0.6 + labels + cells + 0.9, title_width + 0.4)
    height = 1.0 + 0.45 * len(rules) + 0.2 * title.count("\n")
    return width, height


def write_heatmaps(grid: Grid, results: list[dict[str, Any]]) -> list[Path]:
    """Heatmaps (rules x f): worst case over attacks, and one per attack, per table split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple, list[Cell]] = defaultdict(list)
    for cell in grid.cells:
        groups[_split_key(cell, grid, _F_AXES)].append(cell)
    paths = []
    for index, (split, cells) in enumerate(groups.items()):
        suffix = "" if len(groups) == 1 else f"_{index}"
        subtitle = _title(split)
        attacks = list(dict.fromkeys(c.attack for c in cells))
        for attack in [None, *attacks]:
            rules, fs, table = _accuracy_table(grid, results, cells, attack)
            what = "worst case over attacks" if attack is None else f"attack: {attack}"
            title = what + (f"\n{subtitle}" if subtitle else "")
            fig, ax = plt.subplots(
                figsize=_heatmap_size(rules, fs, title), dpi=110, layout="constrained"
            )
            image = ax.imshow(table, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
            ax.set_xticks(range(len(fs)), [str(f) for f in fs])
            ax.set_yticks(range(len(rules)), rules)
            ax.set_xlabel("f")
            for i, row in enumerate(table):
                for j, value in enumerate(row):
                    text = "n/a" if math.isnan(value) else f"{value:.2f}"
                    ax.text(j, i, text, ha="center", va="center", fontsize=8)
            fig.suptitle(title, fontsize=9)  # centred on the figure, which is sized for it
            fig.colorbar(image, ax=ax, fraction=0.05)
            name = "heatmap_worst_case" if attack is None else f"heatmap_{attack}"
            path = grid.out_dir / f"{name}{suffix}.png"
            fig.savefig(path)
            plt.close(fig)
            paths.append(path)
    return paths


def report(out_dir: str | Path) -> list[dict[str, Any]]:
    """Regenerate the tables and heatmaps of the grid in ``out_dir`` (finished or partial)."""
    out = Path(out_dir)
    source = out / "grid.toml"
    if not source.is_file():
        from byzance.runs.config import ConfigError

        raise ConfigError(f"{str(out)!r} holds no grid: grid.toml is missing.")
    return write_grid_report(load_grid(source, out))
