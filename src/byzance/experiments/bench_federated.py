"""Benchmark of a federated round: every sampled client's local steps at once vs a loop over clients.

One round of ``clients`` clients x ``local_steps`` local SGD steps (batch
``batch`` each, momentum 0.9) on the MNIST-sized MLP, timed two ways in the
same process on the same batches: the simulator's vectorized local training
(:meth:`byzance.sim.federated.FederatedSimulator.local_training`: one vmapped
gradient over per-client parameters per local step), and a Python loop over
clients, each a model copy stepped by ``torch.optim.SGD`` (the same
arithmetic, the way a per-client implementation runs it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

TARGET_SPEEDUP = 3.0  # vectorized round vs the per-client loop, MLP, 10 clients x 5 steps


@dataclass(frozen=True)
class FederatedBenchRow:
    """Timings (ms) of one round, vectorized and looped."""

    model: str
    clients: int
    local_steps: int
    batch: int
    threads: int
    vectorized_ms: float
    loop_ms: float

    @property
    def speedup(self) -> float:
        return self.loop_ms / self.vectorized_ms


def run_federated_bench(
    *,
    model: str = "mlp",
    clients: int = 10,
    local_steps: int = 5,
    batch: int = 32,
    threads: int = 1,
    repeat: int = 5,
    device: str = "cpu",
) -> FederatedBenchRow:
    """Time one round both ways (median of ``repeat``), on random MNIST-shaped data."""
    import statistics

    import torch
    import torch.nn.functional as F

    from byzance import aggregators, models
    from byzance.devices import resolve_device
    from byzance.experiments.bench_sim import best_ms
    from byzance.sim.federated import FederatedSimulator

    where = resolve_device(device)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = models.build(model, (1, 28, 28), 10).to(where)
    x = torch.randn(clients * 100, 1, 28, 28).to(where)
    y = torch.randint(0, 10, (clients * 100,)).to(where)
    shards = list(torch.arange(len(x)).chunk(clients))
    sim = FederatedSimulator(
        net,
        x,
        y,
        shards,
        f=0,
        byzantine=0,
        attack=None,
        rule=aggregators.get("average"),
        optimizer=torch.optim.SGD(net.parameters(), lr=1.0),
        clients_per_round=clients,
        local_steps=local_steps,
        local_lr=0.05,
        local_momentum=0.9,
        batch_size=batch,
    )
    ids = torch.arange(clients)
    batches = [sim.workers.draw(ids) for _ in range(local_steps)]

    def looped() -> None:
        for client in range(clients):
            local = copy.deepcopy(net)
            opt = torch.optim.SGD(local.parameters(), lr=0.05, momentum=0.9)
            for idx in batches:
                opt.zero_grad()
                rows = idx[client].to(where)
                F.cross_entropy(local(x[rows]), y[rows]).backward()
                opt.step()

    median = statistics.median
    vectorized = best_ms(lambda: sim.local_training(ids), repeat, where, median)
    loop = best_ms(looped, repeat, where, median)
    return FederatedBenchRow(model, clients, local_steps, batch, threads, vectorized, loop)


def render_federated_bench(row: FederatedBenchRow, console) -> None:
    """A rich table of the round's timings, with the target checked."""
    from rich.table import Table

    table = Table(title="Federated round: sampled clients' local steps (CPU)")
    for col in ("model", "clients", "local steps", "batch", "threads", "vmap ms", "loop ms"):
        table.add_column(col, justify="right")
    table.add_column("speedup", justify="right")
    mark = " [green]ok" if row.speedup >= TARGET_SPEEDUP else " [red]under target"
    table.add_row(
        row.model,
        str(row.clients),
        str(row.local_steps),
        str(row.batch),
        str(row.threads),
        f"{row.vectorized_ms:.1f}",
        f"{row.loop_ms:.1f}",
        f"{row.speedup:.2f}x{mark}",
    )
    console.print(table)
    console.print(
        f"Target: the vectorized round >= {TARGET_SPEEDUP:.0f}x faster than the per-client loop."
    )
