"""The baselines behave as published: the average is the plain mean, a run that breaks is recorded.

Before: the average dropped a NaN row like the robust rules (and trained to
0.92 under the nan attack), with f = 0 the run crashed with a traceback, and
large_norm's new random direction every step let the average survive one
Byzantine worker (Blanchard et al. 2017: one worker takes it anywhere).
"""

from __future__ import annotations

import json

from byzance.runs.config import RunConfig
from byzance.runs.runner import train

COMMON = dict(
    dataset="digits", model="logistic", workers=10, byzantine=1, steps=20, lr=0.1, batch_size=16
)


def _rows(result) -> list[dict]:
    return [
        json.loads(line)
        for line in (result.out_dir / "metrics.jsonl").read_text().split("\n")
        if line
    ]


def test_the_average_under_nan_is_recorded_as_diverged_at_step_1(tmp_path):
    for f in (1, 0):  # f = 0 crashed on NonFiniteInputError before
        cfg = RunConfig(
            **COMMON, aggregator="average", attack="nan", f=f, out_dir=str(tmp_path / f"f{f}")
        )
        result = train(cfg)
        rows = _rows(result)
        assert len(rows) == 1 and rows[0]["diverged"] and rows[0]["step"] == 1
        assert "not finite" in rows[0]["reason"]
        assert "accuracy" in rows[0]  # the model before the broken step, evaluated
        assert "Diverged at step 1" in (result.out_dir / "summary.md").read_text()


def test_a_robust_rule_drops_the_nan_rows_and_counts_them_per_step(tmp_path):
    cfg = RunConfig(
        **{**COMMON, "byzantine": 2},
        aggregator="median",
        attack="nan",
        eval_every=20,
        out_dir=str(tmp_path / "median"),
    )
    rows = _rows(train(cfg))
    assert len(rows) == 20 and not any(r.get("diverged") for r in rows)
    assert all(r["nonfinite_dropped"] == 2 for r in rows)
    assert rows[-1]["accuracy"] > 0.5


def test_no_nonfinite_input_counts_zero(tmp_path):
    cfg = RunConfig(**COMMON, aggregator="median", attack="sign_flip", out_dir=str(tmp_path / "s"))
    assert all(r["nonfinite_dropped"] == 0 for r in _rows(train(cfg)))


def test_one_large_norm_worker_takes_the_average_away(tmp_path):
    """Blanchard et al. 2017, Lemma 1: the published push breaks the average; noise did not."""
    cfg = RunConfig(
        **{**COMMON, "steps": 40},
        aggregator="average",
        attack="large_norm",
        attack_params={"scale": 1e4},  # finite all along: the damage is the direction
        eval_every=40,
        out_dir=str(tmp_path / "push"),
    )
    pushed = train(cfg).final
    assert pushed.get("diverged") or pushed["accuracy"] < 0.3
    noise = train(
        RunConfig(
            **{**COMMON, "steps": 40},
            aggregator="average",
            attack="large_norm",
            attack_params={"scale": 1e4, "direction": "random"},
            eval_every=40,
            out_dir=str(tmp_path / "noise"),
        )
    ).final
    assert noise["accuracy"] > pushed.get("accuracy", 0.0)
