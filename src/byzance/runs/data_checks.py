"""Validation of a run config against its data set: the data, the model, a data attack.

:func:`dataset_facts` loads a data set once per process and keeps what
validation needs (:class:`DataFacts`); the checks build the partition, the
model (one forward pass, the known optimum's shape) and a dry run of a data
attack from those facts. :func:`byzance.runs.validation.validate` calls them
after the rule and the gradient attack.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from byzance.errors import ByzanceError
from byzance.runs.keytypes import ConfigError, check_params

if TYPE_CHECKING:
    from byzance.runs.config import RunConfig

__all__ = [
    "DataFacts",
    "check_data",
    "check_data_attack",
    "check_model",
    "config_failure",
    "dataset_facts",
]


def config_failure(key: str, what: str, err: Exception) -> ConfigError:
    """The one-line error of config key ``key`` when ``what`` (a dry run, a load) failed with ``err``."""
    detail = str(err) if isinstance(err, ByzanceError) else f"{type(err).__name__}: {err}"
    return ConfigError(f"config key {key!r}: {what}: {detail}".replace("\n", " "))


@dataclass(frozen=True)
class DataFacts:
    """What validation needs to know of a data set as configured (no images kept)."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    task: str
    y_train: Any  # torch.Tensor (N,): the training labels, for the partition's dry run
    optimum_size: int | None


_FACTS: OrderedDict[str, DataFacts] = OrderedDict()
_FACTS_KEPT = 16


def dataset_facts(
    name: str, *, seed: int = 0, test_fraction: float = 0.2, params: Mapping[str, Any] | None = None
) -> DataFacts:
    """Load the data set once per process (per name, seed, split, parameters) and keep its facts.

    Raises what :func:`byzance.data.load` raises.
    """
    from byzance import data

    params = dict(params or {})
    cache = json.dumps([name, seed, test_fraction, params], sort_keys=True, default=repr)
    if cache in _FACTS:
        _FACTS.move_to_end(cache)
        return _FACTS[cache]
    ds = data.load(name, seed=seed, test_fraction=test_fraction, **params)
    facts = DataFacts(
        name=name,
        input_shape=tuple(ds.input_shape),
        num_classes=ds.num_classes,
        task=ds.task,
        y_train=ds.y_train,
        optimum_size=None if ds.optimum is None else ds.optimum.numel(),
    )
    _FACTS[cache] = facts
    while len(_FACTS) > _FACTS_KEPT:
        _FACTS.popitem(last=False)
    return facts


def check_data(config: RunConfig) -> DataFacts:
    """The data set's parameters, then loading it, then the partition among the workers."""
    from byzance import data

    spec = data.get(config.dataset)
    check_params(
        "dataset_params",
        f"data set {config.dataset!r}",
        spec.build,
        config.dataset_params,
        reserved=("seed", "test_fraction"),
    )
    try:
        facts = dataset_facts(
            config.dataset,
            seed=config.seed,
            test_fraction=config.test_fraction,
            params=config.dataset_params,
        )
    except Exception as err:
        first = str(err).split(" ", 1)[0].split("=", 1)[0]
        if first == "test_fraction":
            key_name = "test_fraction"
        elif first in config.dataset_params:
            key_name = "dataset_params"
        else:
            key_name = "dataset"
        raise config_failure(key_name, f"loading {config.dataset!r}", err) from None
    n_train = len(facts.y_train)
    if config.workers > n_train:
        raise ConfigError(
            f"config key 'test_fraction': {config.test_fraction} leaves {n_train} training "
            f"sample(s) of {config.dataset!r} for {config.workers} workers; every worker needs at "
            "least one. Lower test_fraction or workers."
        )
    scheme = config.partition if facts.task == "classification" else "iid"
    try:
        data.partition(
            facts.y_train,
            config.workers,
            scheme,
            alpha=config.alpha,
            classes_per_worker=config.classes_per_worker,
            shards_per_worker=config.shards_per_worker,
            seed=config.seed,
        )
    except Exception as err:
        key_name = "classes_per_worker" if scheme == "extreme" else "partition"
        raise config_failure(key_name, f"partition {scheme!r} of {n_train} samples", err) from None
    return facts


def check_model(config: RunConfig, facts: DataFacts) -> None:
    """Build the model for the data set, one forward pass, and the optimum's shape if known."""
    import torch

    from byzance import models

    build = _model_builder(config.model)
    if build is not None:
        check_params("model_params", f"model {config.model!r}", build, config.model_params, skip=2)
    key_name = "model_params" if config.model_params else "model"
    where = f"{config.model} for {config.dataset!r} (inputs {facts.input_shape}"
    where += f", {facts.num_classes} classes)" if facts.num_classes else ", regression)"
    try:
        model = models.build(
            config.model, facts.input_shape, facts.num_classes, **config.model_params
        )
        with torch.no_grad():
            out = model(torch.zeros(2, *facts.input_shape))
    except Exception as err:
        raise config_failure(key_name, f"building {where}", err) from None
    expected = (2, facts.num_classes) if facts.num_classes else (2,)
    if tuple(out.shape) != expected:
        raise ConfigError(
            f"config key {key_name!r}: {where} gives outputs of shape {tuple(out.shape)[1:]} per "
            f"sample; the data set needs {expected[1:]}."
        )
    if facts.optimum_size is not None:
        size = sum(p.numel() for p in model.parameters())
        if size != facts.optimum_size:
            raise ConfigError(
                f"config key 'model': {config.dataset!r} measures the distance to its known "
                f"optimum, the {facts.optimum_size} parameters of one linear layer; model "
                f"{config.model!r} has {size}. Use model = 'logistic'."
            )


def _model_builder(name: str) -> Any:
    """The class or function that builds model ``name`` (for its parameters' names and types)."""
    from byzance import models

    registry = getattr(models, "_MODELS", None)  # models has no public lookup of its builders
    try:
        return registry.get(name).build if registry is not None else None
    except ByzanceError:
        return None


def check_data_attack(config: RunConfig, facts: DataFacts) -> None:
    """A data attack (label flipping) needs class labels: a dry run on the data set's."""
    from byzance import attacks

    if config.attack == "none":
        return
    attack = attacks.get(config.attack)
    if attack.kind != "data":
        return
    if facts.task != "classification":
        raise ConfigError(
            f"config key 'attack': {config.attack} changes class labels, and {config.dataset!r} "
            "is a regression task; choose a gradient attack."
        )
    key_name = "attack_params" if config.attack_params else "attack"
    try:
        attack(facts.y_train[:16], num_classes=facts.num_classes, **config.attack_params)
    except Exception as err:
        raise config_failure(
            key_name, f"{config.attack} fails on {config.dataset!r}'s labels", err
        ) from None
