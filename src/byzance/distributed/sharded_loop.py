"""The decentralized step loop with sharded aggregation (``aggregation = "sharded"``).

Every rank computes (or, Byzantine, forges) its vector, then the live ranks
aggregate together, each one 1/n of the coordinates
(:func:`~byzance.distributed.sharded.sharded_aggregate`; ``"replicated"``:
each slice by 2f + 1 ranks), and every rank steps its own optimizer with the
whole aggregate. The step's collectives wait at most ``step_timeout``: a rank
that crashed, hung or fell behind is left out and the step runs again among
the others (:class:`~byzance.distributed.live.LiveGroup`), so the run goes on
as the gathered topologies do.

The step's statistics (honest norm and spread, the aggregate's deviation from
the honest mean) are computed on the slices too, their whole-vector sums
completed like the rule's, so that no rank ever holds the n whole vectors.
An omniscient Byzantine rank still hears the honest vectors (the adversary
sees the network), over the point-to-point channel.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from byzance.aggregators._shard import whole
from byzance.distributed.channel import Channel
from byzance.distributed.live import Collectives, DistributedStepError, LiveGroup
from byzance.distributed.node import Node
from byzance.distributed.sharded import sharded_aggregate
from byzance.distributed.topologies import (
    DistributedRunError,
    Membership,
    Report,
    _byzantine_vector,
    _let_forgers_hear,
    _own_vector,
)
from byzance.errors import ToleranceError
from byzance.sim import TrainingDivergedError


def _block_stats(block: torch.Tensor, out: torch.Tensor, honest: torch.Tensor) -> dict[str, float]:
    """The step's statistics from this rank's columns (n, m) and its aggregate's (m,)."""
    rows = block[honest]
    mean = rows.mean(dim=0)

    def sums(h: torch.Tensor, mu: torch.Tensor, agg: torch.Tensor) -> torch.Tensor:
        norms = torch.stack(
            [mu.square().sum(-1), (agg - mu).square().sum(-1), agg.square().sum(-1)]
        )
        return torch.cat([norms, (h - mu).square().sum(-1)])

    total = whole(sums, rows, mean, out).double().clamp(min=0).sqrt()
    return {
        "honest_norm": float(total[0]),
        "deviation": float(total[1]),
        "aggregate_norm": float(total[2]),
        "honest_spread": float(total[3:].mean()),
    }


def _aggregate(
    node: Node, live: LiveGroup, step: int, vector: torch.Tensor, loss: float
) -> tuple[torch.Tensor, list[float], list[int], dict[str, float]]:
    """The step's aggregate among the live ranks: (aggregate (d,), their losses, their ranks, stats)."""
    replicated = node.config.aggregation == "replicated"
    # A failed attempt may have drawn from the rule's stream on some ranks only.
    snapshot = node.aggregation.generator.get_state()
    stats: dict[str, float] = {}

    def attempt(comm: Collectives) -> tuple[torch.Tensor, list[float], list[int]]:
        node.aggregation.generator.set_state(snapshot)
        ranks = list(live.members)
        try:
            node.rule.check(comm.size, node.f)
        except ToleranceError as err:
            raise DistributedStepError(f"step {step}: only ranks {ranks} are left; {err}") from None
        losses = torch.empty(comm.size, dtype=torch.float64)
        comm.all_gather(losses, torch.tensor([loss], dtype=torch.float64))
        honest = torch.tensor([r not in node.byzantine for r in ranks], device=vector.device)

        def observe(block: torch.Tensor, out: torch.Tensor) -> None:
            stats.update(_block_stats(block, out, honest))

        def compute(rule: Any, f: int, params: dict[str, Any]) -> torch.Tensor:
            return sharded_aggregate(
                vector, rule, f, replicated=replicated, comm=comm, observe=observe, **params
            )

        return node.aggregation.run(compute), losses.tolist(), ranks

    aggregate, losses, ranks = live.run(attempt)
    return aggregate, losses, ranks, stats


def run_sharded(node: Node, start: int, report: Report) -> Membership:
    """Every rank: its vector, then the sharded aggregation among the live ranks."""
    forger = node.is_byzantine and node.gradient_attack
    peers = [r for r in range(node.world) if r != node.rank]
    channel = Channel(peers, node.d) if node.gradient_attack else None
    live = LiveGroup(deadline=node.config.step_timeout)
    members = Membership()
    for step in range(start + 1, node.config.steps + 1):
        if node.fault is not None:
            node.fault.before_step(step)
        t0 = time.perf_counter()
        if forger:
            node.batch(step)
            vector, loss = _byzantine_vector(node, channel, step), math.nan
        else:
            own = _own_vector(node, step)
            assert own is not None
            vector, loss = own
            if channel is not None:
                _let_forgers_hear(node, channel, step, vector, loss)
        t1 = time.perf_counter()
        try:
            aggregate, losses, ranks, stats = _aggregate(node, live, step, vector, loss)
        except TrainingDivergedError as err:
            report(step, {"step": step, "diverged": True, "reason": str(err)})
            break
        except DistributedStepError as err:
            raise DistributedRunError(str(err)) from None
        lost = {r: "crashed or hung: no answer within step_timeout" for r in live.lost}
        members.note(lost)
        node.apply(aggregate)
        honest_losses = [x for r, x in zip(ranks, losses, strict=True) if r not in node.byzantine]
        row: dict[str, Any] = {
            "step": step,
            "lr": node.lr(),
            "loss": sum(honest_losses) / len(honest_losses) if honest_losses else math.nan,
            **stats,
            "byzantine_selected": None,
            "nonfinite_dropped": 0,
            "aggregation_ms": 1e3 * node.aggregation.seconds,
            "arrived": len(ranks),
            "missing": {str(r): why for r, why in sorted(lost.items())},
            "crashed": sorted(members.crashed),
            "compute_ms": 1e3 * (t1 - t0),
        }
        report(step, row)
    if channel is not None:
        channel.flush(timeout=10.0)
    return members
