"""The UDP data plane of a distributed run (``transport = "udp"``).

Gradients travel as authenticated datagrams (:mod:`byzance.distributed.udp`); the
control plane stays on torch.distributed: who is in the run, the parameters,
and, per step, a small SENT frame by which each worker says it has handed all
its datagrams to the network (with its loss and its sender's counts). The
receiver then waits only ``udp_grace`` seconds more for datagrams in flight, so
a lost datagram costs a missing coordinate, never a retransmission or a long
deadline. A worker whose SENT frame never comes (it crashed, or hangs) is
waited for until ``step_timeout``, as on gloo.

Keys: every rank reads the key file (or the environment variable) named by
``udp_keys``. In the parameter-server topology only rank 0 needs every key; give
each worker machine a file with its own key alone, so that a Byzantine worker
can lie but cannot speak for another worker. Decentralized, every node checks
every sender, so every node holds every key: a Byzantine node that has them
could forge another's datagrams (pairwise keys would be needed; not done).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from byzance.distributed.udp import LossModel, UdpReceiver, UdpSender, load_keys, suggested_window
from byzance.runs.config import ConfigError, RunConfig
from byzance.sim.core import stream_seed


def keys_from_config(spec: str) -> dict[int, bytes]:
    """``"path/keys.json"`` or ``"env:VARIABLE"`` -> worker id -> key."""
    if spec.startswith("env:"):
        return load_keys(env=spec[4:])
    return load_keys(file=spec)


@dataclass(frozen=True)
class Received:
    """One step's vectors over UDP: values (k, d), present (k, d), the workers' ids, stats row."""

    workers: tuple[int, ...]
    values: torch.Tensor
    present: torch.Tensor
    stats: dict[str, Any]


class UdpLink:
    """This rank's UDP sender and (when it aggregates) receiver, addresses exchanged at start.

    Args:
        config: the run's config (udp_* keys).
        rank: this rank; receives: whether this rank aggregates (needs a receiver);
        senders: the ranks whose datagrams it accepts; d: gradient length.
        host: the address other ranks reach this one at (loopback on one machine).
    """

    def __init__(
        self,
        config: RunConfig,
        rank: int,
        *,
        receives: bool,
        senders: list[int],
        d: int,
        host: str,
    ) -> None:
        keys = keys_from_config(config.udp_keys)
        missing = [r for r in [rank, *(senders if receives else [])] if r not in keys]
        if missing:
            raise ConfigError(f"udp_keys has no key for rank(s) {missing}; every rank needs one.")
        bind_host = "127.0.0.1" if host in ("127.0.0.1", "localhost") else "0.0.0.0"
        # Every rank is alive at the start: rank 0 draws the run's session (datagrams of
        # an earlier run are rejected), then one all-gather tells each rank where the
        # others listen and how much their sockets buffer.
        drawn = [secrets.randbits(31)]
        dist.broadcast_object_list(drawn, src=0)
        self.session = drawn[0]
        self.receiver = None
        if receives:
            self.receiver = UdpReceiver(
                {r: keys[r] for r in senders},
                d,
                bind=(bind_host, 0),
                session=self.session,
                first_step=1,
            )
        mine = {
            "address": (host, self.receiver.address[1]) if self.receiver is not None else None,
            "rcvbuf": self.receiver.rcvbuf_granted if self.receiver is not None else None,
        }
        everyone: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, mine)
        self.addresses = {r: tuple(e["address"]) for r, e in enumerate(everyone) if e["address"]}
        buffers = [e["rcvbuf"] for e in everyone if e["rcvbuf"]]
        window = (
            suggested_window(
                min(buffers),
                max(len(senders), dist.get_world_size() - 1),
                config.udp_datagram_bytes,
            )
            if buffers
            else None
        )
        self.sender = UdpSender(
            rank,
            keys[rank],
            session=self.session,
            datagram_bytes=config.udp_datagram_bytes,
            loss=LossModel(**config.udp_loss, seed=stream_seed(config.seed, "udp_loss") + rank),
            window=window,
            bind=(bind_host, 0),
        )
        self.seen_before = 0  # datagrams the receiving thread had read at the last collect

    def send(self, step: int, vector: torch.Tensor, to: list[int]) -> list[float]:
        """Send ``vector`` (d,) for ``step`` to the ranks ``to``.

        Returns [datagrams handed to the socket per destination, dropped, duplicated].
        """
        dests = [self.addresses[r] for r in to if r in self.addresses]
        stats = self.sender.send(step, vector, dests)
        per_destination = stats.sent / max(len(dests), 1)
        return [per_destination, float(stats.dropped), float(stats.duplicated)]

    def collect(
        self,
        step: int,
        workers: list[int],
        grace: float,
        expected: float,
        *,
        device: torch.device | str = "cpu",
    ) -> Received:
        """The datagrams of ``step`` from ``workers`` (in this order).

        Every worker has said it sent ``expected`` datagrams in all to this rank;
        they may still be in the socket's buffer or on the wire. Wait until the
        receiving thread has read that many, or until it has read nothing new for
        ``grace`` seconds (the rest was lost), then take the step. The receiver's
        buffers are host memory; the step's values and mask are copied to ``device``.
        """
        assert self.receiver is not None
        quiet_since, seen = time.monotonic(), self.receiver.datagrams_seen
        while self.receiver.datagrams_seen - self.seen_before < expected:
            time.sleep(2e-4)
            now_seen = self.receiver.datagrams_seen
            if now_seen != seen:
                quiet_since, seen = time.monotonic(), now_seen
            elif time.monotonic() - quiet_since >= grace:
                break
        got = self.receiver.collect(step, timeout=0.0, workers=workers)
        self.seen_before = self.receiver.datagrams_seen
        s = got.stats
        row = {
            "datagrams_accepted": s.datagrams_accepted,
            "datagrams_rejected": dict(s.rejected),
            "coordinates_missing": s.coordinates_missing,
            "udp_crashed": list(s.crashed),
        }
        return Received(got.workers, got.values.to(device), got.present.to(device), row)

    def close(self) -> None:
        self.sender.close()
        if self.receiver is not None:
            self.receiver.close()
