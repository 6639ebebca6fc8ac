"""The step loops of the two topologies, for each role a rank can play.

Parameter server (rank 0 serves, and is also worker slot 0):
    server:  send the parameters of step t to every live worker; compute its own
             gradient; collect the workers' vectors until all came or
             ``step_timeout``; aggregate those (if the rule tolerates f among
             them); step the optimizer.
    worker:  wait (``worker_timeout``) for the newest parameters; compute and
             send its vector; repeat until the server says stop.
Decentralized: every rank sends its vector to every other rank, collects theirs
until all came or ``step_timeout``, aggregates, and steps its own optimizer;
honest ranks that received the same vectors hold the same model.

Byzantine ranks with an omniscient attack receive the honest vectors of the
step (the adversary sees the network), compute the attack, and send their row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from byzance.dist.channel import Channel, Frame, Kind
from byzance.dist.node import Node
from byzance.errors import ByzanceError, ToleranceError
from byzance.sim import flatten_params
from byzance.sim.sync import TrainingDivergedError, step_stats

Report = Callable[[int, dict[str, Any]], None]


class DistributedRunError(RuntimeError):
    """A distributed run cannot go on (too few gradients arrived, the server is gone, ...)."""


@dataclass
class Membership:
    """Which peers are still part of the run, and what happened to the others."""

    crashed: dict[int, str] = field(default_factory=dict)  # rank -> reason, for good

    def note(self, problems: dict[int, str]) -> None:
        for rank, why in problems.items():
            if why.startswith(("crashed", "faulty: malformed")) or why == "stopped":
                self.crashed.setdefault(rank, why)


def _gather_inputs(
    node: Node, own: tuple[torch.Tensor, float] | None, frames: dict[int, Frame]
) -> tuple[torch.Tensor, torch.Tensor, list[int], list[float]]:
    """The vectors that arrived, in slot order: (m, d), Byzantine mask (m,), ranks, honest losses."""
    rows, ranks, losses = [], [], []
    for rank in node.order:
        if rank == node.rank and own is not None:
            vector, loss = own
        elif rank in frames:
            vector, loss = frames[rank].payload, frames[rank].value
        else:
            continue
        rows.append(vector)
        ranks.append(rank)
        if rank not in node.byzantine:
            losses.append(loss)
    mask = torch.tensor([r in node.byzantine for r in ranks], dtype=torch.bool)
    return torch.stack(rows), mask, ranks, losses


def _aggregate_step(
    node: Node,
    step: int,
    own: tuple[torch.Tensor, float] | None,
    frames: dict[int, Frame],
    problems: dict[int, str],
) -> dict[str, Any]:
    """Aggregate what arrived and step the optimizer; returns the step's metric row."""
    inputs, byz_mask, ranks, losses = _gather_inputs(node, own, frames)
    if not bool(torch.isfinite(inputs[~byz_mask]).all()):
        raise TrainingDivergedError(f"step {step}: the honest gradients are not finite")
    try:
        node.rule.check(len(ranks), node.f)
    except ToleranceError as err:
        raise DistributedRunError(
            f"step {step}: only {len(ranks)} of {node.world} gradients arrived within "
            f"step_timeout = {node.config.step_timeout} s (missing: {problems}); {err}"
        ) from None
    start = time.perf_counter()
    aggregate = node.aggregate(inputs)
    seconds = time.perf_counter() - start
    honest = inputs[~byz_mask]
    stats = step_stats(
        node.rule,
        node.f,
        torch.tensor(losses),
        honest,
        inputs,
        byz_mask,
        aggregate,
        seconds,
    )
    node.apply(aggregate)
    row: dict[str, Any] = {"step": step, "lr": node.lr(), **stats.__dict__}
    row["aggregation_ms"] = 1e3 * row.pop("aggregation_seconds")
    row.pop("sim_time", None)
    row["arrived"] = len(ranks)
    row["missing"] = {str(r): why for r, why in sorted(problems.items())}
    return row


def _own_vector(node: Node, step: int) -> tuple[torch.Tensor, float] | None:
    idx = node.batch(step)
    if idx is None:
        return None
    return node.gradient(idx)


def _byzantine_vector(node: Node, channel: Channel, step: int) -> torch.Tensor | None:
    """An omniscient Byzantine rank's vector: the attack on the honest vectors that arrived."""
    honest_peers = {r for r in node.honest if r != node.rank}
    frames, _ = channel.collect(step, Kind.GRADIENT, honest_peers, node.config.step_timeout)
    rows = [frames[r].payload for r in node.honest if r in frames]
    rows = [v for v in rows if bool(torch.isfinite(v).all())]  # a diverged run: nothing to attack
    if not rows:
        return None
    return node.byzantine_vector(torch.stack(rows))


# -- parameter server ----------------------------------------------------------------------------
def run_server(node: Node, start: int, report: Report) -> Membership:
    """Rank 0: serve steps ``start + 1 .. config.steps``; returns who crashed."""
    workers = [r for r in range(node.world) if r != node.rank]
    channel = Channel(workers, node.d)
    members = Membership()
    try:
        for step in range(start + 1, node.config.steps + 1):
            live = [r for r in workers if r not in members.crashed]
            params = flatten_params(node.model)
            for rank in live:
                channel.send(rank, step, Kind.PARAMS, params)
            t0 = time.perf_counter()
            own = _own_vector(node, step)
            if node.gradient_attack and own is not None:
                for rank in node.byzantine:
                    channel.send(rank, step, Kind.GRADIENT, own[0], own[1])
            t1 = time.perf_counter()
            frames, problems = channel.collect(
                step, Kind.GRADIENT, set(live), node.config.step_timeout
            )
            waited = time.perf_counter() - t1
            problems.update({r: members.crashed[r] for r in members.crashed})
            members.note(problems)
            try:
                row = _aggregate_step(node, step, own, frames, problems)
            except TrainingDivergedError:
                report(step, {"step": step, "diverged": True})
                break
            row["crashed"] = sorted(members.crashed)
            row["compute_ms"], row["wait_ms"] = 1e3 * (t1 - t0), 1e3 * waited
            report(step, row)
    finally:
        for rank in workers:
            if rank not in members.crashed:
                channel.send(rank, node.config.steps + 1, Kind.STOP)
        channel.flush(timeout=10.0)
    return members


def run_worker(node: Node, start: int) -> None:
    """Any rank but 0: compute (or forge) a vector per step until the server says stop."""
    forger = node.is_byzantine and node.gradient_attack
    # An omniscient Byzantine rank also hears the honest workers (and the server's own vector).
    peers = [0, *(r for r in node.honest if r != 0)] if forger else [0]
    channel = Channel(peers, node.d)
    last = start
    while True:
        frame = channel.latest(0, last, node.config.worker_timeout)
        if frame is None:
            why = channel.inbox[0].reason or f"nothing for {node.config.worker_timeout} s"
            raise DistributedRunError(
                f"rank {node.rank}: no parameters from the server (rank 0): {why}. The server "
                "crashed or hung; raise worker_timeout if it is only slow."
            )
        if frame.kind == Kind.STOP:
            break
        step = last = frame.step
        if node.fault is not None:
            node.fault.before_step(step)
        node.set_params(frame.payload)
        if forger:
            node.batch(step)  # keep the batch generator in step with the others
            vector = _byzantine_vector(node, channel, step)
            if vector is None:
                continue
            loss = float("nan")
        else:
            vector, loss = _own_vector(node, step)
            for rank in node.byzantine if node.gradient_attack else []:
                channel.send(rank, step, Kind.GRADIENT, vector, loss)
        channel.send(0, step, Kind.GRADIENT, node.wrong_size(vector, step), loss)
    channel.flush(timeout=10.0)


# -- decentralized -----------------------------------------------------------------------------
def run_decentralized(node: Node, start: int, report: Report) -> Membership:
    """Every rank: exchange vectors with every other rank and aggregate them itself."""
    peers = [r for r in range(node.world) if r != node.rank]
    channel = Channel(peers, node.d)
    members = Membership()
    forger = node.is_byzantine and node.gradient_attack
    for step in range(start + 1, node.config.steps + 1):
        live = [r for r in peers if r not in members.crashed]
        if node.fault is not None:
            node.fault.before_step(step)
        if forger:
            node.batch(step)
            vector = _byzantine_vector(node, channel, step)
            if vector is not None:
                for rank in live:
                    channel.send(
                        rank, step, Kind.GRADIENT, node.wrong_size(vector, step), float("nan")
                    )
            continue
        t0 = time.perf_counter()
        own = _own_vector(node, step)
        assert own is not None
        t1 = time.perf_counter()
        for rank in live:
            channel.send(rank, step, Kind.GRADIENT, node.wrong_size(own[0], step), own[1])
        frames, problems = channel.collect(step, Kind.GRADIENT, set(live), node.config.step_timeout)
        waited = time.perf_counter() - t1
        problems.update({r: members.crashed[r] for r in members.crashed})
        members.note(problems)
        try:
            row = _aggregate_step(node, step, own, frames, problems)
        except TrainingDivergedError:
            report(step, {"step": step, "diverged": True})
            break
        row["crashed"] = sorted(members.crashed)
        row["compute_ms"], row["wait_ms"] = 1e3 * (t1 - t0), 1e3 * waited
        report(step, row)
    channel.flush(timeout=10.0)
    return members


def check_rule(node: Node) -> None:
    """Fail before any traffic when the rule cannot tolerate f among the run's workers."""
    try:
        node.rule.check(node.world, node.f)
    except ByzanceError as err:
        raise DistributedRunError(f"{node.world} processes: {err}") from None
