"""RobustStrategy (Flower's Message API) driven by Flower's own Message, ArrayRecord and Grid types."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("flwr")

from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

import byzance.aggregators as agg
from byzance.errors import (
    InvalidParameterError,
    NonFiniteInputError,
    ToleranceError,
    UnknownNameError,
)
from byzance.flower import RobustStrategy
from byzance.flower.local import FIRST_NODE_ID, InProcessGrid


def arrays_of(*parts: np.ndarray, keys: tuple[str, ...] = ("w", "b")) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(p)) for k, p in zip(keys, parts, strict=True)})


def instructions(strategy: RobustStrategy, sent: ArrayRecord, n: int, server_round: int = 1):
    """The train messages the strategy sends to n nodes (grid of idle ClientApps)."""
    grid = InProcessGrid(ClientApp(), n)
    msgs = list(strategy.configure_train(server_round, sent, ConfigRecord(), grid))
    return sorted(msgs, key=lambda m: m.metadata.dst_node_id)


def reply(msg: Message, record: ArrayRecord, num_examples: int = 10, **metrics: float) -> Message:
    content = RecordDict(
        {"arrays": record, "metrics": MetricRecord({"num-examples": num_examples, **metrics})}
    )
    return Message(content, reply_to=msg)


def test_median_of_three_models_worked_by_hand():
    strategy = RobustStrategy("median", f=1)
    sent = arrays_of(np.array([1.0, 1.0], np.float32), np.array([0.0], np.float32))
    msgs = instructions(strategy, sent, 3)
    models = [([1.0, 2.0], [5.0]), ([3.0, 4.0], [6.0]), ([1e6, -1e6], [-1e6])]
    replies = [
        reply(m, arrays_of(np.array(w, np.float32), np.array(b, np.float32)))
        for m, (w, b) in zip(msgs, models, strict=True)
    ]
    record, metrics = strategy.aggregate_train(1, replies)
    np.testing.assert_array_equal(record["w"].numpy(), [3.0, 2.0])
    np.testing.assert_array_equal(record["b"].numpy(), [5.0])
    assert list(record.keys()) == ["w", "b"]
    assert record["w"].numpy().dtype == np.float32
    assert metrics["byzance-aggregated"] == 3
    assert metrics["byzance-failed"] == 0


def test_updates_are_measured_from_the_model_sent():
    # Clipping each client's update to norm 1, then averaging (worked by hand):
    # sent w = (10, 0); updates (3, 4) -> (0.6, 0.8) and (0, 1) -> (0, 1) and (0, 0);
    # mean (0.2, 0.6); new model (10.2, 0.6). Clipping the models instead would not
    # stay near w.
    rule = agg.compose(agg.get("clipping", c=1.0), "average")
    strategy = RobustStrategy(rule, f=0)
    sent = arrays_of(np.array([10.0, 0.0]), keys=("w",))
    msgs = instructions(strategy, sent, 3)
    models = [[13.0, 4.0], [10.0, 1.0], [10.0, 0.0]]
    replies = [
        reply(m, arrays_of(np.array(w), keys=("w",))) for m, w in zip(msgs, models, strict=True)
    ]
    record, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(record["w"].numpy(), [10.2, 0.6], rtol=1e-12)

    on_models = RobustStrategy(rule, f=0, on="models")
    msgs = instructions(on_models, sent, 3)
    replies = [
        reply(m, arrays_of(np.array(w), keys=("w",))) for m, w in zip(msgs, models, strict=True)
    ]
    record, _ = on_models.aggregate_train(1, replies)
    assert record["w"].numpy()[0] < 1.0  # the clipped models, not 10 + a clipped step


@pytest.mark.parametrize("rule", ["krum", "geometric_median", "mda", "nnm>trimmed_mean", "bulyan"])
def test_the_rule_sees_whole_flattened_models_in_one_call(rule):
    gen = torch.Generator().manual_seed(0)
    n, f = 11, 2
    shapes = [(3, 4), (4,), (2, 2, 2)]
    sent = [torch.randn(s, generator=gen) for s in shapes]
    models = [[w + 0.1 * torch.randn(w.shape, generator=gen) for w in sent] for _ in range(n)]
    models[-1] = [w + 1e3 for w in sent]
    models[-2] = [-w * 50 for w in sent]
    keys = ("a", "b", "c")
    strategy = RobustStrategy(rule, f=f)
    msgs = instructions(strategy, arrays_of(*(w.numpy() for w in sent), keys=keys), n)
    replies = [
        reply(m, arrays_of(*(w.numpy() for w in model), keys=keys))
        for m, model in zip(msgs, models, strict=True)
    ]
    record, metrics = strategy.aggregate_train(1, replies)

    flat_sent = torch.cat([w.reshape(-1) for w in sent])
    flat = torch.stack([torch.cat([w.reshape(-1) for w in model]) for model in models])
    expected = agg.get(rule)(flat - flat_sent, f) + flat_sent
    got = np.concatenate([record[k].numpy().reshape(-1) for k in keys])
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert [record[k].numpy().shape for k in keys] == shapes
    assert metrics["byzance-aggregated"] == n


def test_rule_parameters_are_passed_and_checked():
    gen = torch.Generator().manual_seed(1)
    sent = torch.zeros(6)
    models = [torch.randn(6, generator=gen) for _ in range(7)]
    strategy = RobustStrategy("bulyan", f=1, rule_params={"selection": "geometric_median"})
    msgs = instructions(strategy, arrays_of(sent.numpy(), keys=("w",)), 7)
    replies = [
        reply(m, arrays_of(x.numpy(), keys=("w",))) for m, x in zip(msgs, models, strict=True)
    ]
    record, _ = strategy.aggregate_train(1, replies)
    expected = agg.bulyan(torch.stack(models), 1, selection="geometric_median")
    np.testing.assert_allclose(record["w"].numpy(), expected.numpy(), rtol=1e-5, atol=1e-7)

    with pytest.raises(InvalidParameterError, match="selection"):
        RobustStrategy("bulyan", f=1, rule_params={"selektion": "krum"})
    with pytest.raises(UnknownNameError, match="krum"):
        RobustStrategy("krun", f=1)
    with pytest.raises(InvalidParameterError, match="pre-aggregator"):
        RobustStrategy("nnm", f=1)


def test_dtypes_and_integer_counters_survive():
    strategy = RobustStrategy("trimmed_mean", f=1)
    sent = ArrayRecord(
        {
            "weight": Array(np.zeros((2, 2), np.float32)),
            "num_batches_tracked": Array(np.array(4, np.int64)),
        }
    )
    msgs = instructions(strategy, sent, 4)
    replies = [
        reply(
            m,
            ArrayRecord(
                {
                    "weight": Array(np.full((2, 2), v, np.float32)),
                    "num_batches_tracked": Array(np.array(5 + i, np.int64)),
                }
            ),
        )
        for i, (m, v) in enumerate(zip(msgs, [1.0, 2.0, 3.0, 1e9], strict=True))
    ]
    record, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_array_equal(record["weight"].numpy(), np.full((2, 2), 2.5, np.float32))
    counter = record["num_batches_tracked"].numpy()
    assert counter.dtype == np.int64 and counter.shape == () and int(counter) in (6, 7)


def test_failed_malformed_and_nonfinite_clients_are_reported():
    strategy = RobustStrategy("median", f=2, min_train_nodes=6)
    sent = arrays_of(np.zeros(3), keys=("w",))
    msgs = instructions(strategy, sent, 6)
    good = [reply(m, arrays_of(np.full(3, float(i)), keys=("w",))) for i, m in enumerate(msgs[:3])]
    failed = Message(Error(code=1, reason="out of memory"), reply_to=msgs[3])
    wrong_shape = reply(msgs[4], arrays_of(np.zeros(4), keys=("w",)))
    nonfinite = reply(msgs[5], arrays_of(np.array([np.nan, 0.0, 0.0]), keys=("w",)))
    record, metrics = strategy.aggregate_train(1, [*good, failed, wrong_shape, nonfinite])
    # malformed and non-finite each use up one of f=2: the median of the 3 good ones
    np.testing.assert_array_equal(record["w"].numpy(), [1.0, 1.0, 1.0])
    assert dict(metrics) == {
        "byzance-aggregated": 3,
        "byzance-failed": 1,
        "byzance-malformed": 1,
        "byzance-nonfinite": 1,
    }
    report = strategy.reports[1]
    assert report.failed == {FIRST_NODE_ID + 3: "out of memory"}
    assert list(report.malformed) == [FIRST_NODE_ID + 4]
    assert "shape (4,)" in report.malformed[FIRST_NODE_ID + 4]
    assert report.nonfinite == [FIRST_NODE_ID + 5]


def test_wrong_keys_count_as_malformed_and_more_than_f_faults_raise():
    strategy = RobustStrategy("median", f=1)
    sent = arrays_of(np.zeros(2), np.zeros(1))
    msgs = instructions(strategy, sent, 3)
    renamed = reply(msgs[0], arrays_of(np.zeros(2), np.zeros(1), keys=("x", "y")))
    nan = reply(msgs[1], arrays_of(np.full(2, np.inf), np.zeros(1)))
    ok = reply(msgs[2], arrays_of(np.ones(2), np.ones(1)))
    with pytest.raises(NonFiniteInputError, match="round 1"):
        strategy.aggregate_train(1, [renamed, nan, ok])

    skipping = RobustStrategy("median", f=1, too_few="skip")
    msgs = instructions(skipping, sent, 3)
    record, metrics = skipping.aggregate_train(1, [renamed, nan, ok])
    assert record is None and metrics["byzance-malformed"] == 1


def test_too_few_replies_raise_a_clear_error_or_skip_the_round():
    sent = arrays_of(np.zeros(2), keys=("w",))
    strategy = RobustStrategy("krum", f=1)  # n >= 2f + 3 = 5
    msgs = instructions(strategy, sent, 5)
    replies = [reply(m, arrays_of(np.ones(2), keys=("w",))) for m in msgs[:3]]
    replies += [Message(Error(code=1, reason="timeout"), reply_to=m) for m in msgs[3:]]
    with pytest.raises(ToleranceError, match=r"round 1: 3 usable replies \(2 clients failed.*n=5"):
        strategy.aggregate_train(1, replies)

    skipping = RobustStrategy("krum", f=1, too_few="skip")
    instructions(skipping, sent, 5)
    record, metrics = skipping.aggregate_train(1, replies)
    assert record is None and metrics["byzance-failed"] == 2


def test_construction_refuses_too_few_sampled_clients():
    assert RobustStrategy("krum", f=2).min_train_nodes == 7
    assert RobustStrategy("bulyan", f=1).min_available_nodes == 7
    with pytest.raises(ToleranceError, match="min_train_nodes=7"):
        RobustStrategy("krum", f=2, min_train_nodes=5)


def test_updates_need_the_model_sent_this_round():
    strategy = RobustStrategy("median", f=1)
    grid = InProcessGrid(ClientApp(), 3)
    msgs = list(
        strategy.configure_train(1, arrays_of(np.zeros(1), keys=("w",)), ConfigRecord(), grid)
    )
    replies = [reply(m, arrays_of(np.ones(1), keys=("w",))) for m in msgs]
    with pytest.raises(InvalidParameterError, match="configure_train"):
        strategy.aggregate_train(2, replies)
    # On models, the layout most replies share is used instead.
    on_models = RobustStrategy("median", f=1, on="models")
    record, _ = on_models.aggregate_train(2, replies)
    np.testing.assert_array_equal(record["w"].numpy(), [1.0])


def test_centered_clipping_carries_its_state_across_rounds():
    strategy = RobustStrategy("centered_clipping", f=1, rule_params={"tau": 1.0})
    sent = arrays_of(np.zeros(2), keys=("w",))
    for server_round, step in ((1, 10.0), (2, 10.0)):
        msgs = instructions(strategy, sent, 3, server_round)
        replies = [reply(m, arrays_of(np.array([step, 0.0]), keys=("w",))) for m in msgs]
        record, _ = strategy.aggregate_train(server_round, replies)
        if server_round == 1:  # from center 0, every update clipped to norm 1
            np.testing.assert_allclose(record["w"].numpy(), [1.0, 0.0])
        else:  # from the previous aggregate (1, 0): one more clipped step
            np.testing.assert_allclose(record["w"].numpy(), [2.0, 0.0])


def test_a_raising_client_app_is_reported_by_the_grid():
    app = ClientApp()

    @app.train()
    def train(msg: Message, context) -> Message:
        if context.node_config["partition-id"] == 0:
            raise RuntimeError("disk full")
        record = msg.content["arrays"]
        new = ArrayRecord({"w": Array(record["w"].numpy() + 1.0)})
        return Message(
            RecordDict({"arrays": new, "metrics": MetricRecord({"num-examples": 1})}),
            reply_to=msg,
        )

    grid = InProcessGrid(app, 4, node_config=lambda i: {"partition-id": i})
    strategy = RobustStrategy("median", f=1, fraction_evaluate=0.0)
    result = strategy.start(
        grid=grid, initial_arrays=arrays_of(np.zeros(2), keys=("w",)), num_rounds=2
    )
    np.testing.assert_array_equal(result.arrays["w"].numpy(), [2.0, 2.0])
    assert result.train_metrics_clientapp[2]["byzance-failed"] == 1
    assert "disk full" in strategy.reports[1].failed[FIRST_NODE_ID]


def test_a_malformed_evaluation_report_does_not_stop_the_run():
    strategy = RobustStrategy("median", f=1)
    grid = InProcessGrid(ClientApp(), 3)
    msgs = list(
        strategy.configure_evaluate(1, arrays_of(np.zeros(1), keys=("w",)), ConfigRecord(), grid)
    )

    def evaluation(msg, **metrics):
        return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

    replies = [
        evaluation(msgs[0], accuracy=0.8, **{"num-examples": 10}),
        evaluation(msgs[1], accuracy=0.6, **{"num-examples": 30}),
        evaluation(msgs[2], accuracy=1e9),  # no weight: FedAvg would raise
    ]
    metrics = strategy.aggregate_evaluate(1, replies)
    assert metrics["accuracy"] == pytest.approx(0.65)
