"""The command line: demo, rules, attacks; configs: --help lists every key, bad values one line."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from byzance.cli import app
from byzance.experiments.vectors import run_demo

runner = CliRunner()


def test_demo_shows_the_average_broken_and_robust_rules_holding():
    results = {r.rule: r.errors for r in run_demo(dim=50, norms=(0.0, 1e12))}
    assert results["average"][1] > 1e9  # one huge vector moves the average anywhere
    for rule, errors in results.items():
        if rule != "average":
            assert errors[1] < 100, rule  # the robust rules stay near the honest mean


def test_quick_demo_command():
    result = runner.invoke(app, ["demo", "--quick"])
    assert result.exit_code == 0, result.output
    assert "average" in result.output and "bulyan" in result.output


def test_rules_command_lists_requirements_and_papers():
    result = runner.invoke(app, ["rules"])
    assert result.exit_code == 0, result.output
    assert "krum" in result.output and "2f + 3" in result.output


def test_attacks_command_lists_every_attack():
    result = runner.invoke(app, ["attacks"])
    assert result.exit_code == 0, result.output
    for name in ("alie", "hidden_vulnerability", "label_flip", "adaptive"):
        assert name in result.output


def test_import_byzance_loads_no_cli_or_plotting_library():
    code = (
        "import sys, byzance, byzance.aggregators; "
        "bad = [m for m in ('typer', 'rich', 'matplotlib', 'pandas') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- configs: --help lists every key; a bad value is one line, exit status 2 ---------------


@pytest.mark.parametrize("command", ["train", "grid", "dist", "launch"])
def test_help_lists_every_config_key_by_section(command):
    from byzance.runs.config import SCHEMA

    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    for section, names in SCHEMA.sections.items():
        assert f"[{section}]" in result.output, section
        for name in names:
            assert name in result.output, name
    lines = result.output.splitlines()
    row = next(line for line in lines if " test_fraction " in line)
    assert "float" in row and "fraction of the samples held out" in row
    assert "[default: 0.2]" in result.output and '[default: "mnist5k"]' in result.output


@pytest.mark.parametrize("command", ["votes", "faults"])
def test_help_of_the_other_configs_lists_their_keys(command):
    module = {"votes": "byzance.voting.experiment", "faults": "byzance.faults.experiment"}
    schema = importlib.import_module(module[command]).SCHEMA
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    for name in schema.keys:
        assert name in result.output, name


def _one_line_error(result, key: str) -> str:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and f"'{key}'" in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("flags", "key", "says"),
    [
        (["--kardam", "maybe"], "kardam", "is not true or false"),
        (["--lr", "nan"], "lr", "is not a finite number in (0, 1e+30]"),
        (["--lr", "inf"], "lr", "is not a finite number in (0, 1e+30]"),
        (["--seed", "-1"], "seed", "is not an integer >= 0"),
        (["--workers", "-3"], "workers", "is not an integer >= 1"),
        (["--steps", "2.5"], "steps", "is not an integer"),
        (["--test-fraction", "0.9999"], "test_fraction", "0 training samples"),
        (["--test-fraction", "0.99"], "test_fraction", "every worker needs at least one"),
        (["--dataset", "synthetic_logistic", "--model", "mlp"], "model", "model = 'logistic'"),
        (["--attack", "alie", "--attack-params", "{z = 'abc'}"], "attack_params", "not a"),
        (["--attack", "alie", "--attack-params", "{zz = 1.0}"], "attack_params", "'zz'"),
        (
            ["--aggregator", "multi_krum", "--aggregator-params", "{m = 'x'}"],
            "aggregator_params",
            "is not an integer",
        ),
        (["--model-params", "{hidden = 'abc'}"], "model_params", "is not a list"),
        (
            [
                "--dataset",
                "synthetic_linear",
                "--model",
                "logistic",
                "--dataset-params",
                "{samples = 1}",
            ],
            "dataset_params",
            "samples must be an integer >= 2",
        ),
        (["--partition", "random"], "partition", "Accepted: iid, dirichlet, extreme"),
        (["--agregator", "krum"], "agregator", "Did you mean 'aggregator'"),
    ],
)
def test_train_refuses_bad_values_in_one_line(flags, key, says):
    result = runner.invoke(app, ["train", "--dataset", "digits", *flags])
    assert says in _one_line_error(result, key)


def test_a_key_in_the_wrong_section_names_the_right_one(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('[data]\ndataset = "digits"\n[run]\nworkers = 5\n')
    result = runner.invoke(app, ["train", "--config", str(config)])
    line = _one_line_error(result, "workers")
    assert "belongs in section [participants], not [run]" in line


def test_every_command_refuses_a_bad_config_in_one_line(tmp_path):
    run = tmp_path / "run.toml"
    run.write_text('[data]\ndataset = "digits"\n[optimizer]\nlr = nan\n')
    _one_line_error(runner.invoke(app, ["dist", "--config", str(run)]), "lr")
    _one_line_error(runner.invoke(app, ["launch", "--nproc", "3", "--config", str(run)]), "lr")
    good = tmp_path / "good.toml"
    good.write_text('dataset = "digits"\n')
    flags = ["--config", str(good), "--kardam", "maybe"]
    _one_line_error(runner.invoke(app, ["dist", *flags]), "kardam")
    _one_line_error(runner.invoke(app, ["launch", "--nproc", "3", *flags]), "kardam")
    grid = tmp_path / "grid.toml"
    grid.write_text('[base]\ndataset = "digits"\nseed = -1\n[axes]\naggregator = ["median"]\n')
    assert "'seed': -1" in _one_line_error(
        runner.invoke(app, ["grid", "--config", str(grid)]), "seed"
    )
    votes = tmp_path / "votes.toml"
    votes.write_text('kind = "strategy"\nsearch_skew = "maybe"\n')
    _one_line_error(runner.invoke(app, ["votes", "--config", str(votes)]), "search_skew")
    faults = tmp_path / "faults.toml"
    faults.write_text("epochs = 1.5\n")
    _one_line_error(runner.invoke(app, ["faults", "--config", str(faults)]), "epochs")
