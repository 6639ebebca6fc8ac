"""Run configuration: a TOML file, flags that override any key, validation before any work.

Every key has a type and a default; an unknown key or a bad value is answered
with the key, the value and what would be accepted (the closest name for a
misspelling); the chosen rule's n/f requirement is checked on load.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from byzance import aggregators, attacks, models
from byzance.errors import ByzanceError, ToleranceError


class ConfigError(ByzanceError):
    """A configuration key or value is invalid."""


PARTITIONS = ("iid", "dirichlet", "extreme")
SCHEDULES = ("constant", "cosine", "step")
TOPOLOGIES = ("parameter_server", "decentralized")


@dataclass
class RunConfig:
    """One training run of the simulator."""

    seed: int = 0
    dataset: str = "mnist5k"
    dataset_params: dict[str, Any] = field(default_factory=dict)
    test_fraction: float = 0.2
    model: str = "mlp"
    model_params: dict[str, Any] = field(default_factory=dict)  # e.g. {hidden = [1024, 256]}
    workers: int = 20
    byzantine: int = 4
    f: int = -1  # Byzantine inputs tolerated by the rule; -1: the number of Byzantine workers
    partition: str = "iid"
    alpha: float = 1.0
    classes_per_worker: int = 2
    aggregator: str = "average"
    aggregator_params: dict[str, Any] = field(default_factory=dict)
    preaggregators: list[str] = field(default_factory=list)
    preaggregator_params: dict[str, Any] = field(default_factory=dict)
    attack: str = "none"
    attack_params: dict[str, Any] = field(default_factory=dict)
    steps: int = 300
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.0
    worker_momentum: float = 0.0
    weight_decay: float = 0.0  # the server optimizer's
    l2: float = -1.0  # in every worker's objective: (l2 / 2) |theta|^2; -1: the data set's own
    lr_schedule: str = "constant"
    lr_step_size: int = 100
    lr_gamma: float = 0.5
    eval_every: int = 50
    checkpoint_every: int = 100
    out_dir: str = "runs/run"
    # Asynchronous mode (Kardam): steps count arrivals at the server.
    mode: str = "sync"
    slow_workers: int = 0  # the last honest workers are slow:
    slow_rate: float = 0.2  # their delays ~ Exp(rate), the others' Exp(1)
    byzantine_rate: float = 4.0  # Byzantine workers lie about timing: fast
    kardam: bool = True
    kardam_window: int = 50
    kardam_max_rejections: int = 5
    staleness: str = "exponential"
    staleness_beta: float = 0.1
    # Several servers (ByzSGD style), in sync mode.
    servers: int = 1
    byzantine_servers: int = 0
    server_rule: str = "median"
    server_attack: str = "large_norm"
    exchange_every: int = 1
    # Real processes (byzance dist, under torchrun): workers = the number of processes.
    topology: str = "parameter_server"  # or "decentralized"
    byzantine_ranks: list[int] = field(default_factory=list)  # default: the last ones
    step_timeout: float = 30.0  # seconds a step waits for the gradients
    worker_timeout: float = 300.0  # seconds a worker waits for the server's parameters
    faults: dict[str, str] = field(default_factory=dict)  # rank -> "crash@5", "slow:0.1", ...
    transport: str = "gloo"  # or "udp": gradients as authenticated datagrams, losses tolerated
    udp_keys: str = ""  # a JSON key file, or "env:VARIABLE"
    udp_loss: dict[str, Any] = field(
        default_factory=dict
    )  # drop, duplicate, reorder_window, max_delay_s
    udp_grace: float = 0.05  # seconds for datagrams in flight once every worker said it sent
    udp_datagram_bytes: int = 60_000  # 1472 fits an Ethernet MTU
    udp_fill: str = (
        "auto"  # missing coordinates: "auto", "median" or "zero" (aggregate_with_missing)
    )

    @property
    def tolerated(self) -> int:
        """The f given to the rule."""
        return self.byzantine if self.f < 0 else self.f

    def rule(self) -> aggregators.Rule:
        """The configured rule, pre-aggregators first, with their parameters bound."""
        final = aggregators.get(self.aggregator, **self.aggregator_params)
        if not self.preaggregators:
            return final
        stages = [
            aggregators.get(p, **self.preaggregator_params.get(p, {})) for p in self.preaggregators
        ]
        return aggregators.compose(*stages, final)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_TYPES = get_type_hints(RunConfig)
KEYS = tuple(f.name for f in fields(RunConfig))


def _coerce(key: str, value: Any) -> Any:
    kind = _TYPES[key]
    origin = getattr(kind, "__origin__", kind)
    try:
        if origin is bool:
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        if origin is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if origin is float:
            return float(value)
        if origin is str:
            if not isinstance(value, str | int | float):
                raise ValueError
            return str(value)
        if origin is list:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list):
                raise ValueError
            item = kind.__args__[0]
            if item is int and any(isinstance(v, float) and not v.is_integer() for v in value):
                raise ValueError
            return [item(v) for v in value]
        if origin is dict:
            if isinstance(value, str):
                value = tomllib.loads(f"v = {value}")["v"]
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
    except (ValueError, TypeError, tomllib.TOMLDecodeError):
        pass
    raise ConfigError(
        f"config key {key!r}: {value!r} is not a valid {getattr(kind, '__name__', str(kind))}."
    )


def _check_key(key: str) -> str:
    key = key.replace("-", "_")
    if key not in KEYS:
        close = difflib.get_close_matches(key, KEYS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown config key {key!r}.{hint} Keys: {', '.join(KEYS)}.")
    return key


def _one_of(key: str, value: str, choices: list[str] | tuple[str, ...]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(value, list(choices), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"config key {key!r}: unknown value {value!r}.{hint} Accepted: {', '.join(choices)}."
        )


def validate(config: RunConfig) -> RunConfig:
    """Check every value; raises :class:`ConfigError` (or the rule's ToleranceError)."""
    from byzance.data import names as dataset_names

    if ">" in config.aggregator:  # "nnm>trimmed_mean" is shorthand for preaggregators
        *pre, last = [s.strip() for s in config.aggregator.split(">")]
        config.preaggregators = [*config.preaggregators, *pre]
        config.aggregator = last
    _one_of("dataset", config.dataset, dataset_names())
    _one_of("model", config.model, models.names())
    _one_of("aggregator", config.aggregator, aggregators.names("aggregator"))
    for p in config.preaggregators:
        _one_of("preaggregators", p, aggregators.names("preaggregator"))
    _one_of("attack", config.attack, ["none", *attacks.names()])
    _one_of("partition", config.partition, PARTITIONS)
    _one_of("lr_schedule", config.lr_schedule, SCHEDULES)
    _one_of("mode", config.mode, ("sync", "async"))
    _one_of("staleness", config.staleness, ("none", "exponential", "inverse"))
    _one_of("server_rule", config.server_rule, aggregators.names("aggregator"))
    _one_of(
        "server_attack", config.server_attack, ("none", "large_norm", "sign_flip", "per_worker")
    )
    if config.mode == "async" and config.kardam and config.workers < 3 * config.tolerated + 1:
        raise ToleranceError(
            f"kardam requires n >= 3f + 1 workers to tolerate f Byzantine ones: f={config.tolerated} "
            f"needs at least n={3 * config.tolerated + 1}, got n={config.workers}."
        )
    if config.mode == "async" and config.servers > 1:
        raise ConfigError("mode 'async' runs with one server; set servers = 1 or mode = 'sync'.")
    if not 0 <= config.slow_workers <= config.workers - config.byzantine:
        raise ConfigError(
            f"config key 'slow_workers' must be in [0, honest workers = "
            f"{config.workers - config.byzantine}]; got {config.slow_workers}."
        )
    for key in ("slow_rate", "byzantine_rate"):
        if not getattr(config, key) > 0:
            raise ConfigError(f"config key {key!r} must be > 0; got {getattr(config, key)}.")
    if config.servers < 1 or not 0 <= config.byzantine_servers < config.servers:
        raise ConfigError(
            "config keys 'servers' and 'byzantine_servers': need servers >= 1 and at least one "
            f"honest server; got servers={config.servers}, byzantine_servers={config.byzantine_servers}."
        )
    if config.servers > 1:
        try:
            aggregators.get(config.server_rule).check(config.servers, config.byzantine_servers)
        except ToleranceError as err:
            raise ToleranceError(
                f"combining the models of {config.servers} servers, {config.byzantine_servers} of "
                f"them Byzantine, with server_rule: {err}"
            ) from None
    positive = (
        "workers",
        "steps",
        "batch_size",
        "eval_every",
        "checkpoint_every",
        "lr_step_size",
        "exchange_every",
        "kardam_window",
    )
    for key in positive:
        if getattr(config, key) < 1:
            raise ConfigError(f"config key {key!r} must be >= 1; got {getattr(config, key)}.")
    if not 0 <= config.byzantine < config.workers:
        raise ConfigError(
            f"config key 'byzantine' must be in [0, workers - 1 = {config.workers - 1}] so that "
            f"at least one worker is honest; got {config.byzantine}."
        )
    if config.l2 < 0 and config.l2 != -1:
        raise ConfigError(f"config key 'l2' must be >= 0 (or -1: the data set's); got {config.l2}.")
    for key in ("momentum", "worker_momentum"):
        if not 0 <= getattr(config, key) < 1:
            raise ConfigError(f"config key {key!r} must be in [0, 1); got {getattr(config, key)}.")
    if config.lr <= 0 or config.alpha <= 0 or not 0 < config.test_fraction < 1:
        raise ConfigError(
            "config keys 'lr' and 'alpha' must be > 0 and 'test_fraction' in (0, 1); got "
            f"lr={config.lr}, alpha={config.alpha}, test_fraction={config.test_fraction}."
        )
    for name in config.preaggregator_params:
        if name not in config.preaggregators:
            raise ConfigError(
                f"config key 'preaggregator_params' has parameters for {name!r}, which is not "
                f"among the preaggregators {config.preaggregators}."
            )
    _validate_distributed(config)
    rule = config.rule()  # validates rule parameter names
    rule.check(config.workers, config.tolerated)
    if config.attack != "none":
        attacks.get(config.attack, **config.attack_params)  # validates attack parameter names
    return config


def _validate_distributed(config: RunConfig) -> None:
    """The keys of real distributed runs (ignored by the simulator)."""
    from byzance.runs.injected_faults import parse_fault

    _one_of("topology", config.topology, TOPOLOGIES)
    ranks = config.byzantine_ranks
    if ranks:
        if len(set(ranks)) != len(ranks) or not all(0 <= r < config.workers for r in ranks):
            raise ConfigError(
                f"config key 'byzantine_ranks' must list distinct ranks in [0, {config.workers - 1}]; "
                f"got {ranks}."
            )
        if config.byzantine not in (0, len(ranks)) and config.byzantine != RunConfig.byzantine:
            raise ConfigError(
                f"config keys 'byzantine' ({config.byzantine}) and 'byzantine_ranks' ({ranks}) "
                "disagree; give one of them, or make byzantine the number of ranks listed."
            )
        config.byzantine = len(ranks)
        if config.topology == "parameter_server" and 0 in ranks:
            raise ConfigError(
                "rank 0 is the parameter server, which byzance trusts: it cannot be Byzantine. "
                "Choose other byzantine_ranks, or use topology = 'decentralized'."
            )
    for key in ("step_timeout", "worker_timeout"):
        if not getattr(config, key) > 0:
            raise ConfigError(
                f"config key {key!r} must be > 0 seconds; got {getattr(config, key)}."
            )
    _one_of("transport", config.transport, ("gloo", "udp"))
    _one_of("udp_fill", config.udp_fill, ("auto", "median", "zero"))
    if config.transport == "udp":
        from byzance.runs.loss_model import LossModel

        if not config.udp_keys:
            raise ConfigError(
                "transport 'udp' needs udp_keys: a JSON key file (byzance udp-keys --workers N "
                "--out keys.json) or 'env:VARIABLE' naming an environment variable holding it."
            )
        try:
            LossModel(**config.udp_loss)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"config key 'udp_loss': {err}") from None
        if not config.udp_grace > 0:
            raise ConfigError(f"config key 'udp_grace' must be > 0; got {config.udp_grace}.")
    for rank, spec in config.faults.items():
        if not rank.isdigit() or int(rank) >= config.workers:
            raise ConfigError(
                f"config key 'faults': {rank!r} is not a rank in [0, {config.workers - 1}]."
            )
        parse_fault(spec)


def load(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a TOML run config (or the defaults), apply ``overrides``, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist.")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {err}") from None
    merged: dict[str, Any] = {}
    for key, value in {**raw, **(overrides or {})}.items():
        key = _check_key(key)
        merged[key] = _coerce(key, value)
    return validate(RunConfig(**merged))


def parse_flags(args: list[str]) -> dict[str, Any]:
    """``["--aggregator", "krum", "--f=4"]`` -> {"aggregator": "krum", "f": "4"}."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"expected a --key value pair, got {arg!r}.")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args):
                raise ConfigError(f"flag --{key} needs a value.")
            value = args[i + 1]
            i += 1
        out[_check_key(key)] = value
        i += 1
    return out
