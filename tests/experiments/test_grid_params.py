"""Grid axes over one parameter of the rule or the attack, and one results column each."""

from __future__ import annotations

import csv
import warnings

import pytest

from byzance.experiments.grid import load_grid
from byzance.experiments.grid_axes import cell_spec, column, read_axes
from byzance.experiments.report import write_grid_report, write_heatmaps
from byzance.runs.config import ConfigError

BASE = """
name = "params"
[base]
dataset = "digits"
model = "logistic"
workers = 7
byzantine = 1
steps = 2
eval_every = 2
checkpoint_every = 2
batch_size = 8
attack = "gaussian"
attack_params = { mu = 0.5 }
aggregator = "centered_clipping"
preaggregators = ["bucketing"]
[axes]
"""


def grid_file(tmp_path, axes: str):
    path = tmp_path / "grid.toml"
    path.write_text(BASE + axes)
    return path


def test_a_dotted_axis_sweeps_one_parameter_and_keeps_the_others(tmp_path):
    axes = '"attack_params.sigma" = [1.0, 1e3, 1e6]\n"aggregator_params.tau" = [1.0, 10.0]\n'
    grid = load_grid(grid_file(tmp_path, axes), tmp_path / "out")
    assert len(grid.cells) == 6
    params = {
        (c.config.attack_params["sigma"], c.config.aggregator_params["tau"]) for c in grid.cells
    }
    assert params == {(s, t) for s in (1.0, 1e3, 1e6) for t in (1.0, 10.0)}
    assert all(c.config.attack_params["mu"] == 0.5 for c in grid.cells)  # [base]'s kept
    names = [c.name for c in grid.cells]
    assert len(set(names)) == 6
    assert "attack.sigma=1000.0__aggregator.tau=10.0" in names
    cell = next(c for c in grid.cells if c.name == "attack.sigma=1.0__aggregator.tau=1.0")
    assert cell.attack == "gaussian(mu=0.5, sigma=1.0)"
    assert cell.rule == "bucketing>centered_clipping(tau=1.0)"


def test_dotted_quoted_and_table_spellings_are_the_same_axis(tmp_path):
    spellings = [
        '"preaggregator_params.bucketing.s" = [2, 3]',
        "preaggregator_params.bucketing.s = [2, 3]",
        "preaggregator_params = { bucketing = { s = [2, 3] } }",
    ]
    for i, axis in enumerate(spellings):
        grid = load_grid(grid_file(tmp_path, axis), tmp_path / f"o{i}")
        assert list(grid.axes) == ["preaggregator_params.bucketing.s"]
        assert [c.config.preaggregator_params for c in grid.cells] == [
            {"bucketing": {"s": 2}},
            {"bucketing": {"s": 3}},
        ]
        assert [c.name for c in grid.cells] == ["bucketing.s=2", "bucketing.s=3"]
        assert grid.cells[0].rule == "bucketing(s=2)>centered_clipping"


def test_a_list_of_tables_under_a_params_key_is_merged_too(tmp_path):
    axis = "attack_params = [{ sigma = 1.0 }, { sigma = 2.0 }]"
    grid = load_grid(grid_file(tmp_path, axis), tmp_path / "out")
    assert [c.config.attack_params for c in grid.cells] == [
        {"mu": 0.5, "sigma": 1.0},
        {"mu": 0.5, "sigma": 2.0},
    ]
    assert [c.name for c in grid.cells] == ["attack.sigma=1.0", "attack.sigma=2.0"]


def test_parameter_axes_apply_after_tables_whatever_their_order():
    base = {"attack": "gaussian", "attack_params": {"mu": 0.5}}
    values = {
        "attack_params.sigma": 3.0,
        "attack": {"attack": "gaussian", "attack_params": {"mu": 1.0}},
    }
    assert cell_spec(base, values)["attack_params"] == {"mu": 1.0, "sigma": 3.0}
    assert base == {"attack": "gaussian", "attack_params": {"mu": 0.5}}  # not mutated


@pytest.mark.parametrize(
    ("axis", "match"),
    [
        ('"attack.sigma" = [1.0]', r"'attack' takes one value.*did you mean 'attack_params.sigma'"),
        ('"atack_params.sigma" = [1.0]', "'atack_params' is not a config key"),
        ('"attack_params." = [1.0]', "empty name between dots"),
        ('"preaggregator_params.s" = [2]', "name the pre-aggregator and its parameter"),
        ('"attack_params.sigma" = 1.0', "must be a non-empty list"),
        ("attack_params.sigma = []", "must be a non-empty list"),
        ('"attack_params.sgma" = [1.0]', "has no parameter 'sgma'. Did you mean 'sigma'"),
    ],
)
def test_clear_one_line_errors(tmp_path, axis: str, match: str):
    with pytest.raises(ConfigError, match=match) as info:
        load_grid(grid_file(tmp_path, axis), tmp_path / "out")
    assert "\n" not in str(info.value)


def test_the_same_axis_twice_is_refused():
    with pytest.raises(ConfigError, match="given twice"):
        read_axes({"attack_params.sigma": [1.0], "attack_params": {"sigma": [2.0]}})


def test_columns_are_named_after_the_component():
    assert column("attack_params.sigma") == "attack.sigma"
    assert column("aggregator_params.tau") == "aggregator.tau"
    assert column("preaggregator_params.bucketing.s") == "bucketing.s"
    assert column("dataset_params.samples") == "dataset.samples"


def test_results_have_one_column_per_parameter_not_json(tmp_path):
    axes = (
        '"attack_params.sigma" = [1.0, 1e3]\n'
        "aggregator_params.tau = [10.0]\n"
        "where = [{ worker_momentum = 0.0, momentum = 0.9 }]\n"
    )
    grid = load_grid(grid_file(tmp_path, axes), tmp_path / "r")
    write_grid_report(grid)  # no cell ran: every row "missing", the columns are all there
    rows = list(csv.DictReader((grid.out_dir / "results.csv").open()))
    assert len(rows) == 2
    for row in rows:
        assert row["attack"] == "gaussian" and row["rule"] == "bucketing>centered_clipping"
        assert row["attack.mu"] == "0.5" and row["aggregator.tau"] == "10.0"
        assert row["worker_momentum"] == "0.0" and row["momentum"] == "0.9"
        assert not any(v.startswith(("{", "[")) for v in row.values())
    assert sorted(r["attack.sigma"] for r in rows) == ["1.0", "1000.0"]
    text = (grid.out_dir / "results.md").read_text()
    assert "| gaussian(mu=0.5, sigma=1.0) | gaussian(mu=0.5, sigma=1000.0) |" in text
    assert "## worker_momentum = 0.0, momentum = 0.9" in text
    assert "{" not in text


def test_a_table_axis_setting_the_attack_gives_plain_columns(tmp_path):
    text = BASE.replace("attack_params = { mu = 0.5 }\n", "") + (
        'attack = ["none", { attack = "ipm", attack_params = { epsilon = 100.0 } }]\n'
    )
    path = tmp_path / "grid.toml"
    path.write_text(text)
    grid = load_grid(path, tmp_path / "t")
    write_grid_report(grid)
    rows = list(csv.DictReader((grid.out_dir / "results.csv").open()))
    assert [r["attack"] for r in rows] == ["none", "ipm"]
    assert [r["attack.epsilon"] for r in rows] == ["", "100.0"]


def test_heatmaps_emit_no_layout_warning(tmp_path):
    # Long rule labels (parameters) in a narrow figure made tight_layout give up with a warning.
    axes = (
        '"aggregator_params.tau" = [1.0, 1000000.0]\n'
        '"preaggregator_params.bucketing.s" = [2]\n'
        "byzantine = [1]\n"
        "where = [{ worker_momentum = 0.0, momentum = 0.9, lr = 0.05 }]\n"
    )
    grid = load_grid(grid_file(tmp_path, axes), tmp_path / "out")
    results = [{"cell": c.name, "final_accuracy": 0.5 + 0.1 * i} for i, c in enumerate(grid.cells)]
    grid.out_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = write_heatmaps(grid, results)
    assert paths and all(p.is_file() for p in paths)
