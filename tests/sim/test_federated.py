"""Federated rounds: client sampling, vectorized local steps, robust FedAvg under attack."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from byzance import aggregators, models
from byzance.runs.config import ConfigError, RunConfig, load
from byzance.runs.runner import read_metrics, train
from byzance.sim.federated import ClientSampler, FederatedSimulator
from byzance.sim.sync import SyncSimulator


def _sampler(fixed: bool, seed: int = 0) -> ClientSampler:
    return ClientSampler(
        100,
        20,
        10,
        fixed=fixed,
        byzantine_per_round=2,
        generator=torch.Generator().manual_seed(seed),
    )


def test_fixed_sampling_puts_exactly_f_byzantine_clients_in_every_round():
    sampler = _sampler(fixed=True)
    for _ in range(50):
        honest, byzantine = sampler.draw()
        assert len(honest) == 8 and len(byzantine) == 2
        assert bool((honest < 80).all()) and bool((byzantine >= 80).all())
        assert len(set(honest.tolist())) == 8


def test_random_sampling_varies_around_the_population_fraction_and_repeats_under_a_seed():
    sampler = _sampler(fixed=False)
    counts = [len(sampler.draw()[1]) for _ in range(400)]
    assert min(counts) == 0 and max(counts) >= 5  # hypergeometric(100, 20, 10)
    assert sum(counts) / len(counts) == pytest.approx(2.0, abs=0.25)
    again = _sampler(fixed=False)
    assert [len(again.draw()[1]) for _ in range(400)] == counts


def _problem(clients: int = 6):
    torch.manual_seed(0)
    x = torch.randn(clients * 20, 1, 4, 4)
    y = torch.randint(0, 3, (clients * 20,))
    shards = list(torch.arange(len(x)).chunk(clients))
    model = models.build("mlp", (1, 4, 4), 3, hidden=(8,)).double()
    return model, x.double(), y, shards


def test_local_steps_of_all_clients_at_once_equal_a_loop_over_clients():
    model, x, y, shards = _problem()
    sim = FederatedSimulator(
        copy.deepcopy(model), x, y, shards, f=0, byzantine=0, attack=None,
        rule=aggregators.get("average"),
        optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
        clients_per_round=4, local_steps=3, local_lr=0.05, local_momentum=0.9, batch_size=5,
    )  # fmt: skip
    clients = torch.tensor([0, 2, 3, 5])
    generator_state = sim.workers.generator.get_state()
    updates, _ = sim.local_training(clients)
    sim.workers.generator.set_state(generator_state)  # the same batches, drawn the same way
    batches = [sim.workers.draw(clients) for _ in range(3)]
    for row in range(len(clients)):
        local = copy.deepcopy(model)
        opt = torch.optim.SGD(local.parameters(), lr=0.05, momentum=0.9)
        for idx in batches:
            opt.zero_grad()
            F.cross_entropy(local(x[idx[row]]), y[idx[row]]).backward()
            opt.step()
        theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        theta = torch.cat([p.detach().reshape(-1) for p in local.parameters()])
        torch.testing.assert_close(updates[row], theta0 - theta, rtol=1e-10, atol=1e-12)


def test_one_local_step_with_every_client_is_synchronous_sgd():
    """FedAvg with every client, one local step, server lr 1 and the average is SGD on the mean."""
    model, x, y, shards = _problem()
    common = dict(f=0, byzantine=0, attack=None, batch_size=5, seed=3)
    fed_model, sgd_model = copy.deepcopy(model), copy.deepcopy(model)
    fed = FederatedSimulator(
        fed_model, x, y, shards, **common, rule=aggregators.get("average"),
        optimizer=torch.optim.SGD(fed_model.parameters(), lr=1.0),
        clients_per_round=6, local_steps=1, local_lr=0.2,
    )  # fmt: skip
    sgd = SyncSimulator(
        sgd_model, x, y, shards, **common, rule=aggregators.get("average"),
        optimizer=torch.optim.SGD(sgd_model.parameters(), lr=0.2),
    )  # fmt: skip
    for _ in range(4):
        fed.step(), sgd.step()
    for a, b in zip(fed_model.parameters(), sgd_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


FEDERATED = dict(
    dataset="digits",
    model="logistic",
    algorithm="fedavg",
    workers=100,
    byzantine=20,
    clients_per_round=10,
    local_steps=5,
    local_lr=0.1,
    lr=1.0,
    batch_size=8,
    steps=30,
    eval_every=30,
)


@pytest.mark.parametrize(("attack", "params"), [("large_norm", {}), ("sign_flip", {"scale": 10.0})])
def test_the_average_breaks_and_the_median_holds_in_federated_rounds(tmp_path, attack, params):
    """100 clients, 10 per round, 5 local steps, exactly 2 Byzantine per round.

    Sign flip at scale 1 only slows the average (2 of 10 reversed: 0.6 of the step);
    at scale 10 the average's step points uphill.
    """
    finals = {}
    for rule in ("average", "median"):
        cfg = RunConfig(
            **FEDERATED,
            aggregator=rule,
            attack=attack,
            attack_params=params,
            out_dir=str(tmp_path / rule),
        )
        result = train(cfg)
        finals[rule] = 0.0 if result.final.get("diverged") else result.final["accuracy"]
        rows = read_metrics(result.out_dir / "metrics.jsonl")
        assert all(r.get("byzantine_sampled", 2) == 2 for r in rows)
    assert finals["average"] < 0.3
    assert finals["median"] > 0.7


def test_random_byzantine_sampling_is_recorded_and_summarized(tmp_path):
    cfg = RunConfig(
        **{**FEDERATED, "steps": 40, "eval_every": 40},
        aggregator="median",
        attack="sign_flip",
        byzantine_sampling="random",
        out_dir=str(tmp_path / "random"),
    )
    result = train(cfg)
    rows = read_metrics(result.out_dir / "metrics.jsonl")
    over = sum(r["byzantine_over_f"] for r in rows)
    assert over == sum(r["byzantine_sampled"] > 2 for r in rows) and over > 0
    assert len({r["byzantine_sampled"] for r in rows}) > 1
    summary = (result.out_dir / "summary.md").read_text()
    assert f"rounds with more Byzantine clients than f=2 | {over} of 40" in summary


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"clients_per_round": 200}, "more than the 100 clients"),
        ({"client_fraction": 0.5}, "give one of them"),
        ({"aggregator": "krum", "f": 4}, "krum requires"),
        ({"local_steps": 0}, "local_steps"),
        ({"local_lr": -1.0}, "local_lr"),
        ({"local_momentum": 1.0}, "local_momentum"),
        ({"worker_momentum": 0.9}, "local_momentum"),
        ({"mode": "async"}, "mode = 'sync'"),
        ({"f": 3, "byzantine": 2}, "byzantine_sampling 'fixed'"),
    ],
)
def test_bad_federated_settings_are_one_clear_error_before_any_work(changes, match):
    with pytest.raises(ConfigError, match=match):
        load(None, {**FEDERATED, **changes})


def test_real_processes_refuse_federated_rounds_before_starting(tmp_path):
    from typer.testing import CliRunner

    from byzance.cli import app

    config = tmp_path / "fed.toml"
    config.write_text('algorithm = "fedavg"\nworkers = 2\nbyzantine = 0\n')
    result = CliRunner().invoke(app, ["launch", "--nproc", "2", "--config", str(config)])
    assert result.exit_code != 0
    assert "runs in the simulator" in result.output
