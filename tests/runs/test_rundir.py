"""Run directories that never mix two runs, and checkpoints that are data, never code."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from byzance.cli import app
from byzance.runs.config import ConfigError, RunConfig
from byzance.runs.rundir import CheckpointError, fingerprint, load_checkpoint_file
from byzance.runs.runner import read_metrics, resume, train

SRC = Path(__file__).resolve().parents[2] / "src"


def config(out: Path, **changes) -> RunConfig:
    base = dict(
        dataset="digits",
        model="mlp",
        model_params={"hidden": [8]},
        workers=5,
        byzantine=1,
        aggregator="median",
        attack="sign_flip",
        steps=6,
        eval_every=3,
        checkpoint_every=3,
        out_dir=str(out),
    )
    return RunConfig(**{**base, **changes})


class KilledError(Exception):
    pass


def _kill_at(step_to_die: int):
    def progress(step, row):
        if step == step_to_die:
            raise KilledError

    return progress


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def test_training_into_a_directory_holding_another_run_is_refused_and_loses_nothing(tmp_path):
    out = tmp_path / "run"
    train(config(out))
    before = _snapshot(out)
    with pytest.raises(ConfigError, match=r"already holds a run.*--resume.*--overwrite"):
        train(config(out, lr=0.5))
    assert _snapshot(out) == before


def test_overwrite_then_a_kill_before_the_first_checkpoint_resumes_the_new_run(tmp_path):
    out = tmp_path / "run"
    train(config(out))  # the old run: lr 0.1, finished, with a checkpoint
    with pytest.raises(KilledError):
        train(config(out, lr=0.5), overwrite=True, progress=_kill_at(2))
    assert not (out / "checkpoint.pt").exists()  # the old run's checkpoint went with it
    resume(out)
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert {r["lr"] for r in rows} == {0.5}  # the new run, not the old one


def test_a_checkpoint_of_another_config_is_refused_on_resume(tmp_path):
    train(config(tmp_path / "a"))
    with pytest.raises(KilledError):
        train(config(tmp_path / "b", lr=0.5), progress=_kill_at(4))
    shutil.copy(tmp_path / "a" / "checkpoint.pt", tmp_path / "b" / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="another config"):
        resume(tmp_path / "b")


def test_the_fingerprint_ignores_where_and_how_long_but_not_what(tmp_path):
    a = config(tmp_path / "a")
    assert fingerprint(a) == fingerprint(config(tmp_path / "b", steps=60, eval_every=1))
    assert fingerprint(a) != fingerprint(config(tmp_path / "a", lr=0.5))
    cosine = config(tmp_path / "a", lr_schedule="cosine")
    assert fingerprint(cosine) != fingerprint(config(tmp_path / "a", lr_schedule="cosine", steps=9))


class _RunsCode:
    """Unpickling this object would run code: what a crafted checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_opening_a_crafted_checkpoint_runs_no_code(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KilledError):
        train(config(out), progress=_kill_at(4))
    marker = tmp_path / "pwned"
    torch.save({"format": 2, "state": _RunsCode(marker)}, out / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt"):
        resume(out)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"PK\x03\x04 truncated", b"\x80\x02 not a checkpoint"],
    ids=["empty", "torn", "junk"],
)
def test_a_bad_checkpoint_is_one_clear_line_naming_the_file(tmp_path, content):
    out = tmp_path / "run"
    with pytest.raises(KilledError):
        train(config(out), progress=_kill_at(4))
    (out / "checkpoint.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match=re.escape(str(out / "checkpoint.pt"))):
        load_checkpoint_file(out / "checkpoint.pt")
    result = CliRunner().invoke(app, ["train", "--resume", str(out)])
    assert result.exit_code == 2, result.output
    assert "checkpoint.pt" in result.output and "Traceback" not in result.output
    assert result.output.strip() != "Aborted."


def test_the_cli_refuses_a_used_directory_and_overwrite_replaces_it(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--dataset", "digits", "--workers", "5", "--byzantine", "1"]
    args += ["--aggregator", "median", "--steps", "2", "--eval-every", "2", "--out-dir", str(out)]
    assert CliRunner().invoke(app, args).exit_code == 0
    refused = CliRunner().invoke(app, [*args, "--lr", "0.5"])
    assert refused.exit_code == 2 and "--overwrite" in refused.output
    assert "Traceback" not in refused.output
    replaced = CliRunner().invoke(app, [*args, "--lr", "0.5", "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert {r["lr"] for r in read_metrics(out / "metrics.jsonl")} == {0.5}


def test_an_out_dir_that_is_a_file_is_one_clear_line(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    result = CliRunner().invoke(app, ["train", "--steps", "1", "--out-dir", str(target)])
    assert result.exit_code == 2
    assert "is a file" in result.output and "Traceback" not in result.output


def test_no_checkpoint_is_ever_opened_with_weights_only_false():
    offenders = [
        f"{path.relative_to(SRC)}:{i}"
        for path in SRC.rglob("*.py")
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if "weights_only=False" in line.replace(" ", "")
    ]
    assert offenders == []
