"""The command line: demo, rules."""

from __future__ import annotations

import subprocess
import sys

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
