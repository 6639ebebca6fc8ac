"""The shipped examples load, validate and run."""

from __future__ import annotations

from pathlib import Path

import pytest

from byzance.runs.config import load
from byzance.runs.runner import train

EXAMPLES = sorted(
    p
    for p in (Path(__file__).parent.parent / "examples").glob("*.toml")
    if not p.name.startswith("faults_")  # `byzance faults` configs: tests/faults
)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_a_few_steps(path, tmp_path):
    cfg = load(path, {"steps": 3, "eval_every": 3, "out_dir": str(tmp_path / "run")})
    result = train(cfg)
    assert result.final["step"] == 3


def test_there_are_examples():
    assert len(EXAMPLES) >= 2
