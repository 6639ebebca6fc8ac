"""Validation of a run config: every value checked, in dependency order, before any work.

:func:`validate` checks, in order: each key on its own (type, range, accepted
values), the counts that depend on each other (byzantine < workers, ...), the
distributed keys, the rule (its parameters, its n/f requirement, a dry run on
random vectors), the attack (its parameters, a dry run), then the data set,
the model and a data attack (:mod:`byzance.runs.data_checks`). Any failure is
one :class:`~byzance.runs.config.ConfigError` line naming the key, the value
and what is accepted. :func:`byzance.runs.config.validate` calls this function.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from byzance.errors import ByzanceError, ToleranceError, did_you_mean
from byzance.runs.config import SCHEMA, ConfigToleranceError, RunConfig
from byzance.runs.data_checks import check_data, check_data_attack, check_model, config_failure
from byzance.runs.keytypes import ConfigError, check_params
from byzance.runs.toml_text import toml_value

if TYPE_CHECKING:
    import torch

__all__ = ["validate"]


def validate(config: RunConfig) -> RunConfig:
    """Check every value, in dependency order; raises :class:`ConfigError`.

    A rule that cannot tolerate f among the workers raises
    :class:`ConfigToleranceError`, also a :class:`~byzance.errors.ToleranceError`.
    Fills in what the config implies: ``aggregator = "nnm>krum"`` becomes
    ``preaggregators = ["nnm"]``, ``aggregator = "krum"``; ``byzantine_ranks``
    sets ``byzantine``.
    """
    import torch

    from byzance import aggregators

    SCHEMA.check(config)
    _check_device(config)
    if ">" in config.aggregator:  # "nnm>trimmed_mean" is shorthand for preaggregators
        *pre, last = [s.strip() for s in config.aggregator.split(">")]
        config.preaggregators = [*config.preaggregators, *pre]
        config.aggregator = last
    _one_of("aggregator", config.aggregator, aggregators.names("aggregator"))
    for p in config.preaggregators:
        _one_of("preaggregators", p, aggregators.names("preaggregator"))
    _validate_distributed(config)  # first: byzantine_ranks alone sets byzantine
    _check_counts(config)
    with torch.random.fork_rng(devices=[]):  # dry runs leave the global random state alone
        torch.manual_seed(config.seed)
        _check_rule(config)
        _check_gradient_attack(config)
        facts = check_data(config)
        check_model(config, facts)
        check_data_attack(config, facts)
    return config


def _one_of(key: str, value: str, choices: Iterable[str]) -> None:
    choices = list(choices)
    if value not in choices:
        raise ConfigError(
            f"config key {key!r}: unknown value {value!r}.{did_you_mean(value, choices)} "
            f"Accepted: {', '.join(choices)}."
        )


def _check_counts(config: RunConfig) -> None:
    """The keys that bound each other: Byzantine workers and servers, slow workers, async."""
    if not 0 <= config.byzantine < config.workers:
        raise ConfigError(
            f"config key 'byzantine' must be in [0, workers - 1 = {config.workers - 1}] so that "
            f"at least one worker is honest; got {config.byzantine}."
        )
    honest = config.workers - config.byzantine
    if config.slow_workers > honest:
        raise ConfigError(
            f"config key 'slow_workers' must be in [0, honest workers = {honest}]; "
            f"got {config.slow_workers}."
        )
    if config.byzantine_servers >= config.servers:
        raise ConfigError(
            "config keys 'servers' and 'byzantine_servers': need at least one honest server; got "
            f"servers={config.servers}, byzantine_servers={config.byzantine_servers}."
        )
    if config.mode == "async" and config.servers > 1:
        raise ConfigError("mode 'async' runs with one server; set servers = 1 or mode = 'sync'.")
    if config.algorithm == "fedavg":
        _check_federated(config)
    if config.mode == "async" and config.kardam and config.workers < 3 * config.tolerated + 1:
        raise ConfigToleranceError(
            f"kardam requires n >= 3f + 1 workers to tolerate f Byzantine ones: f={config.tolerated} "
            f"needs at least n={3 * config.tolerated + 1}, got n={config.workers}."
        )


def _check_device(config: RunConfig) -> None:
    from byzance.devices import check_device_spec

    try:
        check_device_spec(config.device)
    except ByzanceError as err:
        raise ConfigError(f"config key 'device': {err}") from None


def _check_federated(config: RunConfig) -> None:
    """Federated rounds: who is sampled each round, and what the mode runs with."""
    if config.mode != "sync" or config.servers > 1:
        raise ConfigError(
            "algorithm 'fedavg' runs in the synchronous simulator with one server; set "
            "mode = 'sync' and servers = 1."
        )
    if config.worker_momentum:
        raise ConfigError(
            "config key 'worker_momentum' is per step; with algorithm 'fedavg' the clients' "
            "momentum is local_momentum (within a round)."
        )
    if config.clients_per_round > 0 and config.client_fraction > 0:
        raise ConfigError(
            "config keys 'clients_per_round' and 'client_fraction' both say how many clients a "
            "round samples; give one of them."
        )
    m, honest = config.round_size, config.workers - config.byzantine
    if m > config.workers:
        raise ConfigError(
            f"config key 'clients_per_round' ({m}) is more than the {config.workers} clients "
            "(workers); sample at most all of them."
        )
    f = config.tolerated
    fixed = config.byzantine_sampling == "fixed" and config.byzantine
    if fixed and (f > config.byzantine or m - f > honest):
        raise ConfigError(
            f"byzantine_sampling 'fixed' puts exactly f={f} Byzantine clients in each round "
            f"of {m}: it needs f <= byzantine ({config.byzantine}) and {m} - f <= honest "
            f"clients ({honest}); change f or use byzantine_sampling = 'random'."
        )


def _validate_distributed(config: RunConfig) -> None:
    """The keys of real distributed runs (ignored by the simulator)."""
    from byzance.runs.injected_faults import parse_fault
    from byzance.runs.loss_model import LossModel

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
        if len(ranks) >= config.workers:
            raise ConfigError(
                f"config key 'byzantine_ranks' lists every one of the {config.workers} ranks; "
                "at least one must be honest."
            )
        config.byzantine = len(ranks)
        if config.topology == "parameter_server" and 0 in ranks:
            raise ConfigError(
                "rank 0 is the parameter server, which byzance trusts: it cannot be Byzantine. "
                "Choose other byzantine_ranks, or use topology = 'decentralized'."
            )
    if config.aggregation != "gathered":
        if config.topology != "decentralized" or config.transport != "gloo":
            raise ConfigError(
                f"config key 'aggregation': {config.aggregation!r} splits the aggregation among "
                "peers: it needs topology = 'decentralized' and transport = 'gloo' "
                f"(got {config.topology!r} over {config.transport!r})."
            )
        if config.aggregation == "replicated" and 2 * config.tolerated + 1 > config.workers:
            raise ConfigError(
                f"config key 'aggregation': replicated slices need 2f + 1 = "
                f"{2 * config.tolerated + 1} ranks per slice; there are {config.workers}."
            )
    check_params("udp_loss", "the UDP loss model", LossModel, config.udp_loss, reserved=("seed",))
    try:
        LossModel(**config.udp_loss)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config key 'udp_loss': {err}") from None
    if config.transport == "udp" and not config.udp_keys:
        raise ConfigError(
            "config key 'udp_keys': transport 'udp' needs a JSON key file (byzance udp-keys "
            "--workers N --out keys.json) or 'env:VARIABLE' naming an environment variable holding it."
        )
    for rank, spec in config.faults.items():
        if not rank.isdigit() or int(rank) >= config.workers:
            raise ConfigError(
                f"config key 'faults': {rank!r} is not a rank in [0, {config.workers - 1}]."
            )
        try:
            parse_fault(spec)
        except ByzanceError as err:
            raise ConfigError(f"config key 'faults': rank {rank}: {err}") from None


def _random_rows(n: int, d: int = 8) -> torch.Tensor:
    import torch

    return torch.randn(n, d, generator=torch.Generator().manual_seed(0))


def _check_rule(config: RunConfig) -> None:
    """The rule's parameters (names and values), its n/f requirement, a dry run of every stage."""
    import torch

    from byzance import aggregators

    for name, params in config.preaggregator_params.items():
        if name not in config.preaggregators:
            raise ConfigError(
                f"config key 'preaggregator_params' has parameters for {name!r}, which is not "
                f"among the preaggregators {config.preaggregators}."
            )
        if not isinstance(params, Mapping):
            raise ConfigError(
                f"config key 'preaggregator_params': {name} = {toml_value(params)} is not a "
                "table of its parameters ({s = 2})."
            )
    keys = []
    for p in config.preaggregators:
        params = config.preaggregator_params.get(p, {})
        check_params(
            "preaggregator_params", f"pre-aggregator {p!r}", aggregators.get(p).impl, params, skip=2
        )
        keys.append("preaggregator_params" if params else "preaggregators")
    check_params(
        "aggregator_params",
        f"rule {config.aggregator!r}",
        aggregators.get(config.aggregator).impl,
        config.aggregator_params,
        skip=2,
    )
    keys.append("aggregator_params" if config.aggregator_params else "aggregator")
    try:
        rule = config.rule()
    except ByzanceError as err:
        raise config_failure(keys[-1], "binding the rule's parameters", err) from None
    try:
        rule.check(config.round_size, config.tolerated)
    except ToleranceError as err:
        where = (
            f" (fedavg: the rule aggregates the {config.round_size} clients of a round)"
            if config.algorithm == "fedavg"
            else ""
        )
        raise ConfigToleranceError(f"{err}{where}") from None
    except Exception as err:  # e.g. a stage's parameter its requirement cannot work with
        raise config_failure(keys[-1], "checking the rule's requirement", err) from None
    stages = getattr(rule, "stages", None) or (rule,)
    x, f = _random_rows(config.round_size), config.tolerated
    for stage, key_name in zip(stages, keys, strict=True):
        try:
            with torch.no_grad():
                x = stage.impl(x, f, **stage.defaults)
        except Exception as err:  # any failure of the dry run is the config's
            raise config_failure(
                key_name,
                f"{stage.name} fails on {config.round_size} random vectors with f={f}",
                err,
            ) from None
    if config.servers > 1:
        server_rule = aggregators.get(config.server_rule)
        try:
            server_rule.check(config.servers, config.byzantine_servers)
        except ToleranceError as err:
            raise ConfigToleranceError(
                f"combining the models of {config.servers} servers, {config.byzantine_servers} of "
                f"them Byzantine, with server_rule: {err}"
            ) from None
        try:
            server_rule(_random_rows(config.servers), config.byzantine_servers)
        except Exception as err:
            raise config_failure(
                "server_rule", f"{config.server_rule} fails on the servers' models", err
            ) from None


def _check_gradient_attack(config: RunConfig) -> None:
    """The attack's parameters (names and values), and a dry run of a gradient attack."""
    import torch

    from byzance import attacks

    if config.attack == "none":
        return
    attack = attacks.get(config.attack)
    check_params(
        "attack_params",
        f"attack {config.attack!r}",
        attack.impl,
        config.attack_params,
        skip=2,
        reserved=("rule", "generator"),
    )
    if attack.kind != "gradient":
        return
    from byzance import aggregators

    honest = config.workers - config.byzantine
    if config.mode == "async":  # one forged gradient at a time, no rule to adapt to
        count, rule = 1, None
    else:  # the rule had its own dry run; an adaptive attack's search is cheap on the mean
        count, rule = config.byzantine, aggregators.get("average")
    if count < 1:
        return
    key_name = "attack_params" if config.attack_params else "attack"
    try:
        attack(
            _random_rows(honest),
            count,
            rule=rule,
            generator=torch.Generator().manual_seed(0),
            **config.attack_params,
        )
    except Exception as err:
        raise config_failure(
            key_name,
            f"{config.attack} fails on {honest} random honest vectors with {count} Byzantine",
            err,
        ) from None
