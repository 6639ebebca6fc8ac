"""The training core: each part owns its state; modes compose the parts, never copy them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from byzance import aggregators, attacks, models
from byzance.sim import CheckpointMismatchError, SyncSimulator, seeded
from byzance.sim.core import STREAMS, Aggregation, stream_seed
from byzance.sim.servers import MultiServerSimulator

SRC = Path(__file__).resolve().parents[2] / "src" / "byzance"


def _data(n: int = 6, per: int = 20):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n * per, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (n * per,), generator=g)
    shards = [torch.arange(i * per, (i + 1) * per) for i in range(n)]
    return x, y, shards


def _model():
    torch.manual_seed(0)
    return models.build("mlp", (1, 8, 8), 3, hidden=[4])


def test_every_stream_has_its_own_seed_and_the_formula_lives_once():
    assert len({stream_seed(5, s) for s in STREAMS}) == len(STREAMS)
    a, b = seeded(5, "batches"), seeded(5, "batches")
    assert torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))
    copies = [p for p in SRC.rglob("*.py") if "1_000_003" in p.read_text()]
    assert copies == [SRC / "sim" / "core.py"]


def test_each_server_carries_its_own_center_across_steps():
    x, y, shards = _data()
    model = _model()
    sim = MultiServerSimulator(
        model,
        x,
        y,
        shards,
        rule=aggregators.get("centered_clipping"),
        f=1,
        byzantine=1,
        attack=attacks.get("sign_flip"),
        servers=3,
        byzantine_servers=1,
        server_rule=aggregators.get("median"),
        server_attack="per_worker",
        num_classes=3,
        batch_size=4,
    )
    sim.step()
    first = [c.clone() for c in sim.aggregation.centers]
    assert len(first) == 2 and all(c is not None for c in first)
    calls = []
    rule = sim.aggregation.rule

    class Spy:
        carries_center = True

        def __call__(self, inputs, f, **params):
            calls.append(params.get("center"))
            return rule(inputs, f, **params)

    sim.aggregation.rule = Spy()
    sim.step()
    assert [torch.equal(c, d) for c, d in zip(calls, first, strict=True)] == [True, True]


def test_a_checkpoint_of_another_mode_is_refused_by_name():
    x, y, shards = _data()
    common = dict(f=1, byzantine=1, attack=attacks.get("sign_flip"), num_classes=3, batch_size=4)
    model = _model()
    sync = SyncSimulator(
        model,
        x,
        y,
        shards,
        rule=aggregators.get("median"),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        **common,
    )
    other = MultiServerSimulator(
        _model(),
        x,
        y,
        shards,
        rule=aggregators.get("median"),
        server_rule=aggregators.get("median"),
        **common,
    )
    with pytest.raises(CheckpointMismatchError, match="parts"):
        sync.load_state_dict(other.state_dict())


def test_the_rule_draws_from_the_run_generator_unless_seeded():
    rule = aggregators.compose("bucketing", "median")
    x = torch.randn(8, 5)
    one = Aggregation(rule, 1, seeded(3, "rule"))
    two = Aggregation(rule, 1, seeded(3, "rule"))
    assert torch.equal(one(x), two(x))
    state = one.state_dict()
    after_one = one(x)
    two.load_state_dict(state)
    assert torch.equal(two(x), after_one)


def test_momentum_forms_agree_with_the_config_keys():
    from byzance.runs import config
    from byzance.sim import core

    assert config.MOMENTUM_FORMS == core.MOMENTUM_FORMS


def test_worker_momentum_ema_keeps_the_gradient_scale_heavy_ball_does_not():
    from byzance.sim.core import WorkerMomentum

    g = torch.ones(2, 3)
    ema, heavy = WorkerMomentum(0.9, "ema"), WorkerMomentum(0.9, "heavy_ball")
    for _ in range(200):
        m_ema, m_heavy = ema(g), heavy(g)
    assert torch.allclose(m_ema, g)
    assert torch.allclose(m_heavy, 10 * g, rtol=1e-4)
    # the first step is the gradient itself (torch's SGD buffer), then m <- beta m + (1 - beta) g
    fresh = WorkerMomentum(0.5, "ema")
    assert torch.equal(fresh(g), g)
    assert torch.allclose(fresh(torch.zeros(2, 3)), 0.5 * g)


def test_workers_augment_their_batches_from_their_own_resumable_stream():
    import torch.nn.functional as F

    from byzance import models
    from byzance.sim.core import CheckpointMismatchError, Workers, seeded

    torch.manual_seed(0)
    x, y = torch.randn(40, 3, 8, 8), torch.randint(0, 3, (40,))
    model = models.build("mlp", (3, 8, 8), 3, hidden=(8,))

    def workers(augment):
        return Workers(
            model, x, y, [torch.arange(20), torch.arange(20, 40)], honest=2, batch_size=4,
            l2=0.0, loss_fn=F.cross_entropy, num_classes=3, data_attack=None, attack_params={},
            generator=seeded(0, "batches"), augment=augment,
            augment_generator=seeded(0, "augment") if augment else None,
        )  # fmt: skip

    plain, augmented = workers(None), workers("crop_flip")
    idx = plain.draw()
    assert not torch.equal(plain.gradients(idx)[0], augmented.gradients(idx)[0])
    state = augmented.state_dict()
    first = augmented.gradients(idx)[0]
    augmented.load_state_dict(state)
    assert torch.equal(augmented.gradients(idx)[0], first)  # the same crops and flips again
    with pytest.raises(CheckpointMismatchError, match="augment"):
        augmented.load_state_dict(plain.state_dict())
