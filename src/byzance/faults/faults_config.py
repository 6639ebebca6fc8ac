# ruff: noqa: RUF009 (key() declares a dataclass field; list and table defaults are copied)
"""The ``byzance faults`` config: every key declared once, read from TOML, checked before any work.

:class:`FaultsConfig` declares the keys (``byzance faults --help`` lists them);
:func:`load_config` reads a TOML file (flat or sectioned) with overrides and
checks what depends on several keys and on the data set; :func:`dumps` writes
it back. The experiment itself: :mod:`byzance.faults.experiment`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from byzance.faults.injection import FAILURE_KINDS
from byzance.runs.schema import ConfigError, Schema
from byzance.runs.schema import key as config_key

__all__ = [
    "ACTIVATIONS",
    "SCHEMA",
    "FaultsConfig",
    "FaultsConfigError",
    "dumps",
    "load_config",
]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


class FaultsConfigError(ConfigError):
    """A ``byzance faults`` config key or value is invalid."""


def _datasets() -> list[str]:
    from byzance.data import names

    return names()


@dataclass
class FaultsConfig:
    """One ``byzance faults`` run: every key with its default, section, range and description."""

    # -- run
    seed: int = config_key(
        0, "run", "seed of the split, the training and the random failures", ge=0
    )
    out_dir: str = config_key("runs/faults_mnist", "run", "the output directory")
    threads: int = config_key(
        1, "run", "torch threads (0: torch's default; small matrices: 1)", ge=0
    )
    # -- data
    dataset: str = config_key(
        "digits", "data", "a classification data set (byzance.data)", choices=_datasets
    )
    test_fraction: float = config_key(0.2, "data", "fraction of the samples held out", gt=0, lt=1)
    # -- network
    hidden: list[int] = config_key([64, 32], "network", "the MLP's hidden widths", ge=1)
    activation: str = config_key(
        "relu", "network", "the hidden layers' activation", choices=tuple(ACTIVATIONS)
    )
    # -- training
    epochs: int = config_key(40, "training", "training epochs (Adam)", ge=1)
    batch_size: int = config_key(64, "training", "samples per batch", ge=1)
    lr: float = config_key(0.003, "training", "Adam's learning rate", gt=0)
    # -- neurons
    kind: str = config_key(
        "byzantine", "neurons", "neuron failures: crash or byzantine", choices=FAILURE_KINDS
    )
    value_bound: float = config_key(1.0, "neurons", "C: |value| a Byzantine neuron sends", ge=0)
    failures: list[int] = config_key(
        [0, 1, 2, 4, 8], "neurons", "failures per hidden layer, one row each", ge=0
    )
    # -- synapses
    synapse_kind: str = config_key(
        "byzantine", "synapses", "synapse failures: crash or byzantine", choices=FAILURE_KINDS
    )
    synapse_bound: float = config_key(
        0.5, "synapses", "S: |weight change| of a Byzantine synapse", ge=0
    )
    synapse_failures: list[int] = config_key(
        [], "synapses", "failures per Linear layer, one row each ([]: none)", ge=0
    )
    # -- measure
    trials: int = config_key(20, "measure", "random failure patterns per row", ge=1)
    rounds: int = config_key(2, "measure", "sweeps of the adversarial search", ge=1)
    eval_samples: int = config_key(0, "measure", "test inputs measured (0: all)", ge=0)
    # -- overprovisioning
    overprovision: list[list[int]] = config_key(
        [], "overprovisioning", "hidden widths to compare", ge=1
    )
    overprovision_failures: int = config_key(
        2, "overprovisioning", "failures per hidden layer there", ge=0
    )


SCHEMA = Schema(FaultsConfig, error=FaultsConfigError, what="byzance faults config")
_KEYS = SCHEMA.keys


def _validate(cfg: FaultsConfig) -> FaultsConfig:
    """What depends on several keys, and the data set (each key was checked on its own)."""
    from byzance.runs.data_checks import dataset_facts

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise FaultsConfigError(message)

    SCHEMA.check(cfg)
    widths = [cfg.hidden, *cfg.overprovision]
    need(
        all(w for w in widths),
        "config keys 'hidden' and every entry of 'overprovision' must be non-empty lists of widths.",
    )
    need(
        all(len(w) == len(cfg.hidden) for w in cfg.overprovision),
        f"config key 'overprovision': every entry needs {len(cfg.hidden)} widths, like hidden.",
    )
    need(bool(cfg.failures), "config key 'failures' must list at least one number of failures.")
    need(
        all(f <= min(cfg.hidden) for f in cfg.failures),
        f"config key 'failures': per hidden layer, must lie in [0, {min(cfg.hidden)}] (the "
        f"narrowest layer); got {cfg.failures}.",
    )
    need(
        cfg.overprovision_failures <= min((min(w) for w in widths), default=0),
        "config key 'overprovision_failures' must fit in the narrowest hidden layer compared; "
        f"got {cfg.overprovision_failures}.",
    )
    try:
        facts = dataset_facts(cfg.dataset, seed=cfg.seed, test_fraction=cfg.test_fraction)
    except Exception as err:
        key_name = "test_fraction" if str(err).startswith("test_fraction") else "dataset"
        raise FaultsConfigError(
            f"config key {key_name!r}: loading {cfg.dataset!r}: {err}"
        ) from None
    need(
        facts.task == "classification",
        f"config key 'dataset': {cfg.dataset!r} is not a classification task.",
    )
    return cfg


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> FaultsConfig:
    """Read a TOML faults config (flat or sectioned), apply ``overrides`` (e.g. {"out_dir": ...}), validate."""
    return _validate(FaultsConfig(**SCHEMA.read(path, overrides)))


def dumps(cfg: FaultsConfig) -> str:
    """``cfg`` as sectioned TOML, as :func:`load_config` reads it."""
    return SCHEMA.dumps(cfg)
