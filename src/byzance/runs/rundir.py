"""A run directory: one run's config, metrics, checkpoint, summary and plots, never two runs'.

Files: ``config.toml`` (the resolved config), ``metrics.jsonl`` (one row per
step), ``metrics.csv``, ``accuracy.png``, ``summary.md`` and ``checkpoint.pt``.

- A directory that holds another run is refused (:meth:`RunDirectory.claim`):
  continue it with ``--resume``, or replace it with ``--overwrite``.
- A checkpoint records the fingerprint of the config that wrote it; resuming
  checks it against the directory's config.
- Checkpoints hold only tensors and plain values and are read with
  ``torch.load(..., weights_only=True)``: opening one never runs code. An
  empty, truncated or corrupt checkpoint is one clear error naming the file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pickle
import tomllib
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from byzance.errors import ByzanceError
from byzance.runs.config import ConfigError, RunConfig, dumps
from byzance.sim import CheckpointMismatchError, Composition

CHECKPOINT_FORMAT = 2
#: The files a run writes; --overwrite removes these and nothing else.
RUN_FILES = (
    "config.toml",
    "metrics.jsonl",
    "metrics.csv",
    "summary.md",
    "accuracy.png",
    "checkpoint.pt",
    "checkpoint.tmp",
)
#: Files of a distributed run: each decentralized node's parameters, each forger's streams.
RUN_FILE_PATTERNS = ("params-rank*.pt", "forger-rank*-step*.pt")


class CheckpointError(ByzanceError):
    """A checkpoint cannot be used: missing parts, corrupt, or another run's."""


#: Keys that do not shape a run's numbers up to a checkpoint: where it is written, how often it
#: evaluates and checkpoints, how long it runs (unless a cosine schedule depends on it), and the
#: injected faults of a distributed run (test instruments: a resumed run drops them).
NOT_IDENTITY = ("out_dir", "eval_every", "checkpoint_every", "steps", "faults")


def fingerprint(config: RunConfig, *, ignore: tuple[str, ...] = NOT_IDENTITY) -> str:
    """A hash of everything in ``config`` that shapes the run's numbers.

    Two configs with the same fingerprint describe the same run, possibly
    continued for more steps: a checkpoint of one resumes the other. ``ignore``
    names the keys left out (a grid cell's identity leaves out only ``out_dir``).
    """
    import torch

    from byzance.devices import identity_device

    values = {k: v for k, v in config.to_dict().items() if k not in ignore}
    # The device counts by its kind (cuda:0 is cuda:1), and a CPU run's not at all.
    kind = identity_device(config.device, torch.cuda.is_available())
    values.pop("device", None)
    if kind != "cpu":
        values["device"] = kind
    if config.lr_schedule == "cosine":
        values["steps"] = config.steps
    canonical = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def save_atomically(state: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a kill never leaves half a checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


HOW = "delete it to restart the run from step 0, or start over with --overwrite"


def load_checkpoint_part(path: Path) -> dict[str, Any]:
    """A file of tensors and plain values, read with ``weights_only=True``; one clear error if bad."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (a kill while writing?): {HOW}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, OSError) as err:
        why = type(err).__name__  # not torch's text: it suggests turning the safe load off
        raise CheckpointError(
            f"checkpoint {str(path)!r} is truncated, corrupt or holds more than tensors and "
            f"plain values ({why}); byzance never opens it otherwise: {HOW}."
        ) from None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"checkpoint {str(path)!r} is not a byzance checkpoint: {HOW}.")
    return dict(state)


def load_checkpoint_file(path: Path) -> dict[str, Any]:
    """A run's checkpoint, read with ``weights_only=True`` and checked; one clear error if bad."""
    state = load_checkpoint_part(path)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a byzance checkpoint of this version: {HOW}."
        )
    elapsed = state.get("elapsed_s")
    if not isinstance(state.get("state"), Mapping) or not isinstance(elapsed, int | float):
        raise CheckpointError(f"checkpoint {str(path)!r} lacks its state or its time: {HOW}.")
    return state


def drop_metrics_after(path: Path, step: int) -> None:
    """Keep the rows of metrics.jsonl up to ``step`` (a resumed run rewrites the rest)."""
    kept = [r for r in read_metrics(path) if r["step"] <= step]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl file (a torn last line, from a kill, is ignored)."""
    rows: list[dict[str, Any]] = []
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """The metrics as CSV, one column per key seen in any row."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def write_config(config: RunConfig, path: Path) -> None:
    """The resolved config as TOML (read back by :func:`~byzance.runs.config.load`)."""
    path.write_text(dumps(config))
    tomllib.loads(path.read_text())  # what we write must load


class RunDirectory:
    """The files of one run, and the rules that keep two runs from mixing in them."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)

    @property
    def config_path(self) -> Path:
        return self.out / "config.toml"

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def holds_a_run(self) -> bool:
        """Whether any file of a run is here."""
        if not self.out.is_dir():
            return False
        return any((self.out / name).exists() for name in RUN_FILES) or any(
            any(self.out.glob(pattern)) for pattern in RUN_FILE_PATTERNS
        )

    def check_usable(self) -> None:
        """Refuse an output path that is a file (or under one)."""
        for path in (self.out, *self.out.parents):
            if path.exists() and not path.is_dir():
                raise ConfigError(
                    f"out_dir {str(self.out)!r}: {str(path)!r} is a file, not a directory; "
                    "choose another --out-dir."
                )

    def claim_check(self, resume_command: str = "byzance train --resume") -> None:
        """Raise unless a new run may start here: a directory (or nothing) holding no run."""
        self.check_usable()
        if self.holds_a_run():
            raise ConfigError(
                f"{str(self.out)!r} already holds a run. Continue it with "
                f"`{resume_command} {self.out}`, replace it with --overwrite, "
                "or choose another --out-dir."
            )

    def claim(self, config: RunConfig, *, overwrite: bool = False) -> None:
        """Make the directory this new run's: refuse one holding a run unless ``overwrite``."""
        self.check_usable()
        if self.holds_a_run():
            if not overwrite:
                self.claim_check()
            for name in RUN_FILES:
                (self.out / name).unlink(missing_ok=True)
            for pattern in RUN_FILE_PATTERNS:
                for path in self.out.glob(pattern):
                    path.unlink(missing_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)
        write_config(config, self.config_path)
        self.metrics_path.write_text("")

    def saved_config_matches(self, config: RunConfig) -> bool:
        """Whether the directory's config.toml describes the same run as ``config``."""
        from byzance.runs.config import load

        if not self.config_path.is_file():
            return False
        try:
            saved = load(self.config_path, {"out_dir": str(self.out)})
        except ByzanceError:
            return False
        return fingerprint(saved) == fingerprint(config)

    def save_checkpoint(self, config: RunConfig, state: dict[str, Any], elapsed_s: float) -> None:
        """The training's state, stamped with the config's fingerprint and the time so far."""
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "config": fingerprint(config),
            "elapsed_s": float(elapsed_s),
            "state": state,
        }
        save_atomically(checkpoint, self.checkpoint_path)

    def load_checkpoint(self, config: RunConfig) -> dict[str, Any]:
        """The checkpoint, checked to belong to ``config``'s run."""
        checkpoint = load_checkpoint_file(self.checkpoint_path)
        if checkpoint.get("config") != fingerprint(config):
            raise CheckpointError(
                f"checkpoint {str(self.checkpoint_path)!r} was written by a run with another "
                f"config than {str(self.config_path)!r}: the two do not belong together. "
                "Start the run again with --overwrite."
            )
        return checkpoint

    def restore(self, config: RunConfig, training: Composition, *, drop_metrics: bool) -> float:
        """Load the checkpoint into ``training``; its time so far.

        ``drop_metrics``: the writer of metrics.jsonl drops the rows written after
        the checkpoint (a resumed run writes them again).
        """
        checkpoint = self.load_checkpoint(config)
        try:
            training.load_state_dict(checkpoint["state"])
        except (CheckpointMismatchError, KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(
                f"checkpoint {str(self.checkpoint_path)!r} does not fit this run ({err}); "
                "start the run again with --overwrite."
            ) from None
        if drop_metrics:
            drop_metrics_after(self.metrics_path, training.step_count)
        return float(checkpoint["elapsed_s"])
