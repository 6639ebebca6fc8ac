"""``byzance votes``: configs, the three kinds end to end on tiny synthetic data, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from byzance.cli import app
from byzance.voting.experiment import VotesConfigError, load_config, run

EXAMPLES = sorted((Path(__file__).parents[2] / "examples" / "votes").glob("*.toml"))

TINY_DATA = {
    "dataset": "synthetic",
    "dataset_params": {"num_users": 200, "num_items": 40, "density": 0.4},
    "min_raters": 20,
    "target_rank": 20,
    "competitor_rank": 2,
    "neighbours": 5,
    "fractions": [0.02, 0.05],
    "threads": 1,
}


def test_shipped_examples_load(tmp_path):
    assert len(EXAMPLES) >= 3
    kinds = {load_config(path, {"out_dir": str(tmp_path)}).kind for path in EXAMPLES}
    assert kinds == {"poisoning", "reputation", "strategy"}


def test_poisoning_run_writes_tables_and_plots(tmp_path):
    cfg = load_config(
        None, {**TINY_DATA, "kind": "poisoning", "mf_steps": 5, "out_dir": str(tmp_path)}
    )
    result = run(cfg)
    poison = [r for r in result.rows if r["table"] == "poisoning"]
    assert len(poison) == 3 * 2 * 4  # attacks x fractions x rules
    rmse = [r for r in result.rows if r["table"] == "rmse"]
    assert {(r["recommender"], r["data"]) for r in rmse} == {
        (rec, data) for rec in ("item scores", "factorization") for data in ("clean", "attacked")
    }
    assert all(0 < r["rmse"] < 3 for r in rmse)
    for name in ("config.toml", "results.csv", "results.json", "summary.md", "poisoning.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "results.json").read_text()) == result.rows
    assert "pushed target" in (tmp_path / "summary.md").read_text()


def test_reputation_weights_limit_new_accounts(tmp_path):
    cfg = load_config(
        None, {**TINY_DATA, "kind": "reputation", "fractions": [0.3], "out_dir": str(tmp_path)}
    )
    rows = run(cfg).rows
    by = {(r["rule"], r["weighted"]): r for r in rows}
    # 60 new accounts weigh 60/30 = 2 users: the weighted mean barely moves, the plain one jumps.
    assert by[("average", False)]["rank"] < by[("average", True)]["rank"]
    assert by[("average", True)]["rank"] >= by[("average", True)]["clean_rank"] - 2
    assert (tmp_path / "reputation.png").is_file()


def test_strategy_run(tmp_path):
    cfg = load_config(
        None,
        {
            "kind": "strategy",
            "ns": [5, 40],
            "voters": 4,
            "trials": 1,
            "prediction_sample": 2000,
            "scales": [2.0, 1.0],
            "care": [2.0, 1.0],
            "skews": {"gm": [1.0, 1.0], "skewed": [2.0, 1.0]},
            "threads": 1,
            "out_dir": str(tmp_path),
        },
    )
    rows = run(cfg).rows
    mean = {r["n"]: r for r in rows if r["rule"] == "mean"}
    assert mean[40]["alpha_mean"] == pytest.approx(39.0)
    assert {r["rule"] for r in rows} == {"mean", "gm", "skewed"}
    assert (tmp_path / "strategy.png").is_file()


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"kindd": "strategy"}, "Did you mean 'kind'"),
        ({"kind": "poison"}, "Did you mean 'poisoning'"),
        ({"rules": ["krum"]}, "Accepted: average, median"),
        ({"fractions": [1.5]}, r"'fractions': \[1.5\] is not a list of numbers in \(0, 1\)"),
        ({"scales": [1.0, 1.0], "care": [1.0]}, "same length"),
        ({"dataset": "synthetic", "dataset_params": {"users": 3}}, "dataset_params"),
        ({"dataset": "synthetic", "dataset_params": {"density": "x"}}, 'density = "x"'),
        ({"factorization": "maybe"}, "'factorization': 'maybe' is not true or false"),
        ({"mf_lr": "nan"}, "'mf_lr': 'nan' is not a finite number > 0"),
        ({"ns": [2, 5]}, r"'ns': \[2, 5\] is not a list of integers >= 3"),
        ({"skews": {"s": [1.0, -1.0]}}, "'skews'"),
        ({"skews": {"s": [1.0]}}, "must be a list of 2 positive numbers"),
        ({"trials": 1.5}, "'trials': 1.5 is not an integer"),
    ],
)
def test_bad_configs_are_refused_clearly(overrides, match):
    with pytest.raises(VotesConfigError, match=match):
        load_config(None, overrides)


def test_cli_votes(tmp_path):
    config = tmp_path / "votes.toml"
    config.write_text(
        'kind = "strategy"\nns = [4]\nvoters = 2\ntrials = 1\nprediction_sample = 500\n'
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["votes", "--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "strategic gain" in result.output and (out / "summary.md").is_file()
    config.write_text('kind = "nope"\n')
    result = CliRunner().invoke(app, ["votes", "--config", str(config)])
    assert result.exit_code == 2 and "unknown value 'nope'" in result.output


def test_sectioned_configs_load_and_the_written_config_reads_back(tmp_path):
    from byzance.voting.experiment import SCHEMA, dumps

    config = tmp_path / "votes.toml"
    config.write_text(
        '[run]\nkind = "strategy"\n[strategy]\nns = [4]\nvoters = 2\ntrials = 1\n'
        "prediction_sample = 500\n"
    )
    cfg = load_config(config, {"out_dir": str(tmp_path / "out")})
    assert (cfg.kind, cfg.ns, cfg.voters) == ("strategy", [4], 2)
    assert {"run", "data", "poisoning", "rmse", "reputation", "strategy"} == set(SCHEMA.sections)
    config.write_text("[run]\nns = [4]\n")
    with pytest.raises(
        VotesConfigError, match=r"'ns' belongs in section \[strategy\], not \[run\]"
    ):
        load_config(config)
    run(cfg)
    written = tmp_path / "out" / "config.toml"
    assert "[strategy]" in written.read_text()
    assert load_config(written) == cfg == load_config(None, {**cfg.__dict__})
    assert dumps(cfg) == written.read_text()
