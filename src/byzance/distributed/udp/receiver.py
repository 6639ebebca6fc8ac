"""The receiving side: collect every worker's gradient for a step until complete or a deadline.

The receiver owns one UDP socket and a background thread that drains it:
each datagram is parsed, authenticated (HMAC-SHA256 under the sending
worker's key, compared in constant time), checked against the steps it may
accept, and copied straight into a preallocated buffer. :meth:`UdpReceiver.collect`
waits until every expected worker's gradient for the step is complete, or
the deadline passes, and returns the values with a mask of what arrived.

Memory is bounded by construction: the buffer holds ``window`` steps of
(n, d) float32 values and (n, d) presence flags, allocated once; a datagram
for a step outside ``[next, next + window)`` is rejected, never queued;
nothing else grows with the traffic (a few counters per step and worker).
The kernel's socket buffer (SO_RCVBUF, capped by ``net.core.rmem_max``,
doubled by Linux for bookkeeping) holds what the thread has not read yet.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from byzance.distributed.udp.datagram import (
    HEADER,
    MAX_UDP_PAYLOAD,
    chunk_bounds,
    pack_ack,
    parse_header,
    verify,
)
from byzance.distributed.udp.keys import check_keys
from byzance.errors import InvalidParameterError

Address = tuple[str, int]

#: Why a datagram was rejected (the keys of :attr:`StepStats.rejected`).
REASONS = (
    "malformed",  # too short, bad magic/version, sizes inconsistent, wrong d or chunking
    "unknown_worker",  # no key for the worker id in the header
    "bad_tag",  # HMAC does not match: forged, corrupted, or signed with another key
    "wrong_session",  # authentic, but from another run
    "stale",  # for a step already collected or passed (late or replayed)
    "future",  # for a step beyond the receive window
    "duplicate",  # this chunk of this worker and step already arrived
)

DEFAULT_RCVBUF = 4 << 20
DEFAULT_MAX_BUFFER_BYTES = 4 << 30


@dataclass(frozen=True)
class StepStats:
    """What the receiver saw for one collected step.

    Attributes:
        step: the step.
        datagrams_accepted: datagrams of this step accepted (all workers).
        rejected: datagrams rejected since the previous :meth:`UdpReceiver.collect`
            returned, by reason (:data:`REASONS`), whatever step they claimed.
        coordinates_missing: coordinates not received, over the expected workers.
        complete: expected workers whose whole gradient arrived.
        crashed: expected workers of which nothing arrived (treat as crashed).
        waited_s: seconds :meth:`UdpReceiver.collect` waited.
        timed_out: whether the deadline passed before every expected worker was complete.
    """

    step: int
    datagrams_accepted: int
    rejected: dict[str, int]
    coordinates_missing: int
    complete: tuple[int, ...]
    crashed: tuple[int, ...]
    waited_s: float
    timed_out: bool

    @property
    def datagrams_rejected(self) -> int:
        """All rejected datagrams, whatever the reason."""
        return sum(self.rejected.values())


@dataclass(frozen=True)
class Collected:
    """One step's gradients as received.

    Attributes:
        step: the step.
        workers: the worker id of each row.
        values: shape (k, d) float32; 0 where a coordinate did not arrive.
        present: shape (k, d) bool; True where it did. Pass both to
            :func:`byzance.aggregators.aggregate_with_missing`.
        stats: what the receiver saw.
    """

    step: int
    workers: tuple[int, ...]
    values: torch.Tensor = field(repr=False)
    present: torch.Tensor = field(repr=False)
    stats: StepStats


class UdpReceiver:
    """Receives the gradients of the workers holding ``keys``, for a window of steps.

    Args:
        keys: worker id -> HMAC key, for every worker whose datagrams are accepted;
            row i of a collected step is worker ``sorted(keys)[i]``. Worker ids are
            integers >= 0; keys are at least 16 bytes and distinct, or a
            :class:`~byzance.distributed.udp.KeyConfigError` says what is wrong.
        dim: d, coordinates in each gradient.
        bind: local (host, port); port 0 picks a free one (see :attr:`address`).
        session: the run's id; datagrams of another session are rejected.
        window: steps buffered at once: datagrams for steps ``next .. next +
            window - 1`` are accepted, where ``next`` is the lowest step not yet
            collected. 2 lets fast workers send step t + 1 while t is collected.
        first_step: the first step expected (e.g. after resuming).
        rcvbuf: SO_RCVBUF to ask for; the kernel caps it at net.core.rmem_max
            (see :attr:`rcvbuf_granted`).
        max_buffer_bytes: refuse a configuration whose buffer would exceed this.
        acks: answer every authentic datagram of a step in the window with an
            acknowledgement (flow control for senders with a ``window``; see
            :mod:`~byzance.distributed.udp.datagram`).

    The receiving thread starts at once; use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        keys: Mapping[int, bytes],
        dim: int,
        *,
        bind: Address = ("127.0.0.1", 0),
        session: int = 0,
        window: int = 2,
        first_step: int = 0,
        rcvbuf: int = DEFAULT_RCVBUF,
        max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
        acks: bool = True,
    ) -> None:
        keys = check_keys(keys, "UdpReceiver keys")
        if dim < 1 or window < 1:
            raise InvalidParameterError(
                f"dim and window must be >= 1; got dim={dim}, window={window}."
            )
        self.workers: tuple[int, ...] = tuple(sorted(keys))
        self.dim = dim
        self.session = session
        self.window = window
        n = len(self.workers)
        need = window * n * dim * 5 + MAX_UDP_PAYLOAD + 1
        if need > max_buffer_bytes:
            raise InvalidParameterError(
                f"UdpReceiver: window={window} steps x n={n} workers x d={dim} coordinates needs "
                f"{need / 2**20:.0f} MiB of buffer, over max_buffer_bytes={max_buffer_bytes}; "
                "lower the window or raise the limit."
            )
        self._keys = dict(keys)
        self._row = {w: i for i, w in enumerate(self.workers)}
        self._values = torch.zeros(window, n, dim, dtype=torch.float32)
        self._present = torch.zeros(window, n, dim, dtype=torch.bool)
        self._values_np = self._values.numpy()
        self._present_np = self._present.numpy()
        self._slot_step = [-1] * window
        self._declared = np.zeros((window, n), dtype=np.int64)  # chunk count of each gradient
        self._received = np.zeros((window, n), dtype=np.int64)  # chunks of it received
        self._arrivals = np.zeros((window, n), dtype=np.int64)  # authentic ones, duplicates too
        self._coords = np.zeros((window, n), dtype=np.int64)  # coordinates received
        self._accepted = [0] * window
        self._rejected = dict.fromkeys(REASONS, 0)
        self._next = first_step
        self._acks = acks
        self._seen = 0
        # One byte more than the largest datagram: a longer one is seen as too long.
        self._scratch = bytearray(MAX_UDP_PAYLOAD + 1)
        self._view = memoryview(self._scratch)
        self._cond = threading.Condition()
        self._closed = False
        self._failure: BaseException | None = None
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self._sock.bind(bind)
        self._sock.settimeout(0.05)
        self.rcvbuf_granted: int = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self._thread = threading.Thread(target=self._run, name="byzance-udp-receiver", daemon=True)
        self._thread.start()

    # -- public -----------------------------------------------------------------
    @property
    def address(self) -> Address:
        """The (host, port) senders should send to."""
        host, port = self._sock.getsockname()[:2]
        return host, port

    @property
    def buffer_bytes(self) -> int:
        """Bytes the receiver holds for datagrams: fixed at construction, whatever arrives."""
        return (
            self._values.nbytes
            + self._present.nbytes
            + self._declared.nbytes
            + self._received.nbytes
            + self._arrivals.nbytes
            + self._coords.nbytes
            + len(self._scratch)
        )

    @property
    def datagrams_seen(self) -> int:
        """Datagrams read from the socket so far, accepted or rejected (all steps)."""
        return self._seen

    def collect(
        self, step: int, *, timeout: float, workers: Sequence[int] | None = None
    ) -> Collected:
        """Wait for ``step``'s gradients until every expected worker's is complete or ``timeout`` s pass.

        Args:
            step: the step to collect; at least the last collected step + 1.
                Steps skipped over are abandoned (their datagrams become stale).
            timeout: seconds to wait at most.
            workers: the workers expected (their rows, in this order, are
                returned); default every worker with a key.

        Returns:
            A :class:`Collected`. After it returns, datagrams of ``step`` are stale.
        """
        rows = self._rows(workers)
        started = time.monotonic()
        deadline = started + timeout
        with self._cond:
            if step < self._next:
                raise InvalidParameterError(
                    f"step {step} was already collected or passed; the next step this "
                    f"receiver can collect is {self._next}."
                )
            self._next = step
            slot = step % self.window
            if self._slot_step[slot] != step:
                self._reset(slot, step)
            timed_out = False
            while not self._complete(slot, rows):
                if self._failure is not None:
                    raise RuntimeError("the UDP receiving thread failed") from self._failure
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    timed_out = True
                    break
                self._cond.wait(remaining)
            if rows == list(range(len(self.workers))):
                present = self._present[slot].clone()
                values = torch.where(present, self._values[slot], 0.0)
            else:
                index = torch.tensor(rows, dtype=torch.long)
                present = self._present[slot].index_select(0, index)
                values = torch.where(present, self._values[slot].index_select(0, index), 0.0)
            have = self._coords[slot, rows].tolist()
            accepted = self._accepted[slot]
            self._slot_step[slot] = -1
            self._next = step + 1
            rejected = dict(self._rejected)
            self._rejected = dict.fromkeys(REASONS, 0)
        ids = tuple(self.workers[r] for r in rows)
        stats = StepStats(
            step=step,
            datagrams_accepted=accepted,
            rejected=rejected,
            coordinates_missing=len(rows) * self.dim - sum(have),
            complete=tuple(w for w, h in zip(ids, have, strict=True) if h == self.dim),
            crashed=tuple(w for w, h in zip(ids, have, strict=True) if h == 0),
            waited_s=time.monotonic() - started,
            timed_out=timed_out,
        )
        return Collected(step=step, workers=ids, values=values, present=present, stats=stats)

    def close(self) -> None:
        """Stop the receiving thread and close the socket."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        self._sock.close()

    def __enter__(self) -> UdpReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- receiving thread ---------------------------------------------------------
    def _run(self) -> None:
        try:
            self._receive_forever()
        except BaseException as err:  # a bug must surface in collect, not hang it
            with self._cond:
                self._failure = err
                self._cond.notify_all()

    def _receive_forever(self) -> None:
        while not self._closed:
            try:
                nbytes, sender = self._sock.recvfrom_into(self._scratch)
            except TimeoutError:
                continue
            except OSError:
                if self._closed:
                    return
                continue  # e.g. an ICMP error for an acknowledgement: not this socket's fault
            ack = self._handle(nbytes)
            if ack is not None and self._acks:
                # Best effort: the sender may be gone or its buffer full.
                with contextlib.suppress(OSError):
                    self._sock.sendto(ack, sender)
            self._seen += 1  # only this thread writes it

    def _handle(self, nbytes: int) -> bytes | None:
        """Check and store one datagram; the acknowledgement to send back, if any."""
        view = self._view
        header = parse_header(view, nbytes)
        if header is None:
            return self._reject("malformed")
        key = self._keys.get(header.worker)
        if key is None:
            return self._reject("unknown_worker")
        if not verify(view, nbytes, key):
            return self._reject("bad_tag")
        if header.session != self.session:
            return self._reject("wrong_session")
        if header.dim != self.dim:
            return self._reject("malformed")
        step = header.step
        with self._cond:
            if step < self._next:
                self._rejected["stale"] += 1
                return None
            if step >= self._next + self.window:
                self._rejected["future"] += 1
                return None
            slot = step % self.window
            if self._slot_step[slot] != step:
                self._reset(slot, step)
            row = self._row[header.worker]
            self._arrivals[slot, row] += 1
            ack = pack_ack(header.worker, step, int(self._arrivals[slot, row]))
            declared = self._declared[slot, row]
            if declared == 0:
                self._declared[slot, row] = header.count
            elif declared != header.count:  # a second chunking of the same gradient
                self._rejected["malformed"] += 1
                return ack
            start, stop = chunk_bounds(self.dim, header.count, header.index)
            if self._present_np[slot, row, start]:
                self._rejected["duplicate"] += 1
                return ack
            self._values_np[slot, row, start:stop] = np.frombuffer(
                self._scratch, dtype="<f4", count=header.length, offset=HEADER.size
            )
            self._present_np[slot, row, start:stop] = True
            self._received[slot, row] += 1
            self._coords[slot, row] += header.length
            self._accepted[slot] += 1
            if self._received[slot, row] == header.count:
                self._cond.notify_all()
        return ack

    # -- helpers (called with the lock held) -------------------------------------------
    def _reject(self, reason: str) -> None:
        with self._cond:
            self._rejected[reason] += 1
        return None

    def _reset(self, slot: int, step: int) -> None:
        self._present[slot].zero_()
        self._declared[slot] = 0
        self._received[slot] = 0
        self._arrivals[slot] = 0
        self._coords[slot] = 0
        self._accepted[slot] = 0
        self._slot_step[slot] = step

    def _complete(self, slot: int, rows: list[int]) -> bool:
        declared = self._declared[slot, rows]
        return bool((declared > 0).all() and (self._received[slot, rows] == declared).all())

    def _rows(self, workers: Sequence[int] | None) -> list[int]:
        if workers is None:
            return list(range(len(self.workers)))
        unknown = [w for w in workers if w not in self._row]
        if unknown:
            raise InvalidParameterError(
                f"workers {unknown} have no key in this receiver; it knows {list(self.workers)}."
            )
        return [self._row[w] for w in workers]
