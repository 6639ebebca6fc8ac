"""Edges found by review: each used to end in a traceback, a wrong resume or mixed files."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from byzance.cli import app
from byzance.runs.config import ConfigError, RunConfig, load
from byzance.runs.rundir import RunDirectory
from byzance.runs.runner import read_metrics, run_or_resume, train

TINY = ["--dataset", "digits", "--steps", "1", "--workers", "5", "--byzantine", "1"]


@pytest.mark.parametrize(
    "flags",
    [
        ["--preaggregators", "bucketing", "--preaggregator-params", "{bucketing = {s = 0}}"],
        ["--lr", "1e39"],
        ["--weight-decay", "1e308"],
        ["--lr-schedule", "step", "--lr-gamma", "1e308"],
        ["--batch-size", "10000000000"],
        ["--step-timeout", "1e308"],
    ],
    ids=["bucketing-s0", "lr", "weight-decay", "lr-gamma", "batch-size", "timeout"],
)
def test_out_of_range_values_are_one_line(tmp_path: Path, flags: list[str]) -> None:
    result = CliRunner().invoke(app, ["train", *TINY, *flags, "--out-dir", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "error:" in result.output
    assert not (tmp_path / "r").exists()  # refused before any work


def test_byzantine_ranks_alone_set_the_byzantine_count() -> None:
    config = load(None, {"workers": 3, "byzantine_ranks": [2], "attack": "sign_flip"})
    assert config.byzantine == 1


@pytest.mark.parametrize("body", ["base = 3\n", "axes = [1]\n"])
def test_a_grid_whose_base_or_axes_is_not_a_table_is_one_line(tmp_path: Path, body: str) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text(body)
    result = CliRunner().invoke(app, ["grid", "--config", str(grid)])
    assert result.exit_code == 2 and "must be a table" in result.output, result.output


def _config(out: Path, **changes) -> RunConfig:
    base = dict(dataset="digits", workers=5, byzantine=1, steps=4, eval_every=2, out_dir=str(out))
    return RunConfig(**{**base, **changes})


def test_a_sweep_never_takes_a_longer_run_for_a_shorter_one(tmp_path: Path) -> None:
    train(_config(tmp_path / "r", steps=8))
    with pytest.raises(ConfigError, match="another config"):
        run_or_resume(_config(tmp_path / "r", steps=4))
    rows = run_or_resume(_config(tmp_path / "r", steps=4), replace=True)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_a_sweep_extends_a_run_and_its_config_says_so(tmp_path: Path) -> None:
    train(_config(tmp_path / "r", steps=4))
    rows = run_or_resume(_config(tmp_path / "r", steps=6))
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert load(tmp_path / "r" / "config.toml").steps == 6


def test_overwrite_removes_a_distributed_runs_per_rank_files(tmp_path: Path) -> None:
    out = tmp_path / "r"
    out.mkdir()
    (out / "params-rank3.pt").write_bytes(b"old")
    (out / "forger-rank2-step4.pt").write_bytes(b"old")
    assert RunDirectory(out).holds_a_run()
    train(_config(out), overwrite=True)
    assert not list(out.glob("*rank*"))
    assert read_metrics(out / "metrics.jsonl")[-1]["step"] == 4
