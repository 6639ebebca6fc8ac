"""A grid cell's directory: its name, the fingerprint of its config, and what to do with it.

A cell lives in ``DIR/cells/<name>``. The name is readable (the cell's axis
values) and stays under the file-system limit on a path component however
many axes there are: past :data:`MAX_NAME` characters it is cut and ends with a
hash of the full values. The name does not decide whether a finished cell may
be reused: its *fingerprint* does, a hash of the whole effective config (the
grid's ``[base]`` included, ``out_dir`` excluded) stored in the cell as
:data:`FINGERPRINT`. A cell whose config changed since it ran is rerun from
scratch; an unchanged one is skipped when finished and resumed otherwise.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any, Literal

from byzance.devices import identity_device as identity_device
from byzance.experiments.grid_axes import column, is_params_value
from byzance.runs.config import RunConfig, load
from byzance.runs.rundir import fingerprint as run_fingerprint

MAX_NAME = 120  # characters (ASCII) in a cell's directory name; the limit is 255 bytes
FINGERPRINT = "fingerprint"  # the file, in a cell's directory, holding its config's hash
_HASH_CHARS = 12
_UNSAFE = re.compile(r"[^A-Za-z0-9_.,+=-]")

CellState = Literal["new", "same", "changed"]


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text.replace(">", "+"))


def values_hash(values: dict[str, Any]) -> str:
    """A short hash of a cell's axis values (canonical JSON), to keep cut names unique."""
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_CHARS]


def readable_name(values: dict[str, Any]) -> str:
    """``aggregator=krum__attack=alie__byzantine=2``: the axis values, file-name safe.

    A parameter axis is named by its column: ``attack.sigma=1000.0``, ``bucketing.s=2``.
    """
    parts = []
    for key, value in values.items():
        if is_params_value(key, value):  # attack_params = [{sigma = 1.0}]: attack.sigma=1.0
            value = {f"{column(key)}.{k}": v for k, v in value.items()}
        elif "." in key:
            key = column(key)
        if isinstance(value, dict):  # a table setting several keys: its keys name it
            inner = [f"{k}={v}" for k, v in value.items() if not isinstance(v, dict)]
            nested = [
                f"{k}.{kk}={vv}"
                for k, v in value.items()
                if isinstance(v, dict)
                for kk, vv in v.items()
            ]
            parts.append(_safe(",".join([*inner, *nested])))
            continue
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        parts.append(f"{key}={_safe(text) or 'none'}")
    return "__".join(parts)


def hashed_name(values: dict[str, Any]) -> str:
    """The readable name cut to fit :data:`MAX_NAME`, ending with a hash of the full values."""
    keep = MAX_NAME - _HASH_CHARS - 1
    return f"{readable_name(values)[:keep]}-{values_hash(values)}"


def cell_name(values: dict[str, Any]) -> str:
    """A cell's directory name: readable when short, else cut and made unique by a hash."""
    name = readable_name(values)
    return name if len(name) <= MAX_NAME else hashed_name(values)


def fingerprint(config: RunConfig) -> str:
    """The cell's identity: the run's fingerprint over its whole config but ``out_dir``.

    Unlike a run's own fingerprint, ``steps``, the evaluation and checkpoint
    intervals and the faults count: a cell whose config changed in any way
    is rerun. The device counts by its kind only, as in the run's fingerprint
    (:func:`byzance.devices.identity_device`).
    """
    return run_fingerprint(config, ignore=("out_dir",))


def _stored_fingerprint(out: Path) -> str | None:
    """The fingerprint the cell directory holds, or that of its config.toml (older grids)."""
    stored = out / FINGERPRINT
    if stored.is_file():
        return stored.read_text().strip() or None
    config = out / "config.toml"
    if config.is_file():
        try:
            return fingerprint(load(config, {"out_dir": str(out)}))
        except (ValueError, OSError):  # unreadable, or keys this version no longer knows
            return None
    return None


def cell_state(config: RunConfig) -> CellState:
    """``new`` (nothing there), ``same`` (ran with this config) or ``changed`` (anything else)."""
    out = Path(config.out_dir)
    if not out.is_dir() or not any(out.iterdir()):
        return "new"
    return "same" if _stored_fingerprint(out) == fingerprint(config) else "changed"


def prepare_cell(config: RunConfig) -> CellState:
    """Make the cell's directory ready for ``config``: a changed cell's old one is removed.

    The fingerprint is written before training starts, so a cell killed at
    any point is recognized (and resumed) by the next run of the grid.
    """
    out = Path(config.out_dir)
    state = cell_state(config)
    if state == "changed":
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / FINGERPRINT).write_text(fingerprint(config) + "\n")
    return state


def run_cell(config: RunConfig) -> str:
    """Run (or resume, or rerun from scratch if its config changed) one cell; its directory."""
    from byzance.runs.runner import run_or_resume

    prepare_cell(config)
    run_or_resume(config, threads=1)  # one process per core
    return config.out_dir
