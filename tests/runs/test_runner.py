"""Runs: output files, resume after a kill, the train command."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from byzance.cli import app
from byzance.runs.config import RunConfig
from byzance.runs.runner import read_metrics, resume, train

TIMES = ("aggregation_ms", "elapsed_s")


def config(tmp_path, name: str, **changes) -> RunConfig:
    base = dict(
        dataset="digits",
        model="mlp",
        workers=7,
        byzantine=1,
        aggregator="bucketing>median",
        attack="alie",
        steps=30,
        eval_every=10,
        checkpoint_every=10,
        worker_momentum=0.9,
        lr_schedule="cosine",
        out_dir=str(tmp_path / name),
    )
    return RunConfig(**{**base, **changes})


def strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMES} for r in rows]


class KilledError(Exception):
    pass


def test_outputs(tmp_path):
    result = train(config(tmp_path, "run"))
    for name in (
        "config.toml",
        "metrics.jsonl",
        "metrics.csv",
        "accuracy.png",
        "summary.md",
        "checkpoint.pt",
    ):
        assert (result.out_dir / name).is_file(), name
    rows = read_metrics(result.out_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 31))
    assert {"loss", "deviation", "honest_spread", "aggregation_ms"} <= set(rows[0])
    assert "accuracy" in rows[9] and "accuracy" not in rows[8]
    assert "final accuracy" in (result.out_dir / "summary.md").read_text()


def test_resume_after_a_kill_gives_the_same_numbers(tmp_path):
    whole = train(config(tmp_path, "whole"))

    def kill_at_17(step, row):
        if step == 17:
            raise KilledError

    with pytest.raises(KilledError):
        train(config(tmp_path, "killed"), progress=kill_at_17)
    # The metrics hold 17 rows, the checkpoint is at step 10; resuming redoes 11-30.
    assert len(read_metrics(tmp_path / "killed" / "metrics.jsonl")) == 17
    resumed = resume(tmp_path / "killed")
    assert strip(read_metrics(whole.out_dir / "metrics.jsonl")) == strip(
        read_metrics(resumed.out_dir / "metrics.jsonl")
    )


def test_selection_rules_report_the_byzantine_fraction_selected(tmp_path):
    result = train(config(tmp_path, "krum", aggregator="krum", steps=5, eval_every=5))
    rows = read_metrics(result.out_dir / "metrics.jsonl")
    assert all(0.0 <= r["byzantine_selected"] <= 1.0 for r in rows)


def test_train_command(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    args = [
        "train",
        "--dataset",
        "digits",
        "--model",
        "logistic",
        "--steps",
        "12",
        "--eval-every",
        "6",
    ]
    result = runner.invoke(app, [*args, "--aggregator", "median", "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert "final accuracy" in result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 12
    again = runner.invoke(app, ["train", "--resume", str(out)])
    assert again.exit_code == 0, again.output


def test_train_command_reports_config_errors_without_a_traceback(tmp_path):
    result = CliRunner().invoke(app, ["train", "--aggregator", "krun"])
    assert result.exit_code == 2
    assert "Did you mean 'krum'" in result.output
    assert "Traceback" not in result.output


def test_sim_bench_measures_all_three_ways():
    from byzance.experiments.bench_sim import _measure

    row = _measure(("mlp", 3, 4, 1, 1, "cpu"))
    assert row.vectorized_ms > 0 and row.loop_ms > 0 and row.single_ms > 0 and row.peak_mib > 0
    assert row.ratio > 0 and row.steps_per_second > 0
