"""A Flower strategy (Message API, ``flwr.serverapp.strategy``) that aggregates with any byzance rule.

Flower 1.42's recommended API: a ``ServerApp`` drives a
:class:`flwr.serverapp.strategy.Strategy` with ``strategy.start(grid, initial_arrays, ...)``;
models travel as :class:`flwr.app.ArrayRecord` inside :class:`flwr.app.Message`.
:class:`RobustStrategy` is Flower's ``FedAvg`` (same sampling, configuration
and evaluation) with the training aggregation replaced by a byzance rule.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from logging import INFO, WARNING
from typing import Any, Literal

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from byzance.aggregators import Rule
from byzance.errors import InvalidParameterError, NonFiniteInputError, ToleranceError
from byzance.flower.aggregation import On, RobustAggregator, RoundReport, clients_per_round
from byzance.flower.metrics import (
    DEFAULT_MAX_WEIGHT,
    MetricsHow,
    check_how,
    check_max_weight,
    check_weight,
    robust_metrics,
)


class RobustStrategy(FedAvg):
    """Flower's FedAvg with the average replaced by a Byzantine-robust byzance rule.

    Each training round, the models the clients return are flattened into one
    matrix of shape (n, d) and aggregated by one call to the rule, so
    distance-based rules (Krum, Bulyan, MDA, geometric median, nearest-neighbour
    mixing) compare whole models. By default the rule sees the clients'
    updates x_i - w (w: the model sent this round) and the new model is
    w + rule(x - w).

    Faults are handled, not fatal: replies with an error are left out;
    replies that are not an ArrayRecord of the model's keys and shapes, and
    replies holding NaN or inf, are dropped and each counted as one of the f
    Byzantine clients. The round's counts are added to the training
    MetricRecord (``byzance-aggregated``, ``byzance-failed``,
    ``byzance-malformed``, ``byzance-nonfinite``) and the node ids are kept in
    :attr:`reports`.

    The clients' reported training metrics and weights (``num-examples``)
    are untrusted too: a weight that is not a finite number in
    ``(0, max_num_examples]``, or a reply without exactly one MetricRecord
    holding it, leaves that client out of the metrics (not out of the model
    aggregation); the others are combined with the median by default
    (``train_metrics``). Refused clients are counted in
    ``byzance-metrics-refused`` (present when > 0), logged, and kept, with
    the reason, in :attr:`metrics_refused` (round -> node -> why).

    Args:
        rule: a byzance rule name (``"trimmed_mean"``, ``"krum"``,
            ``"bulyan"``, a pipeline ``"nnm>trimmed_mean"``; see
            ``byzance rules``) or a :class:`byzance.aggregators.Rule`.
        f: Byzantine clients tolerated per round.
        rule_params: the rule's parameters, e.g. ``{"selection": "krum"}``.
        on: ``"updates"`` (default) or ``"models"``; see
            :class:`byzance.flower.aggregation.RobustAggregator`.
        device: where the round's replies are aggregated: ``"cpu"`` (default),
            ``"cuda"``, ``"cuda:N"`` or ``"auto"``; the result comes back as numpy
            arrays on the host.
        too_few: what a round with fewer usable replies than the rule needs
            (or more faulty replies than f) does: ``"raise"`` (default) a
            :class:`byzance.errors.ToleranceError` (or
            :class:`~byzance.errors.NonFiniteInputError`) that says what is
            needed, or ``"skip"`` (log it and keep the current model).
        min_train_nodes: clients sampled per round at least; defaults to the
            rule's minimum n for this f, and a smaller value is refused.
        min_available_nodes: defaults to ``min_train_nodes``.
        train_metrics: how the accepted clients' training metrics are
            combined: ``"median"`` (default; robust to fewer than half lying)
            or ``"weighted_mean"`` (Flower's average, with validated weights).
            A ``train_metrics_aggr_fn`` given to FedAvg replaces it and gets
            only the accepted replies.
        max_num_examples: the largest weight a client may report (also
            bounds the evaluation weights).
        **fedavg_args: any other argument of Flower's ``FedAvg``
            (``fraction_train``, ``fraction_evaluate``, ``min_evaluate_nodes``,
            ``arrayrecord_key``, ``train_metrics_aggr_fn``, ...).

    Example (in a ``ServerApp``'s main function)::

        strategy = RobustStrategy("bulyan", f=1, rule_params={"selection": "krum"})
        result = strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
                                num_rounds=10)
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
        min_train_nodes: int | None = None,
        min_available_nodes: int | None = None,
        train_metrics: MetricsHow = "median",
        max_num_examples: float = DEFAULT_MAX_WEIGHT,
        **fedavg_args: Any,
    ) -> None:
        self.train_metrics = check_how(train_metrics)
        self.max_num_examples = check_max_weight(max_num_examples, "max_num_examples")
        self._custom_metrics_fn = fedavg_args.get("train_metrics_aggr_fn") is not None
        self.aggregator = RobustAggregator(rule, f, rule_params=rule_params, on=on, device=device)
        min_train_nodes = clients_per_round(
            self.aggregator, min_train_nodes, "min_train_nodes", too_few
        )
        self.too_few = too_few
        super().__init__(
            min_train_nodes=min_train_nodes,
            min_available_nodes=(
                min_train_nodes if min_available_nodes is None else min_available_nodes
            ),
            **fedavg_args,
        )
        self.reports: dict[int, RoundReport] = {}
        self.metrics_refused: dict[int, dict[Hashable, str]] = {}
        self._sent: tuple[int, ArrayRecord] | None = None

    @property
    def rule(self) -> Rule:
        return self.aggregator.rule

    @property
    def f(self) -> int:
        return self.aggregator.f

    def summary(self) -> None:
        """Log the rule, f and FedAvg's sampling settings."""
        log(INFO, "\t├──> byzance robust aggregation:")
        log(INFO, "\t│\t├── Rule: %s (%s)", self.rule.name, self.rule.requirement)
        log(INFO, "\t│\t├── Byzantine clients tolerated (f): %d", self.f)
        log(INFO, "\t│\t└── Aggregates: %s", self.aggregator.on)
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's sampling; remembers the arrays sent, from which updates are measured."""
        self._sent = (server_round, arrays)
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the replies' ArrayRecords with the rule; metrics as FedAvg does.

        Raises:
            ToleranceError: (with ``too_few="raise"``) fewer usable replies
                than the rule needs for f, or more malformed replies than f.
            NonFiniteInputError: (with ``too_few="raise"``) more replies
                holding NaN or inf, with the malformed ones, than f.
        """
        replies = list(replies)
        keys, reference = self._reference(server_round)
        failed: dict[Hashable, str] = {}
        malformed: dict[Hashable, str] = {}
        candidates: list[tuple[Hashable, list[np.ndarray]]] = []
        contents: dict[Hashable, RecordDict] = {}
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                failed[node] = msg.error.reason
                continue
            arrays, why = self._read_arrays(msg, keys)
            if arrays is None:
                malformed[node] = why
                continue
            candidates.append((node, arrays))
            contents[node] = msg.content
        log(
            INFO,
            "aggregate_train: %d replies, %d failures, %d malformed",
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
            return None, MetricRecord(self.reports[server_round].metrics())
        self.reports[server_round] = report
        for node, why in report.malformed.items():
            log(WARNING, "\t> Dropped reply from node %s: %s", node, why)
        if keys is None:  # on="models" without configure_train: the names of a reply used
            keys = list(self._record_of(contents[report.aggregated[0]]).keys())
        record = ArrayRecord({k: Array(a) for k, a in zip(keys, new_arrays, strict=True)})
        return record, self._train_metrics(
            server_round, [(n, contents[n]) for n in report.aggregated], report
        )

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """FedAvg's weighted average of the evaluation metrics, over the well-formed replies.

        FedAvg raises when any reply lacks the weight key or holds other
        metric keys; here such replies are left out (and logged), so that one
        Byzantine client cannot stop the run through its evaluation report.
        """
        replies = [m for m in replies if not m.has_error()]
        usable = [m for m in replies if self._well_formed_metrics(m.content)]
        if len(usable) < len(replies):
            log(
                WARNING,
                "aggregate_evaluate: left out %d malformed metric replies",
                len(replies) - len(usable),
            )
        if not usable:
            return None
        try:
            return super().aggregate_evaluate(server_round, usable)
        except Exception as err:  # inconsistent keys between replies: report, do not stop
            log(WARNING, "Client evaluation metrics not aggregated: %s", err)
            return None

    def _well_formed_metrics(self, content: RecordDict) -> bool:
        records = content.metric_records
        if len(records) != 1:
            return False
        weight = next(iter(records.values())).get(self.weighted_by_key)
        return (
            isinstance(weight, int | float)
            and not isinstance(weight, bool)
            and math.isfinite(weight)
            and 0 <= weight <= self.max_num_examples
        )

    def _reference(self, server_round: int) -> tuple[list[str] | None, list[np.ndarray] | None]:
        if self._sent is None or self._sent[0] != server_round:
            if self.aggregator.on == "updates":
                raise InvalidParameterError(
                    f"round {server_round}: aggregate_train aggregates the clients' updates "
                    "relative to the arrays sent in configure_train for the same round, and "
                    "none were recorded. Call configure_train first (Strategy.start does), "
                    "or use on='models'."
                )
            return None, None
        sent = self._sent[1]
        return list(sent.keys()), sent.to_numpy_ndarrays()

    def _read_arrays(
        self, msg: Message, keys: list[str] | None
    ) -> tuple[list[np.ndarray] | None, str]:
        """The reply's arrays in the order of ``keys``, or None and why not."""
        record = self._record_of(msg.content)
        if record is None:
            n = len(msg.content.array_records)
            return (
                None,
                f"expected one ArrayRecord (or one under {self.arrayrecord_key!r}), got {n}",
            )
        if keys is not None and list(record.keys()) != keys:
            return None, f"array keys {list(record.keys())[:4]}... differ from the model's"
        try:
            return record.to_numpy_ndarrays(), ""
        except Exception as err:  # a Byzantine client may send any bytes
            return None, f"arrays could not be decoded ({type(err).__name__})"

    def _record_of(self, content: RecordDict) -> ArrayRecord | None:
        records = content.array_records
        record = records.get(self.arrayrecord_key)
        if record is None and len(records) == 1:
            record = next(iter(records.values()))
        return record

    def _metric_entry(self, content: RecordDict) -> tuple[Any, Mapping[str, Any]] | str:
        """(weight, metrics) of a reply, or why its metrics are refused."""
        records = content.metric_records
        if len(records) != 1:
            return f"expected one MetricRecord, got {len(records)}"
        record = next(iter(records.values()))
        if self.weighted_by_key not in record:
            return f"no {self.weighted_by_key!r} in its MetricRecord"
        return record[self.weighted_by_key], dict(record)

    def _train_metrics(
        self, server_round: int, replies: list[tuple[Hashable, RecordDict]], report: RoundReport
    ) -> MetricRecord:
        """The accepted replies' metrics (median by default), plus byzance's counts."""
        refused: dict[Hashable, str] = {}
        entries = []
        accepted: list[RecordDict] = []
        for node, content in replies:
            entry = self._metric_entry(content)
            if isinstance(entry, str):
                refused[node] = entry
                continue
            why = check_weight(entry[0], self.max_num_examples, self.weighted_by_key)
            if why is not None:
                refused[node] = why
                continue
            entries.append((node, *entry))
            accepted.append(content)
        metrics = MetricRecord()
        try:
            if self._custom_metrics_fn:
                if accepted:
                    metrics = self.train_metrics_aggr_fn(accepted, self.weighted_by_key)
            else:
                values, _ = robust_metrics(
                    entries,
                    how=self.train_metrics,
                    max_weight=self.max_num_examples,
                    weight_key=self.weighted_by_key,
                )
                metrics = MetricRecord(values)  # type: ignore[arg-type]
        except Exception as err:  # metrics are a report: a bad one must not stop training
            log(WARNING, "Client training metrics not aggregated: %s", err)
            metrics = MetricRecord()
        for node, why in refused.items():
            log(WARNING, "\t> Training metrics of node %s refused: %s", node, why)
        self.metrics_refused[server_round] = refused
        for key, value in report.metrics().items():
            metrics[key] = value
        if refused:
            metrics["byzance-metrics-refused"] = len(refused)
        return metrics
