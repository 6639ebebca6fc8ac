"""Federated learning with Flower, one Byzantine client, and a byzance rule instead of the average.

Seven clients train a small classifier on their shards of scikit-learn's
8x8 digits (shipped with scikit-learn: nothing is downloaded); one of them is
Byzantine and returns a huge model. Flower's FedAvg averages it in and the
model is destroyed; byzance's RobustStrategy (here the trimmed mean, f=1)
keeps learning::

    python examples/flower_digits.py                      # FedAvg vs trimmed_mean, 5 rounds
    python examples/flower_digits.py --rule "nnm>trimmed_mean" --f 2 --clients 9

Everything runs in this process (``byzance.flower.local.InProcessGrid``: the
same Messages, ClientApp and Strategy as a deployment, no network, no Ray).
The same ``client_app`` and ``server_app`` run under Flower's deployment
runtime unchanged: see docs/flower.md.
"""

from __future__ import annotations

import argparse
import functools

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, Strategy
from torch import nn

from byzance import data
from byzance.data.partition import partition
from byzance.flower import RobustStrategy
from byzance.flower.local import InProcessGrid

BYZANTINE_SCALE = 1e3  # the size of the Byzantine client's random update, per weight


# -- the task: digits, a linear classifier, local SGD ------------------------------------
def make_model() -> nn.Module:
    """A softmax classifier on the 8x8 digits: 650 parameters."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


@functools.cache
def digits() -> data.Dataset:
    return data.load("digits", seed=0)


def shard(partition_id: int, num_partitions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Client ``partition_id``'s training examples (an iid split)."""
    ds = digits()
    idx = partition(ds.y_train, num_partitions, "iid", seed=0)[partition_id]
    return ds.x_train[idx], ds.y_train[idx]


def local_train(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float
) -> float:
    """``epochs`` passes of minibatch SGD (batch 32); returns the last epoch's mean loss."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(len(y))
    loss_sum = 0.0
    for _ in range(epochs):
        loss_sum = 0.0
        for batch in torch.randperm(len(y), generator=gen).split(32):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(batch)
    return loss_sum / len(y)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(dim=1) == y).float().mean())


def load(arrays: ArrayRecord) -> nn.Module:
    model = make_model()
    model.load_state_dict(arrays.to_torch_state_dict())
    return model


# -- the ClientApp: honest, or Byzantine when its node config says so ---------------------
client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    model = load(msg.content["arrays"])
    cfg = context.node_config
    x, y = shard(int(cfg["partition-id"]), int(cfg["num-partitions"]))
    epochs = int(context.run_config.get("local-epochs", 1))
    loss = local_train(model, x, y, epochs=epochs, lr=float(context.run_config.get("lr", 0.1)))
    state = model.state_dict()
    if cfg.get("byzantine", False):  # a huge random update: it moves the average anywhere
        gen = torch.Generator().manual_seed(int(msg.content["config"].get("server-round", 0)))
        state = {
            k: v + BYZANTINE_SCALE * torch.randn(v.shape, generator=gen) for k, v in state.items()
        }
    content = RecordDict(
        {
            "arrays": ArrayRecord(state),
            "metrics": MetricRecord({"train-loss": loss, "num-examples": len(y)}),
        }
    )
    return Message(content=content, reply_to=msg)


# -- the ServerApp: RobustStrategy, configured from the run config ------------------------
server_app = ServerApp()


def central_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
    """Test accuracy of the global model on the held-out digits."""
    ds = digits()
    return MetricRecord({"accuracy": accuracy(load(arrays), ds.x_test, ds.y_test)})


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    strategy = RobustStrategy(
        str(cfg.get("rule", "trimmed_mean")), int(cfg.get("f", 1)), fraction_evaluate=0.0
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(make_model().state_dict()),
        num_rounds=int(cfg.get("num-server-rounds", 5)),
        evaluate_fn=central_evaluate,
    )
    print(result.evaluate_metrics_serverapp)


# -- a local run: the ClientApps in this process -----------------------------------------
def run_local(
    strategy: Strategy, *, clients: int = 7, byzantine: int = 1, rounds: int = 5, epochs: int = 1
) -> list[float]:
    """Train with ``strategy`` against ``clients`` in-process ClientApps, the last
    ``byzantine`` of them Byzantine; returns the test accuracy before round 1 and after each round.
    """
    grid = InProcessGrid(
        client_app,
        clients,
        node_config=lambda i: {
            "partition-id": i,
            "num-partitions": clients,
            "byzantine": i >= clients - byzantine,
        },
        run_config={"local-epochs": epochs, "lr": 0.1},
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(make_model().state_dict()),
        num_rounds=rounds,
        train_config=ConfigRecord(),
        evaluate_fn=central_evaluate,
    )
    metrics = result.evaluate_metrics_serverapp
    return [float(metrics[r]["accuracy"]) for r in sorted(metrics)]


def compare(rule: str, f: int, clients: int, rounds: int) -> dict[str, list[float]]:
    """Test accuracy per round of FedAvg and of the byzance rule, one Byzantine client."""
    strategies = {
        "FedAvg (flwr)": FedAvg(min_train_nodes=clients, fraction_evaluate=0.0),
        f"{rule} (byzance)": RobustStrategy(rule, f, fraction_evaluate=0.0),
    }
    return {name: run_local(s, clients=clients, rounds=rounds) for name, s in strategies.items()}


def _cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rule", default="trimmed_mean", help="any name of `byzance rules`")
    parser.add_argument("--f", type=int, default=1, help="Byzantine clients tolerated")
    parser.add_argument("--clients", type=int, default=7, help="clients, one of them Byzantine")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    table = compare(args.rule, args.f, args.clients, args.rounds)
    print(f"\ntest accuracy, {args.clients} clients, 1 Byzantine (round 0 = initial model)")
    print("| strategy | " + " | ".join(f"round {r}" for r in range(args.rounds + 1)) + " |")
    print("| --- |" + " --- |" * (args.rounds + 1))
    for name, accs in table.items():
        print(f"| {name} | " + " | ".join(f"{a:.3f}" for a in accs) + " |")


if __name__ == "__main__":
    _cli()
