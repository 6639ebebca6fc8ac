"""``byzance faults``: a tiny config end to end, the shipped example's config, errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from byzance.cli import app
from byzance.faults.experiment import FaultsConfigError, load_config, run

EXAMPLE = Path(__file__).parents[2] / "examples" / "faults_mnist.toml"
TINY = {
    "hidden": [8, 4],
    "epochs": 2,
    "failures": [0, 1, 2],
    "synapse_failures": [2],
    "trials": 2,
    "rounds": 1,
    "eval_samples": 24,
    "overprovision": [[4, 2], [8, 4]],
    "overprovision_failures": 1,
}


def test_tiny_run_writes_tables_and_plots_and_measures_below_the_bounds(tmp_path):
    cfg = load_config(EXAMPLE, {**TINY, "out_dir": str(tmp_path)})
    result = run(cfg)
    for name in ("results.md", "results.csv", "synapses.csv", "overprovisioning.csv",
                 "bound_vs_measured.png", "overprovisioning.png"):  # fmt: skip
        assert (tmp_path / name).stat().st_size > 0, name
    assert [r.neurons for r in result.rows] == [0, 1, 2]
    zero = result.rows[0]
    assert zero.fep_bound == zero.adversarial_worst == zero.random_worst == 0.0
    assert zero.accuracy == zero.clean_accuracy
    for row in result.rows + result.synapse_rows + result.overprovision_rows:
        bound = min(b for b in (row.fep_bound, row.path_bound) if b is not None)
        assert row.adversarial_worst <= bound * (1 + 1e-5)
        assert row.random_worst <= bound * (1 + 1e-5)
    assert result.rows[2].adversarial_worst >= result.rows[1].adversarial_worst > 0
    with (tmp_path / "results.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 3
    # the trained models are reused
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("model_*.pt")}
    assert len(stamps) == 2  # 8x4 is both the main and a compared width
    run(cfg)
    assert stamps == {p: p.stat().st_mtime_ns for p in tmp_path.glob("model_*.pt")}


def test_cli_faults_command(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(
        "hidden = [6, 3]\nepochs = 1\nfailures = [0, 1]\ntrials = 1\nrounds = 1\neval_samples = 10\n"
    )
    result = CliRunner().invoke(
        app, ["faults", "--config", str(config), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    assert "bound" in result.output and (tmp_path / "o" / "bound_vs_measured.png").is_file()
    config.write_text("hiden = [6, 3]\n")
    result = CliRunner().invoke(app, ["faults", "--config", str(config)])
    assert result.exit_code == 2 and "Did you mean 'hidden'" in result.output


def test_shipped_example_is_valid():
    cfg = load_config(EXAMPLE)
    assert cfg.kind == "byzantine" and cfg.overprovision


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"failures": [0, 40]}, "narrowest"),
        ({"kind": "melted"}, "kind"),
        ({"hidden": []}, "non-empty"),
        ({"overprovision": [[8]]}, "2 widths"),
        ({"epochs": "many"}, "'epochs': 'many' is not an integer >= 1"),
        ({"epochs": 1.5}, "'epochs': 1.5 is not an integer"),
        ({"lr": float("nan")}, "'lr': nan is not a finite number > 0"),
        ({"value_bound": -1.0}, "'value_bound': -1.0 is not a finite number >= 0"),
        ({"hidden": [8, 0]}, r"'hidden': \[8, 0\] is not a list of integers >= 1"),
        ({"activation": "softmax"}, "activation"),
        ({"dataset": "synthetic_linear"}, "'dataset': 'synthetic_linear' is not a classification"),
        ({"test_fraction": 0.9999}, "'test_fraction'"),
        ({"seed": -1}, "'seed': -1 is not an integer >= 0"),
    ],
)
def test_bad_configs_say_what_is_wrong(override, message):
    with pytest.raises(FaultsConfigError, match=message):
        load_config(EXAMPLE, override)


def test_crash_failures_with_tanh(tmp_path):
    cfg = load_config(
        EXAMPLE,
        {
            **TINY,
            "kind": "crash",
            "synapse_kind": "crash",
            "activation": "tanh",
            "overprovision": [],
            "out_dir": str(tmp_path),
        },
    )
    result = run(cfg)
    assert not (tmp_path / "overprovisioning.png").exists()
    for row in result.rows[1:] + result.synapse_rows:
        assert 0 < row.adversarial_worst <= row.fep_bound * (1 + 1e-5)
    assert result.rows[1].path_bound <= result.rows[1].fep_bound


def test_sectioned_config_and_the_written_config_toml_reads_back(tmp_path):
    from byzance.faults.experiment import SCHEMA

    text = EXAMPLE.read_text()
    assert "[network]" in text  # the shipped example uses sections
    cfg = load_config(EXAMPLE, {**TINY, "out_dir": str(tmp_path), "overprovision": []})
    run(cfg)
    written = tmp_path / "config.toml"
    assert not (tmp_path / "config.json").exists()
    assert set(SCHEMA.sections) <= {line.strip("[]") for line in written.read_text().splitlines()}
    assert load_config(written) == cfg
