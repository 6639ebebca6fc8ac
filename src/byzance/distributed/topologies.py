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

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from byzance.distributed.channel import Channel, Kind
from byzance.distributed.node import Node, to_host
from byzance.distributed.udp_link import UdpLink
from byzance.errors import ToleranceError
from byzance.sim import TrainingDivergedError, flatten_params, step_stats

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


@dataclass(frozen=True)
class Arrival:
    """A vector that reached the aggregating rank: (d,), its sender's loss, and which
    coordinates arrived ((d,) bool; None: all of them)."""

    vector: torch.Tensor
    loss: float
    present: torch.Tensor | None = None


def send_vector(
    node: Node,
    channel: Channel,
    link: UdpLink | None,
    step: int,
    vector: torch.Tensor,
    loss: float,
    to: list[int],
) -> None:
    """Send this rank's vector of ``step`` to the ranks ``to``, on the run's transport.

    The vector leaves the device once (a host copy), whatever the number of peers.
    """
    vector = to_host(node.wrong_size(vector, step))
    if link is None:
        for rank in to:
            channel.send(rank, step, Kind.GRADIENT, vector, loss)
        return
    counts = link.send(step, vector, to)
    note = torch.tensor([loss, *counts])
    for rank in to:
        channel.send(rank, step, Kind.SENT, note)


def receive_vectors(
    node: Node, channel: Channel, link: UdpLink | None, step: int, expected: set[int]
) -> tuple[dict[int, Arrival], dict[int, str], dict[str, Any]]:
    """The vectors of ``step`` from ``expected`` ranks: arrivals, problems by rank, transport stats."""
    timeout = node.config.step_timeout
    if link is None:
        frames, problems = channel.collect(step, Kind.GRADIENT, expected, timeout)
        arrivals = {r: Arrival(node.to_device(f.payload), f.value) for r, f in frames.items()}
        return arrivals, problems, {}
    notes, problems = channel.collect(step, Kind.SENT, expected, timeout)
    sent = sum(float(n.payload[1]) for n in notes.values())
    got = link.collect(step, sorted(notes), node.config.udp_grace, sent, device=node.device)
    arrivals = {}
    for row, rank in enumerate(got.workers):
        present = got.present[row]
        if not bool(present.any()):
            problems[rank] = "lost: none of its datagrams arrived"
            continue
        loss = float(notes[rank].payload[0])
        arrivals[rank] = Arrival(got.values[row], loss, None if bool(present.all()) else present)
    stats = dict(got.stats)
    stats["datagrams_sent"] = int(sent)
    stats["datagrams_dropped"] = int(sum(float(n.payload[2]) for n in notes.values()))
    return arrivals, problems, stats


def _gather_inputs(
    node: Node, arrivals: dict[int, Arrival]
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, list[int], list[float]]:
    """Arrivals in slot order: (m, d), present (m, d) or None, Byzantine mask (m,), ranks, losses."""
    ranks = [r for r in node.order if r in arrivals]
    inputs = torch.stack([arrivals[r].vector for r in ranks])
    present = None
    if any(arrivals[r].present is not None for r in ranks):
        present = torch.stack(
            [
                arrivals[r].present
                if arrivals[r].present is not None
                else torch.ones(node.d, dtype=torch.bool, device=inputs.device)
                for r in ranks
            ]
        )
    mask = torch.tensor(
        [r in node.byzantine for r in ranks], dtype=torch.bool, device=inputs.device
    )
    losses = [arrivals[r].loss for r in ranks if r not in node.byzantine]
    return inputs, present, mask, ranks, losses


def _aggregate_step(
    node: Node,
    step: int,
    arrivals: dict[int, Arrival],
    problems: dict[int, str],
    after_apply: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Aggregate what arrived and step the optimizer; returns the step's metric row."""
    inputs, present, byz_mask, ranks, losses = _gather_inputs(node, arrivals)
    honest = inputs[~byz_mask] if bool(byz_mask.any()) else inputs  # no copy when all honest
    honest_mean = honest.mean(dim=0)  # missing coordinates are 0 in ``inputs``: finite
    if not bool(torch.isfinite(honest_mean).all()):  # one pass: NaN/inf anywhere shows here
        raise TrainingDivergedError(f"step {step}: the honest gradients are not finite")
    try:
        node.rule.check(len(ranks), node.f)
    except ToleranceError as err:
        raise DistributedRunError(
            f"step {step}: only {len(ranks)} of {node.world} gradients arrived within "
            f"step_timeout = {node.config.step_timeout} s (missing: {problems}); {err}"
        ) from None
    start = time.perf_counter()
    aggregate = node.aggregate(inputs, present, ranks)
    seconds = time.perf_counter() - start
    node.apply(aggregate)
    if after_apply is not None:
        after_apply()  # e.g. send the new parameters before the bookkeeping below
    stats = step_stats(
        node.rule,
        node.f,
        torch.tensor(losses),
        honest,
        inputs,
        byz_mask,
        aggregate,
        seconds,
        honest_mean=honest_mean,
    )
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


def _let_forgers_hear(
    node: Node, channel: Channel, step: int, vector: torch.Tensor, loss: float
) -> None:
    """The omniscient adversary sees the network: an honest vector also goes to the
    Byzantine ranks that forge theirs from the honest ones (over gloo, whatever the
    transport of the gradients)."""
    if node.gradient_attack:
        host = to_host(vector)
        for rank in node.byzantine:
            channel.send(rank, step, Kind.GRADIENT, host, loss)


def _byzantine_vector(node: Node, channel: Channel, step: int) -> torch.Tensor:
    """An omniscient Byzantine rank's vector: the attack on the honest vectors that arrived."""
    honest_peers = {r for r in node.honest if r != node.rank}
    frames, _ = channel.collect(step, Kind.GRADIENT, honest_peers, node.config.step_timeout)
    rows = [node.to_device(frames[r].payload) for r in node.honest if r in frames]
    rows = [v for v in rows if bool(torch.isfinite(v).all())]
    if not rows:  # a diverged run (or no honest vector in time): nothing to attack, but
        # answer at once, so that the aggregator does not wait for this rank's timeout
        vector = torch.full((node.d,), float("nan"), device=node.device)
    else:
        vector = node.byzantine_vector(torch.stack(rows))
    node.forged(step)
    return vector


# -- parameter server ----------------------------------------------------------------------------
def _record(
    node: Node,
    step: int,
    arrivals: dict[int, Arrival],
    problems: dict[int, str],
    members: Membership,
    extra: dict[str, Any],
    report: Report,
    after_apply: Callable[[], None] | None = None,
) -> bool:
    """Aggregate, step and report one step; False when the run diverged (and must end)."""
    problems.update({r: members.crashed[r] for r in members.crashed})
    members.note(problems)
    try:
        row = _aggregate_step(node, step, arrivals, problems, after_apply)
    except TrainingDivergedError as err:
        report(step, {"step": step, "diverged": True, "reason": str(err)})
        return False
    row["crashed"] = sorted(members.crashed)
    report(step, {**row, **extra})
    return True


def _link(node: Node, receives: bool, senders: list[int]) -> UdpLink | None:
    if node.config.transport != "udp":
        return None
    host = os.environ.get("BYZANCE_UDP_HOST")
    if not host:  # one machine: loopback; several: this machine's address
        one_machine = os.environ.get("LOCAL_WORLD_SIZE") == os.environ.get("WORLD_SIZE")
        host = "127.0.0.1" if one_machine else socket.gethostbyname(socket.gethostname())
    return UdpLink(node.config, node.rank, receives=receives, senders=senders, d=node.d, host=host)


def run_server(node: Node, start: int, report: Report) -> Membership:
    """Rank 0: serve steps ``start + 1 .. config.steps``; returns who crashed."""
    workers = [r for r in range(node.world) if r != node.rank]
    channel = Channel(workers, node.d)
    link = _link(node, receives=True, senders=workers)
    members = Membership()
    try:

        def send_params(step: int) -> None:
            params = to_host(flatten_params(node.model))  # one host copy for every worker
            for rank in workers:
                if rank not in members.crashed:
                    channel.send(rank, step, Kind.PARAMS, params)

        send_params(start + 1)
        for step in range(start + 1, node.config.steps + 1):
            live = [r for r in workers if r not in members.crashed]
            if node.fault is not None:
                node.fault.before_step(step)
            t0 = time.perf_counter()
            own = _own_vector(node, step)
            assert own is not None  # rank 0 is honest
            _let_forgers_hear(node, channel, step, *own)
            t1 = time.perf_counter()
            arrivals, problems, extra = receive_vectors(node, channel, link, step, set(live))
            arrivals[node.rank] = Arrival(*own)
            extra.update(compute_ms=1e3 * (t1 - t0), wait_ms=1e3 * (time.perf_counter() - t1))
            # The next step's parameters leave as soon as they exist; the statistics,
            # evaluation and checkpoint of this step happen while the workers compute.
            following = (lambda s=step + 1: send_params(s)) if step < node.config.steps else None
            if not _record(node, step, arrivals, problems, members, extra, report, following):
                break
    finally:
        for rank in workers:
            if rank not in members.crashed:
                channel.send(rank, node.config.steps + 1, Kind.STOP)
        channel.flush(timeout=10.0)
        if link is not None:
            link.close()
    return members


def run_worker(node: Node, start: int) -> None:
    """Any rank but 0: compute (or forge) a vector per step until the server says stop."""
    forger = node.is_byzantine and node.gradient_attack
    # An omniscient Byzantine rank also hears the honest workers (and the server's own vector).
    peers = [0, *(r for r in node.honest if r != 0)] if forger else [0]
    channel = Channel(peers, node.d)
    link = _link(node, receives=False, senders=[])
    last = start
    while True:
        frame = channel.latest(0, last, node.config.worker_timeout)
        if frame is None:
            why = channel.reason.get(0) or f"nothing for {node.config.worker_timeout} s"
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
            loss = float("nan")
        else:
            vector, loss = _own_vector(node, step)
            _let_forgers_hear(node, channel, step, vector, loss)
        send_vector(node, channel, link, step, vector, loss, [0])
    channel.flush(timeout=10.0)
    if link is not None:
        link.close()


# -- decentralized -----------------------------------------------------------------------------
def run_decentralized(node: Node, start: int, report: Report) -> Membership:
    """Every rank: exchange vectors with every other rank and aggregate them itself."""
    peers = [r for r in range(node.world) if r != node.rank]
    channel = Channel(peers, node.d)
    forger = node.is_byzantine and node.gradient_attack
    link = _link(node, receives=not forger, senders=peers)
    members = Membership()
    for step in range(start + 1, node.config.steps + 1):
        live = [r for r in peers if r not in members.crashed]
        if node.fault is not None:
            node.fault.before_step(step)
        if forger:
            node.batch(step)
            vector = _byzantine_vector(node, channel, step)
            send_vector(node, channel, link, step, vector, float("nan"), live)
            continue
        t0 = time.perf_counter()
        own = _own_vector(node, step)
        assert own is not None
        t1 = time.perf_counter()
        if link is not None and node.gradient_attack:  # forgers listen on gloo, not on UDP
            _let_forgers_hear(node, channel, step, *own)
            live_aggregators = [r for r in live if r not in node.byzantine]
            send_vector(node, channel, link, step, *own, live_aggregators)
        else:
            send_vector(node, channel, link, step, *own, live)
        arrivals, problems, extra = receive_vectors(node, channel, link, step, set(live))
        arrivals[node.rank] = Arrival(*own)
        extra.update(compute_ms=1e3 * (t1 - t0), wait_ms=1e3 * (time.perf_counter() - t1))
        if not _record(node, step, arrivals, problems, members, extra, report):
            break
    channel.flush(timeout=10.0)
    if link is not None:
        link.close()
    return members
