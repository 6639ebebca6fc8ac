"""Bad metadata from Flower clients: each row is a call and its outcome.

Three honest clients report ``loss`` 1, 2, 3 with ``num-examples`` 10; a
fourth client reports the row's metadata. Outcomes: ``clear error`` (type
and message fragment), ``refused`` (the client's metrics are left out,
counted in ``byzance-metrics-refused`` and reported with the reason),
``survived`` (accepted, and the aggregated metrics stay in the honest range).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy

from byzance.errors import InvalidParameterError
from byzance.flower import LegacyRobustStrategy, RobustStrategy
from byzance.flower.local import FIRST_NODE_ID, InProcessGrid
from byzance.flower.metrics import aggregate_metrics

BYZ = FIRST_NODE_ID + 3


def _sent() -> ArrayRecord:
    return ArrayRecord({"w": Array(np.zeros(2, np.float32))})


def _train(strategy: RobustStrategy, byzantine: dict | list | None):
    """One round: 3 honest replies and one whose metric records are ``byzantine``
    (a dict: one MetricRecord; a list: that many; None: none)."""
    grid = InProcessGrid(ClientApp(), 4)
    msgs = sorted(
        strategy.configure_train(1, _sent(), ConfigRecord(), grid),
        key=lambda m: m.metadata.dst_node_id,
    )
    replies = []
    for i, msg in enumerate(msgs):
        content = {"arrays": ArrayRecord({"w": Array(np.full(2, float(i), np.float32))})}
        if i < 3:
            content["metrics"] = MetricRecord({"num-examples": 10, "loss": float(i + 1)})
        elif isinstance(byzantine, dict):
            content["metrics"] = MetricRecord(byzantine)
        elif isinstance(byzantine, list):
            for j, record in enumerate(byzantine):
                content[f"metrics{j}"] = MetricRecord(record)
        replies.append(Message(RecordDict(content), reply_to=msg))
    record, metrics = strategy.aggregate_train(1, replies)
    assert record is not None  # the model is aggregated whatever the metadata
    return dict(metrics), strategy.metrics_refused[1]


# (id, the Byzantine client's metric records, reason fragment)
REFUSED = [
    ("num-examples-1e15", {"num-examples": 10**15, "loss": 1e9}, "over the bound"),
    ("num-examples-negative", {"num-examples": -5, "loss": -1e9}, "not positive"),
    ("num-examples-zero", {"num-examples": 0, "loss": 7.0}, "not positive"),
    ("num-examples-nan", {"num-examples": math.nan, "loss": 7.0}, "not finite"),
    ("num-examples-inf", {"num-examples": math.inf, "loss": 7.0}, "not finite"),
    ("num-examples-missing", {"loss": 1e9}, "no 'num-examples'"),
    ("two-metric-records", [{"num-examples": 10, "loss": 9.0}] * 2, "one MetricRecord, got 2"),
    ("no-metric-record", None, "one MetricRecord, got 0"),
]


@pytest.mark.parametrize(
    ("byzantine", "reason"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
@pytest.mark.parametrize("how", ["median", "weighted_mean"])
def test_refused(byzantine, reason, how) -> None:
    metrics, refused = _train(RobustStrategy("median", f=1, train_metrics=how), byzantine)
    assert list(refused) == [BYZ] and reason in refused[BYZ]
    assert metrics["byzance-metrics-refused"] == 1
    assert metrics["loss"] == pytest.approx(2.0)  # the honest clients' metrics survive
    assert "num-examples" not in metrics


# (id, the Byzantine client's metric record, expected loss)
SURVIVED = [
    ("huge-loss-median", {"num-examples": 10, "loss": 1e9}, 2.5),
    ("huge-loss-at-the-weight-bound", {"num-examples": 10**9, "loss": 1e9}, 2.5),
    ("nan-loss-ignored", {"num-examples": 10, "loss": math.nan}, 2.0),
    ("float-weight", {"num-examples": 12.5, "loss": 2.0}, 2.0),
]


@pytest.mark.parametrize(
    ("byzantine", "loss"), [r[1:] for r in SURVIVED], ids=[r[0] for r in SURVIVED]
)
def test_survived(byzantine, loss) -> None:
    metrics, refused = _train(RobustStrategy("median", f=1), byzantine)
    assert refused == {} and "byzance-metrics-refused" not in metrics
    assert metrics["loss"] == pytest.approx(loss)


def test_survived_custom_metrics_fn_sees_only_accepted_replies() -> None:
    seen = []

    def fn(records, key):
        seen.append(len(records))
        return MetricRecord({"clients": len(records)})

    strategy = RobustStrategy("median", f=1, train_metrics_aggr_fn=fn)
    metrics, refused = _train(strategy, {"num-examples": -5, "loss": 1.0})
    assert seen == [3] and metrics["clients"] == 3 and list(refused) == [BYZ]


def test_refused_evaluation_weight_over_the_bound() -> None:
    strategy = RobustStrategy("median", f=1)
    grid = InProcessGrid(ClientApp(), 3)
    msgs = list(strategy.configure_evaluate(1, _sent(), ConfigRecord(), grid))
    weights = [10, 30, 10**15]
    replies = [
        Message(
            RecordDict({"metrics": MetricRecord({"accuracy": acc, "num-examples": w})}),
            reply_to=m,
        )
        for m, acc, w in zip(msgs, [0.8, 0.6, 0.0], weights, strict=True)
    ]
    assert strategy.aggregate_evaluate(1, replies)["accuracy"] == pytest.approx(0.65)


CLEAR_ERRORS = [
    ("unknown-how", lambda: RobustStrategy(train_metrics="mean"), "metrics aggregation must be"),
    ("zero-bound", lambda: RobustStrategy(max_num_examples=0), "max_num_examples must be"),
    ("inf-bound", lambda: RobustStrategy(max_num_examples=math.inf), "max_num_examples must be"),
    ("legacy-unknown-how", lambda: LegacyRobustStrategy(train_metrics="x"), "must be one of"),
    ("legacy-nan-bound", lambda: LegacyRobustStrategy(max_num_examples=math.nan), "finite"),
    ("aggregate-unknown-how", lambda: aggregate_metrics([], how="mode"), "must be one of"),
]


@pytest.mark.parametrize(
    ("call", "fragment"), [r[1:] for r in CLEAR_ERRORS], ids=[r[0] for r in CLEAR_ERRORS]
)
def test_clear_error(call, fragment) -> None:
    with pytest.raises(InvalidParameterError, match=fragment):
        call()


# -- the legacy API ----------------------------------------------------------------------
class _Proxy(ClientProxy):
    def get_properties(self, ins, timeout, group_id):
        raise NotImplementedError

    def get_parameters(self, ins, timeout, group_id):
        raise NotImplementedError

    def fit(self, ins, timeout, group_id):
        raise NotImplementedError

    def evaluate(self, ins, timeout, group_id):
        raise NotImplementedError

    def reconnect(self, ins, timeout, group_id):
        raise NotImplementedError


def _fit(strategy: LegacyRobustStrategy, num_examples, loss: float):
    manager = SimpleClientManager()
    proxies = [_Proxy(f"c{i}") for i in range(4)]
    for p in proxies:
        manager.register(p)
    strategy.configure_fit(1, ndarrays_to_parameters([np.zeros(2, np.float32)]), manager)
    results = []
    for i, p in enumerate(proxies):
        w, m = (10, {"loss": float(i + 1)}) if i < 3 else (num_examples, {"loss": loss})
        params = ndarrays_to_parameters([np.full(2, float(i), np.float32)])
        results.append((p, FitRes(Status(Code.OK, ""), params, w, m)))
    params, metrics = strategy.aggregate_fit(1, results, [])
    assert params is not None
    return metrics, strategy.metrics_refused[1]


LEGACY_REFUSED = [
    ("legacy-num-examples-1e15", 10**15, "over the bound"),
    ("legacy-num-examples-negative", -5, "not positive"),
]


@pytest.mark.parametrize(
    ("num_examples", "reason"), [r[1:] for r in LEGACY_REFUSED], ids=[r[0] for r in LEGACY_REFUSED]
)
def test_legacy_refused(num_examples, reason) -> None:
    metrics, refused = _fit(LegacyRobustStrategy("median", f=1), num_examples, 1e9)
    assert list(refused) == ["c3"] and reason in refused["c3"]
    assert metrics["loss"] == pytest.approx(2.0) and metrics["byzance-metrics-refused"] == 1


def test_legacy_survived_custom_fn_sees_only_accepted_results() -> None:
    seen = []

    def fn(pairs):
        seen.append(pairs)
        return {"clients": len(pairs)}

    strategy = LegacyRobustStrategy("median", f=1, fit_metrics_aggregation_fn=fn)
    metrics, refused = _fit(strategy, 10**15, 1e9)
    assert metrics["clients"] == 3 and all(w == 10 for w, _ in seen[0])
    assert list(refused) == ["c3"]
