# ruff: noqa: RUF009 (key() declares a dataclass field; list and table defaults are copied)
"""Run configuration: a TOML file, flags that override any key, every value checked before any work.

Every key is declared once below (:class:`RunConfig`): its type, default,
section, range or accepted values and a one-line description; reading,
checking, writing (:func:`dumps`) and ``byzance train --help`` all come from
those declarations (:mod:`byzance.runs.schema`). A file may group the keys in
sections (``[data]``, ``[rule]``, ...) or list them flat, or both; the Python
attributes stay flat (``config.workers``).

:func:`validate` checks, in order: each key on its own (type, range, accepted
values), the counts that depend on each other (byzantine < workers, ...), the
distributed keys, the rule (its parameters, its n/f requirement, a dry run on
random vectors), the attack (its parameters, a dry run), the data set (its
parameters, the split leaving every worker a training sample, the partition),
and the model (built for the data set's inputs, one forward pass, and the
known optimum's shape where the data set has one). Any failure is one
:class:`ConfigError` line naming the key, the value and what is accepted. The
checks live in :mod:`byzance.runs.validation` and :mod:`byzance.runs.data_checks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from byzance.errors import ToleranceError
from byzance.runs.data_checks import DataFacts as DataFacts
from byzance.runs.data_checks import dataset_facts
from byzance.runs.schema import ConfigError, Schema, key

if TYPE_CHECKING:
    from byzance import aggregators

__all__ = [
    "KEYS",
    "SCHEMA",
    "ConfigError",
    "ConfigToleranceError",
    "RunConfig",
    "dataset_facts",
    "dumps",
    "flatten",
    "load",
    "parse_flags",
    "validate",
]


class ConfigToleranceError(ConfigError, ToleranceError):
    """The configured rule cannot tolerate the configured f among the workers (a grid cell: infeasible)."""


PARTITIONS = ("iid", "dirichlet", "extreme", "shards")
MOMENTUM_FORMS = ("ema", "heavy_ball")  # byzance.sim.core.MOMENTUM_FORMS, without torch
PRECISIONS = ("fp32", "bf16")  # byzance.sim.core.PRECISIONS
SCHEDULES = ("constant", "cosine", "step")
TOPOLOGIES = ("parameter_server", "decentralized")
AGGREGATIONS = ("gathered", "sharded", "replicated")
MODES = ("sync", "async")
ALGORITHMS = ("sgd", "fedavg")
BYZANTINE_SAMPLING = ("fixed", "random")
STALENESS = ("none", "exponential", "inverse")
SERVER_ATTACKS = ("none", "large_norm", "sign_flip", "per_worker")
TRANSPORTS = ("gloo", "udp")
UDP_FILLS = ("auto", "median", "zero")
# A datagram carries a header (40 bytes), one float32 coordinate at least and an
# HMAC-SHA256 tag (32 bytes), and fits the largest UDP payload over IPv4
# (byzance.distributed.udp.datagram; tests/distributed/test_dist_config.py checks these agree).
UDP_DATAGRAM_MIN, UDP_DATAGRAM_MAX = 40 + 4 + 32, 65_507


def _datasets() -> list[str]:
    from byzance.data import names

    return names()


def _models() -> list[str]:
    from byzance import models

    return models.names()


def _attacks() -> list[str]:
    from byzance import attacks

    return ["none", *attacks.names()]


def _preaggregators() -> list[str]:
    from byzance import aggregators

    return aggregators.names("preaggregator")


def _aggregators() -> list[str]:
    from byzance import aggregators

    return aggregators.names("aggregator")


@dataclass
class RunConfig:
    """One training run: the simulator's (``byzance train``) or real processes' (``byzance launch``)."""

    # -- run
    seed: int = key(
        0, "run", "seed of the split, the initialization, the batches and the attacks", ge=0
    )
    steps: int = key(
        300, "run", "training steps (async mode: gradients arriving at the server)", ge=1
    )
    mode: str = key(
        "sync", "run", "sync: one step waits for every worker; async: Kardam", choices=MODES
    )
    algorithm: str = key(
        "sgd",
        "run",
        "sgd: every worker sends a gradient each step; fedavg: rounds of sampled clients' "
        "local steps (a step is a round)",
        choices=ALGORITHMS,
    )
    device: str = key(
        "auto",
        "run",
        "auto (CUDA when available, else the CPU), cpu, cuda or cuda:N; under torchrun each "
        "rank of a CUDA run takes its LOCAL_RANK device",
    )
    eval_every: int = key(50, "run", "evaluate on the test set every this many steps", ge=1)
    checkpoint_every: int = key(100, "run", "save a checkpoint every this many steps", ge=1)
    out_dir: str = key("runs/run", "run", "the run directory (config, metrics, checkpoints, plots)")
    # -- data
    dataset: str = key("mnist5k", "data", "the data set (byzance.data)", choices=_datasets)
    dataset_params: dict[str, Any] = key(
        {}, "data", "the data set's own parameters, e.g. {samples = 20000, l2 = 0.1}"
    )
    test_fraction: float = key(
        0.2, "data", "fraction of the samples held out for testing", gt=0, lt=1
    )
    partition: str = key(
        "iid", "data", "how the training set is split among the workers", choices=PARTITIONS
    )
    alpha: float = key(
        1.0, "data", "Dirichlet concentration (partition = dirichlet): small = skewed", gt=0
    )
    classes_per_worker: int = key(
        2, "data", "classes each worker holds (partition = extreme)", ge=1
    )
    shards_per_worker: int = key(
        2, "data", "label-sorted shards dealt to each worker (partition = shards)", ge=1
    )
    # -- architecture
    model: str = key("mlp", "architecture", "the model (byzance.models)", choices=_models)
    model_params: dict[str, Any] = key(
        {}, "architecture", "the model's own parameters, e.g. {hidden = [1024, 256]}"
    )
    # -- participants
    workers: int = key(
        20, "participants", "workers (byzance launch: processes), Byzantine ones included", ge=1
    )
    byzantine: int = key(4, "participants", "Byzantine workers among them", ge=0)
    batch_size: int = key(32, "participants", "samples per worker per step", ge=1, le=1_000_000)
    worker_momentum: float = key(
        0.0, "participants", "momentum each worker applies before sending", ge=0, lt=1
    )
    precision: str = key(
        "fp32",
        "participants",
        "bf16: the workers' forward and backward under bfloat16 autocast (the aggregation "
        "stays float32)",
        choices=PRECISIONS,
    )
    worker_momentum_form: str = key(
        "ema",
        "participants",
        "ema: m <- beta m + (1 - beta) g (torch's dampening = beta); heavy_ball: m <- beta m + g",
        choices=MOMENTUM_FORMS,
    )
    l2: float = key(
        -1.0,
        "participants",
        "(l2 / 2) |theta|^2 in every worker's objective",
        ge=0,
        special={-1: "the data set's own"},
    )
    # -- rule
    aggregator: str = key(
        "average",
        "rule",
        "the aggregation rule (byzance rules); 'nnm>krum' puts pre-aggregators first",
    )
    aggregator_params: dict[str, Any] = key({}, "rule", "the rule's parameters, e.g. {m = 5}")
    preaggregators: list[str] = key(
        [], "rule", "pre-aggregators applied in order before the rule", choices=_preaggregators
    )
    preaggregator_params: dict[str, Any] = key(
        {}, "rule", "per pre-aggregator, its parameters: {bucketing = {s = 2}}"
    )
    f: int = key(
        -1,
        "rule",
        "Byzantine inputs the rule tolerates",
        ge=0,
        special={-1: "the number of Byzantine workers"},
    )
    # -- adversary
    attack: str = key(
        "none", "adversary", "what the Byzantine workers send (byzance attacks)", choices=_attacks
    )
    attack_params: dict[str, Any] = key({}, "adversary", "the attack's parameters, e.g. {z = 1.5}")
    # -- optimizer
    lr: float = key(0.1, "optimizer", "the server's learning rate", gt=0, le=1e30)
    momentum: float = key(0.0, "optimizer", "the server optimizer's momentum", ge=0, lt=1)
    weight_decay: float = key(
        0.0, "optimizer", "the server optimizer's weight decay", ge=0, le=1e30
    )
    lr_schedule: str = key("constant", "optimizer", "learning-rate schedule", choices=SCHEDULES)
    lr_step_size: int = key(100, "optimizer", "lr_schedule = step: steps between decays", ge=1)
    lr_gamma: float = key(
        0.5, "optimizer", "lr_schedule = step: factor of each decay", gt=0, le=1e30
    )
    # -- asynchronous (mode = "async", Kardam)
    slow_workers: int = key(0, "asynchronous", "the last honest workers are slow", ge=0)
    slow_rate: float = key(
        0.2, "asynchronous", "slow workers' delays ~ Exp(slow_rate), the others' Exp(1)", gt=0
    )
    byzantine_rate: float = key(
        4.0, "asynchronous", "Byzantine workers' delays ~ Exp(rate): they lie, fast", gt=0
    )
    kardam: bool = key(True, "asynchronous", "filter gradients with Kardam's Lipschitz test")
    kardam_window: int = key(
        50, "asynchronous", "Kardam: recent Lipschitz coefficients compared", ge=1
    )
    kardam_frequency_filter: bool = key(
        True, "asynchronous", "Kardam: a worker is the source of at most 1 of 2f + 1 accepted"
    )
    kardam_max_rejections: int = key(
        -1,
        "asynchronous",
        "Kardam (our addition, off by default): a worker's norm-clipped pass after this "
        "many Lipschitz rejections in a row",
        ge=0,
        special={-1: "never, the paper's filter"},
    )
    staleness: str = key(
        "exponential", "asynchronous", "dampening of stale gradients", choices=STALENESS
    )
    staleness_beta: float = key(
        0.1, "asynchronous", "dampening: exp(-beta tau) or 1 / (1 + beta tau)", ge=0
    )
    # -- federated (algorithm = "fedavg": workers are the client population)
    clients_per_round: int = key(
        -1,
        "federated",
        "clients sampled each round",
        ge=1,
        le=1_000_000,
        special={-1: "client_fraction of them, or all"},
    )
    client_fraction: float = key(
        -1.0,
        "federated",
        "fraction of the clients sampled each round",
        gt=0,
        le=1,
        special={-1: "unused"},
    )
    byzantine_sampling: str = key(
        "fixed",
        "federated",
        "fixed: exactly f Byzantine clients per round; random: drawn with the others",
        choices=BYZANTINE_SAMPLING,
    )
    local_steps: int = key(1, "federated", "SGD steps each sampled client runs", ge=1, le=100_000)
    local_lr: float = key(0.1, "federated", "the clients' learning rate", gt=0, le=1e30)
    local_momentum: float = key(
        0.0, "federated", "the clients' momentum within a round (m <- beta m + g)", ge=0, lt=1
    )
    # -- multi_server (several parameter servers, ByzSGD style, sync mode)
    servers: int = key(1, "multi_server", "parameter servers", ge=1)
    byzantine_servers: int = key(0, "multi_server", "Byzantine servers among them", ge=0)
    server_rule: str = key(
        "median", "multi_server", "how models from the servers are combined", choices=_aggregators
    )
    server_attack: str = key(
        "large_norm", "multi_server", "what Byzantine servers send", choices=SERVER_ATTACKS
    )
    exchange_every: int = key(
        1, "multi_server", "servers exchange models every this many steps", ge=1
    )
    # -- processes (byzance launch / dist, under torchrun)
    topology: str = key(
        "parameter_server", "processes", "who aggregates: rank 0, or every rank", choices=TOPOLOGIES
    )
    aggregation: str = key(
        "gathered",
        "processes",
        "decentralized: every rank the whole rule (gathered), or 1/n of the coordinates "
        "each (sharded; replicated: each slice by 2f + 1 ranks)",
        choices=AGGREGATIONS,
    )
    byzantine_ranks: list[int] = key(
        [], "processes", "the Byzantine ranks ([]: the last byzantine ones)", ge=0
    )
    step_timeout: float = key(
        30.0, "processes", "seconds a step waits for the gradients", gt=0, le=1e7
    )
    worker_timeout: float = key(
        300.0, "processes", "seconds a worker waits for the server's parameters", gt=0, le=1e7
    )
    faults: dict[str, str] = key(
        {}, "processes", "injected failures by rank: {2 = 'crash@5', 3 = 'slow:0.1'}"
    )
    # -- communication
    transport: str = key(
        "gloo",
        "communication",
        "gloo, or udp: gradients as datagrams, losses tolerated",
        choices=TRANSPORTS,
    )
    udp_keys: str = key(
        "", "communication", "udp: a JSON key file (byzance udp-keys) or 'env:VARIABLE'"
    )
    udp_loss: dict[str, Any] = key(
        {}, "communication", "udp: injected loss {drop, duplicate, reorder_window, max_delay_s}"
    )
    udp_grace: float = key(
        0.05, "communication", "udp: seconds for datagrams in flight once all sent", gt=0
    )
    udp_datagram_bytes: int = key(
        60_000,
        "communication",
        "udp: datagram size (1472 fits an Ethernet MTU)",
        ge=UDP_DATAGRAM_MIN,
        le=UDP_DATAGRAM_MAX,
    )
    udp_fill: str = key(
        "auto", "communication", "udp: missing coordinates for the rule", choices=UDP_FILLS
    )

    @property
    def round_size(self) -> int:
        """Inputs the rule aggregates each step: the workers, or fedavg's sampled clients."""
        if self.algorithm != "fedavg":
            return self.workers
        if self.clients_per_round > 0:
            return self.clients_per_round
        if self.client_fraction > 0:
            return max(1, round(self.client_fraction * self.workers))
        return self.workers

    @property
    def tolerated(self) -> int:
        """The f given to the rule (fedavg: the Byzantine clients expected in a round)."""
        if self.f >= 0:
            return self.f
        if self.algorithm == "fedavg":
            return round(self.round_size * self.byzantine / self.workers)
        return self.byzantine

    def rule(self) -> aggregators.Rule:
        """The configured rule, pre-aggregators first, with their parameters bound."""
        from byzance import aggregators

        final = aggregators.get(self.aggregator, **self.aggregator_params)
        if not self.preaggregators:
            return final
        stages = [
            aggregators.get(p, **self.preaggregator_params.get(p, {})) for p in self.preaggregators
        ]
        return aggregators.compose(*stages, final)

    def to_dict(self) -> dict[str, Any]:
        """Every key, flat (``{"seed": 0, "dataset": "mnist5k", ...}``)."""
        return asdict(self)


SCHEMA = Schema(RunConfig, error=ConfigError, what="byzance run config")
KEYS = SCHEMA.keys


def flatten(table: Mapping[str, Any]) -> dict[str, Any]:
    """A run config table, sectioned or flat or both, as flat keys (later entries win)."""
    return SCHEMA.flatten(table, where="run config", strict=False)


def dumps(config: RunConfig) -> str:
    """``config`` as sectioned TOML (each key with its description), as :func:`load` reads it."""
    return SCHEMA.dumps(config)


def load(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Read a TOML run config (or the defaults), apply ``overrides``, validate.

    ``overrides``: flat keys (or sections), e.g. what :func:`parse_flags` returns;
    string values are read as command-line text (``"4"``, ``"true"``, ``"nnm,bucketing"``).
    """
    return validate(RunConfig(**SCHEMA.read(path, overrides)))


def parse_flags(args: list[str]) -> dict[str, Any]:
    """``["--aggregator", "krum", "--f=4"]`` -> {"aggregator": "krum", "f": "4"}."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"expected a --key value pair, got {arg!r}.")
        name, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args):
                raise ConfigError(f"flag --{name} needs a value.")
            value = args[i + 1]
            i += 1
        out[SCHEMA.key_name(name)] = value
        i += 1
    return out


def validate(config: RunConfig) -> RunConfig:
    """Check every value, in dependency order; raises :class:`ConfigError`.

    A rule that cannot tolerate f among the workers raises
    :class:`ConfigToleranceError`, also a :class:`~byzance.errors.ToleranceError`.
    Fills in what the config implies: ``aggregator = "nnm>krum"`` becomes
    ``preaggregators = ["nnm"]``, ``aggregator = "krum"``; ``byzantine_ranks``
    sets ``byzantine``. The checks: :func:`byzance.runs.validation.validate`.
    """
    from byzance.runs.validation import validate as check_all  # it imports this module

    return check_all(config)
