"""The same robust aggregation for Flower's legacy strategy API (``flwr.server.strategy``).

Flower 1.42 still ships the legacy API (``Parameters``, ``FitRes``,
``flwr.server.start_server``; deprecated since 1.13 in favour of the Message
API of :mod:`byzance.flower.strategy`). :class:`LegacyRobustStrategy` serves
code that has not moved yet.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from logging import INFO, WARNING
from typing import Any, Literal

import numpy as np
from flwr.common import (
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    log,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from byzance.aggregators import Rule
from byzance.errors import NonFiniteInputError, ToleranceError
from byzance.flower.aggregation import On, RobustAggregator, RoundReport, clients_per_round
from byzance.flower.metrics import (
    DEFAULT_MAX_WEIGHT,
    MetricsHow,
    check_how,
    check_max_weight,
    check_weight,
    robust_metrics,
)


class LegacyRobustStrategy(FedAvg):
    """Flower's legacy FedAvg with the average replaced by a byzance rule.

    Same behaviour and arguments as :class:`byzance.flower.RobustStrategy`
    (``rule``, ``f``, ``rule_params``, ``on``, ``too_few``), with the legacy
    names: ``min_fit_clients`` (defaults to the rule's minimum n, a smaller
    value is refused) and ``min_available_clients``; every other argument
    goes to Flower's legacy ``FedAvg``. The byzance counts are added to the
    fit metrics; ``accept_failures=False`` skips rounds with failures, as in
    FedAvg.

    Fit metrics: a result whose ``num_examples`` is not a finite number in
    ``(0, max_num_examples]`` is left out of them (and counted in
    ``byzance-metrics-refused``, with the reasons in :attr:`metrics_refused`);
    the others' metrics are combined with ``train_metrics`` (``"median"`` by
    default, or ``"weighted_mean"``), or by ``fit_metrics_aggregation_fn``
    when one is given (it gets only the accepted results).
    """

    def __init__(
        self,
        rule: str | Rule = "trimmed_mean",
        f: int = 1,
        *,
        rule_params: Mapping[str, Any] | None = None,
        on: On = "updates",
        device: str = "cpu",
        too_few: Literal["raise", "skip"] = "raise",
        min_fit_clients: int | None = None,
        min_available_clients: int | None = None,
        train_metrics: MetricsHow = "median",
        max_num_examples: float = DEFAULT_MAX_WEIGHT,
        **fedavg_args: Any,
    ) -> None:
        self.train_metrics = check_how(train_metrics)
        self.max_num_examples = check_max_weight(max_num_examples, "max_num_examples")
        self.aggregator = RobustAggregator(rule, f, rule_params=rule_params, on=on, device=device)
        min_fit_clients = clients_per_round(
            self.aggregator, min_fit_clients, "min_fit_clients", too_few
        )
        self.too_few = too_few
        super().__init__(
            min_fit_clients=min_fit_clients,
            min_available_clients=(
                min_fit_clients if min_available_clients is None else min_available_clients
            ),
            **fedavg_args,
        )
        self.reports: dict[int, RoundReport] = {}
        self.metrics_refused: dict[int, dict[Hashable, str]] = {}
        self._sent: tuple[int, list[np.ndarray]] | None = None

    def __repr__(self) -> str:
        return f"LegacyRobustStrategy(rule={self.aggregator.rule.name!r}, f={self.aggregator.f})"

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """FedAvg's sampling; remembers the model sent, from which updates are measured."""
        self._sent = (server_round, parameters_to_ndarrays(parameters))
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Aggregate the clients' parameters with the rule."""
        if not self.accept_failures and failures:
            return None, {}
        reference = None
        if self._sent is not None and self._sent[0] == server_round:
            reference = self._sent[1]
        failed: dict[Hashable, str] = {}
        for i, failure in enumerate(failures):
            if isinstance(failure, BaseException):
                failed[f"failure-{i}"] = repr(failure)
            else:
                failed[failure[0].cid] = str(failure[1].status.message)
        malformed: dict[Hashable, str] = {}
        candidates: list[tuple[Hashable, list[np.ndarray]]] = []
        by_cid: dict[Hashable, FitRes] = {}
        for proxy, res in results:
            try:
                arrays = parameters_to_ndarrays(res.parameters)
            except Exception as err:  # a Byzantine client may send any bytes
                malformed[proxy.cid] = f"parameters could not be decoded ({type(err).__name__})"
                continue
            candidates.append((proxy.cid, arrays))
            by_cid[proxy.cid] = res
        log(
            INFO,
            "aggregate_fit: %d results, %d failures, %d malformed",
            len(candidates),
            len(failed),
            len(malformed),
        )
        try:
            new_arrays, report = self.aggregator.aggregate(
                candidates,
                reference,
                failed=failed,
                malformed=malformed,
                where=f"round {server_round}",
            )
        except (ToleranceError, NonFiniteInputError) as err:
            if self.too_few == "raise":
                raise
            log(WARNING, "Skipping round %d: %s", server_round, err)
            self.reports[server_round] = RoundReport(failed=failed, malformed=malformed)
            return None, dict(self.reports[server_round].metrics())
        self.reports[server_round] = report
        metrics = self._fit_metrics(server_round, [(c, by_cid[c]) for c in report.aggregated])
        metrics.update(report.metrics())
        refused = self.metrics_refused[server_round]
        if refused:
            metrics["byzance-metrics-refused"] = len(refused)
        return ndarrays_to_parameters(new_arrays), metrics

    def _fit_metrics(
        self, server_round: int, results: list[tuple[Hashable, FitRes]]
    ) -> dict[str, Scalar]:
        """The accepted results' fit metrics; refusals go to :attr:`metrics_refused`."""
        refused: dict[Hashable, str] = {}
        entries = []
        for cid, res in results:
            why = check_weight(res.num_examples, self.max_num_examples, "num_examples")
            if why is None and not isinstance(res.metrics, Mapping):
                why = f"metrics are a {type(res.metrics).__name__}, not a dict"
            if why is not None:
                refused[cid] = why
                log(WARNING, "\t> Fit metrics of client %s refused: %s", cid, why)
                continue
            entries.append((cid, res.num_examples, res.metrics))
        self.metrics_refused[server_round] = refused
        try:
            if self.fit_metrics_aggregation_fn:
                if not entries:
                    return {}
                return dict(self.fit_metrics_aggregation_fn([(w, m) for _, w, m in entries]))
            values, _ = robust_metrics(
                entries, how=self.train_metrics, max_weight=self.max_num_examples, weight_key=""
            )
            return {k: v for k, v in values.items() if not isinstance(v, list)}
        except Exception as err:  # metrics are a report: a bad one must not stop training
            log(WARNING, "Client fit metrics not aggregated: %s", err)
            return {}
