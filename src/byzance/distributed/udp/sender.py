"""The sending side: one worker's gradients to one or more receivers, over UDP."""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from byzance.distributed.udp.datagram import LOOPBACK_DATAGRAM, encode, parse_ack
from byzance.distributed.udp.keys import check_key, worker_id
from byzance.errors import InvalidParameterError
from byzance.runs.loss_model import LossModel

Address = tuple[str, int]

DEFAULT_SNDBUF = 4 << 20
SKB_OVERHEAD = 1024  # kernel bookkeeping per datagram counted against SO_RCVBUF (approx.)


def suggested_window(
    rcvbuf_granted: int, senders: int, datagram_bytes: int = LOOPBACK_DATAGRAM
) -> int:
    """Datagrams each of ``senders`` may keep in flight without overflowing the receiver's buffer.

    ``rcvbuf_granted`` is :attr:`UdpReceiver.rcvbuf_granted` (what the kernel
    granted). Half of it is shared out: the kernel's accounting per datagram
    (skb truesize) exceeds its size, and a sender that gave up waiting for an
    acknowledgement may have a datagram more in flight.
    """
    return max(1, rcvbuf_granted // (2 * senders * (datagram_bytes + SKB_OVERHEAD)))


@dataclass(frozen=True)
class SendStats:
    """What one :meth:`UdpSender.send` did.

    Attributes:
        datagrams: datagrams the gradient was split into (per destination).
        sent: datagrams handed to the socket, all destinations together
            (duplicates included).
        dropped: datagrams the loss model dropped, all destinations together.
        duplicated: extra copies the loss model sent.
        bytes_sent: bytes handed to the socket.
        seconds: wall time of the call.
    """

    datagrams: int
    sent: int
    dropped: int
    duplicated: int
    bytes_sent: int
    seconds: float


class UdpSender:
    """Sends a worker's flattened gradient, step by step, as authenticated datagrams.

    Args:
        worker: this worker's id (in the header; selects the key on the receiver).
        key: this worker's HMAC key, at least 16 bytes (see
            :mod:`byzance.distributed.udp.keys`; a shorter one is refused).
        session: the run's id; receivers reject datagrams of another session.
        datagram_bytes: largest datagram (see :mod:`byzance.distributed.udp.datagram`).
        loss: injected loss (experiments, tests); None sends everything once, in order.
        rate_bytes_per_s: pace this sender to about this many bytes per second
            (token bucket with a burst of ``burst_bytes``); None: as fast as the
            socket takes them. UDP has no flow control: a receiver whose socket
            buffer is full drops what arrives, so n senders to one receiver
            should share its drain rate.
        burst_bytes: bytes sent back to back before pacing waits.
        window: flow control: at most this many datagrams per destination sent
            and not yet acknowledged by the receiver (see :func:`suggested_window`);
            None: fire and forget, as AggregaThor. Waiting for an acknowledgement
            gives up after ``ack_timeout`` s and counts one datagram as lost, so a
            dead receiver slows a sender down but never blocks it.
        ack_timeout: seconds to wait for an acknowledgement when the window is full.
        sndbuf: SO_SNDBUF to ask for.
        bind: local address (port 0: any).

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        worker: int,
        key: bytes,
        *,
        session: int = 0,
        datagram_bytes: int = LOOPBACK_DATAGRAM,
        loss: LossModel | None = None,
        rate_bytes_per_s: float | None = None,
        burst_bytes: int = 256 << 10,
        window: int | None = None,
        ack_timeout: float = 0.25,
        sndbuf: int = DEFAULT_SNDBUF,
        bind: Address = ("127.0.0.1", 0),
    ) -> None:
        worker = worker_id(worker, "UdpSender")
        key = check_key(worker, key, "UdpSender")
        if rate_bytes_per_s is not None and rate_bytes_per_s <= 0:
            raise InvalidParameterError(
                f"rate_bytes_per_s must be > 0 (or None: unpaced); got {rate_bytes_per_s}."
            )
        self.worker = worker
        self.session = session
        self.datagram_bytes = datagram_bytes
        self.loss = loss or LossModel()
        self.rate = rate_bytes_per_s
        self.burst = burst_bytes
        if window is not None and window < 1:
            raise InvalidParameterError(
                f"window must be >= 1 (or None: no flow control); got {window}."
            )
        self.window = window
        self.ack_timeout = ack_timeout
        self.ack_timeouts = 0  # acknowledgements given up on, over the sender's life
        self._key = key
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self._sock.bind(bind)

    def send(self, step: int, grad: torch.Tensor, dest: Address | Sequence[Address]) -> SendStats:
        """Send ``grad`` (any shape; flattened to d float32 coordinates) for ``step``.

        ``dest`` is one (host, port) or a list of them (decentralized: every
        node). Returns when the last datagram is handed to the socket (delays
        of the loss model included); delivery is not confirmed.
        """
        start = time.perf_counter()
        dests = _destinations(dest)
        datagrams = encode(
            grad,
            worker=self.worker,
            step=step,
            key=self._key,
            session=self.session,
            datagram_bytes=self.datagram_bytes,
        )
        sent = dropped = duplicated = nbytes = 0
        paced_from = time.perf_counter()
        for node, addr in enumerate(dests):
            # Each destination gets its own draw: losses on different links are independent.
            plan = self.loss.apply(datagrams, worker=self.worker, step=step * 65_537 + node)
            distinct = len({id(d) for _, d in plan})
            dropped += len(datagrams) - distinct
            duplicated += len(plan) - distinct
            peer = (socket.gethostbyname(addr[0]), addr[1])
            acked = 0
            t0 = time.perf_counter()
            for in_flight, (delay, datagram) in enumerate(plan):
                if delay:
                    wait = t0 + delay - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                if self.window is not None:
                    while in_flight - acked >= self.window:
                        acked = self._await_ack(step, peer, acked)
                nbytes += self._sock.sendmsg(datagram, (), 0, addr)
                sent += 1
                if self.rate is not None:
                    ahead = (nbytes - self.burst) / self.rate - (time.perf_counter() - paced_from)
                    if ahead > 0:
                        time.sleep(ahead)
        return SendStats(
            datagrams=len(datagrams),
            sent=sent,
            dropped=dropped,
            duplicated=duplicated,
            bytes_sent=nbytes,
            seconds=time.perf_counter() - start,
        )

    def _await_ack(self, step: int, peer: Address, acked: int) -> int:
        """Datagrams of ``step`` acknowledged by ``peer``, waiting up to ack_timeout for more."""
        deadline = time.monotonic() + self.ack_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.ack_timeouts += 1
                return acked + 1  # presumed lost: let one more datagram go
            self._sock.settimeout(remaining)
            try:
                data, source = self._sock.recvfrom(64)
            except (TimeoutError, ConnectionError):  # ConnectionError: an ICMP error came back
                continue
            finally:
                self._sock.settimeout(None)
            ack = parse_ack(data)
            if ack is None or source[:2] != peer:
                continue
            worker, ack_step, arrivals = ack
            if worker == self.worker and ack_step == step and arrivals > acked:
                return arrivals

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    def __enter__(self) -> UdpSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _destinations(dest: Address | Sequence[Address]) -> list[Address]:
    if isinstance(dest, tuple) and len(dest) == 2 and isinstance(dest[0], str):
        return [dest]  # type: ignore[list-item]
    dests = list(dest)  # type: ignore[arg-type]
    if not dests or not all(
        isinstance(a, tuple) and len(a) == 2 and isinstance(a[0], str) for a in dests
    ):
        raise InvalidParameterError(
            f"dest must be a (host, port) tuple or a non-empty list of them; got {dest!r}."
        )
    return dests
