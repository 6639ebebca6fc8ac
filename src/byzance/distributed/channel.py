"""Framed, timeout-bounded point-to-point messages between ranks over torch.distributed.

torch.distributed's collectives wait for every rank: one crashed or hung
process stalls them until the process group's timeout, and then the group is
unusable. byzance therefore moves vectors with point-to-point ``isend`` /
``irecv``: one receiving thread per peer waits on that peer's messages and
hands complete frames to the step loop, which waits for them against a
deadline; one sending thread per peer retires that peer's sends. A missing
peer costs at most the deadline and never blocks the others, and what a slow
peer may hold is bounded (a few frames each way).

Every message is a frame: a small float64 header, then (when the header
announces one) a float32 payload::

    header = [MAGIC, step, length, kind, value]

``length`` is the number of payload coordinates; ``value`` carries one scalar
(a worker's loss). The receiver checks the header before posting the payload's
buffer: a peer that announces a vector of the wrong size has its payload read
into a scratch buffer and discarded (a faulty message, not a crash); a peer
whose header is garbage, or announces more than ``max_length`` coordinates, is
marked faulty for good and never read again.

What gloo does not protect against: a process that bypasses this framing and
writes more bytes than the receiver posted aborts the receiver (gloo's size
check is an assertion). Byzantine ranks here lie in *content*, through this
protocol; a transport that parses and authenticates every byte is the UDP one.
"""

from __future__ import annotations

import contextlib
import math
import queue
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from enum import IntEnum

import torch
import torch.distributed as dist

MAGIC = 7.25e5
HEADER_SIZE = 5
TAG_HEADER, TAG_PAYLOAD = 11, 12
MAX_QUEUED = 3  # complete frames held per peer before the step loop reads them
MAX_OUTSTANDING = 8  # sends in flight per peer; beyond that the peer is skipped
MAX_EARLY = 4
SENT_NOTE_SIZE = 4  # loss, datagrams sent, dropped, duplicated  # frames kept per peer for a later step than the one being collected


class Kind(IntEnum):
    """What a frame carries."""

    GRADIENT = 1
    PARAMS = 2
    STOP = 3
    SENT = 4  # UDP transport: "my datagrams of this step are sent" (+ loss and counts)


@dataclass(frozen=True)
class Frame:
    """One received message: its sender, step, kind, scalar and payload (length,) or None."""

    src: int
    step: int
    kind: Kind
    value: float
    payload: torch.Tensor | None


def _short(err: Exception) -> str:
    """gloo's error without its source location: "Connection closed by peer [addr]:port"."""
    line = str(err).splitlines()[0]
    line = re.sub(r"^\[[^\]]*\.cc:\d+\]\s*", "", line)
    return line.split(". This is typically")[0][:200]


@dataclass(frozen=True)
class _PeerLost:
    src: int


class Channel:
    """Send frames to, and collect frames from, peers; nothing ever blocks past a deadline.

    Args:
        peers: ranks this process receives from (and usually sends to).
        length: the payload size every correct peer sends (d).
        max_length: announced sizes above this mark the peer faulty for good.
        group: the process group (default: the world).
    """

    def __init__(
        self,
        peers: list[int],
        length: int,
        *,
        max_length: int | None = None,
        group: dist.ProcessGroup | None = None,
    ) -> None:
        self.length = length
        self.max_length = max_length if max_length is not None else max(4 * length, 1 << 16)
        self.group = group
        self.status = dict.fromkeys(peers, "ok")  # "ok", "crashed" or "faulty"
        self.reason = dict.fromkeys(peers, "")
        self.arrivals: queue.Queue[Frame | _PeerLost] = queue.Queue()
        self.credits = {p: threading.Semaphore(MAX_QUEUED) for p in peers}
        self.early: dict[int, deque[Frame]] = {p: deque(maxlen=MAX_EARLY) for p in peers}
        self.outboxes: dict[int, queue.Queue] = {}
        for peer in peers:
            threading.Thread(target=self._receive_loop, args=(peer,), daemon=True).start()

    # -- receiving (one thread per peer) --------------------------------------------------------
    def _receive_loop(self, peer: int) -> None:
        while True:
            self.credits[peer].acquire()
            header = torch.empty(HEADER_SIZE, dtype=torch.float64)
            try:
                dist.irecv(header, peer, self.group, tag=TAG_HEADER).wait()
                magic, step, length, kind, value = header.tolist()
                if not self._valid(magic, step, length, kind):
                    self._lose(peer, "faulty", f"malformed header {header.tolist()}")
                    return
                payload = None
                if length:
                    payload = torch.empty(int(length), dtype=torch.float32)
                    dist.irecv(payload, peer, self.group, tag=TAG_PAYLOAD).wait()
            except RuntimeError as err:
                self._lose(peer, "crashed", _short(err))
                return
            self.arrivals.put(Frame(peer, int(step), Kind(int(kind)), float(value), payload))

    def _valid(self, magic: float, step: float, length: float, kind: float) -> bool:
        return (
            magic == MAGIC
            and kind in {k.value for k in Kind}
            and math.isfinite(step)
            and 0 <= length <= self.max_length
            and length == int(length)
        )

    def _lose(self, peer: int, status: str, reason: str) -> None:
        self.status[peer], self.reason[peer] = status, reason
        self.arrivals.put(_PeerLost(peer))

    def _next(self, timeout: float) -> list[Frame | _PeerLost]:
        """What arrived: wait up to ``timeout`` for the first item, then take all that is there."""
        items = []
        try:
            items.append(
                self.arrivals.get(timeout=max(timeout, 0.0))
                if timeout > 0
                else self.arrivals.get_nowait()
            )
            while True:
                items.append(self.arrivals.get_nowait())
        except queue.Empty:
            pass
        for item in items:
            if isinstance(item, Frame):
                self.credits[item.src].release()
        return items

    def collect(
        self,
        step: int,
        kind: Kind,
        expected: set[int],
        timeout: float,
    ) -> tuple[dict[int, Frame], dict[int, str]]:
        """Frames of ``kind`` for ``step`` from ``expected`` peers, until all came or ``timeout``.

        Frames for earlier steps (a slow peer catching up) are discarded, frames for
        later steps kept for later; a frame whose payload is not ``length`` long is
        a faulty message.

        Returns:
            The frames that arrived, by peer, and the peers that did not deliver a
            usable frame with the reason ("crashed: ...", "faulty: ...", "timeout").
        """
        deadline = time.monotonic() + timeout
        got: dict[int, Frame] = {}
        problems: dict[int, str] = {}
        waiting = set(expected)
        items: list[Frame | _PeerLost] = []
        for peer in waiting:
            items.extend(self.early[peer])
            self.early[peer].clear()
        stopped = False  # the server ended the run: nobody sends for this step any more
        while True:
            for item in items:
                if isinstance(item, _PeerLost):
                    continue
                stopped = stopped or item.kind == Kind.STOP
                if item.step > step and item.kind != Kind.STOP:
                    self.early[item.src].append(item)  # a peer ahead of us: keep it for later
                elif (item.src in waiting and item.step == step) or item.kind == Kind.STOP:
                    problem = self._check(item, kind)
                    if item.src in waiting:
                        if problem:
                            problems[item.src] = problem
                        else:
                            got[item.src] = item
                        waiting.discard(item.src)
            for peer in list(waiting):
                if self.status[peer] != "ok":
                    problems[peer] = f"{self.status[peer]}: {self.reason[peer]}"
                    waiting.discard(peer)
            remaining = deadline - time.monotonic()
            if not waiting or remaining <= 0 or stopped:
                break
            items = self._next(remaining)
        for peer in waiting:
            problems[peer] = "stopped" if stopped else "timeout"
        return got, problems

    def _check(self, frame: Frame, kind: Kind) -> str:
        if frame.kind == Kind.STOP:
            return "stopped"
        if frame.kind != kind:
            return f"faulty: sent {frame.kind.name} instead of {kind.name}"
        size = 0 if frame.payload is None else frame.payload.numel()
        expected = SENT_NOTE_SIZE if kind == Kind.SENT else self.length
        if size != expected:
            return f"faulty: sent {size} coordinates, expected {expected}"
        return ""

    def latest(self, src: int, after: int, timeout: float) -> Frame | None:
        """The newest PARAMS or STOP frame from ``src`` for a step after ``after``.

        Waits up to ``timeout`` seconds for one, then takes whatever newer frames
        are already there (a lagging worker jumps to the newest parameters).
        None when nothing came in time or ``src`` is gone.
        """
        deadline = time.monotonic() + timeout
        wanted = (Kind.PARAMS, Kind.STOP)
        best: Frame | None = None
        items: list[Frame | _PeerLost] = [f for f in self.early[src] if f.kind in wanted]
        kept = [f for f in self.early[src] if f.kind not in wanted]
        self.early[src].clear()
        self.early[src].extend(kept)
        while True:
            for item in items:
                if isinstance(item, _PeerLost):
                    continue
                if item.src != src or item.kind not in wanted:
                    self.early[item.src].append(item)  # someone else's: for a later collect
                elif item.step > after and (best is None or item.step >= best.step):
                    best = item
            if best is not None:
                items = self._next(0.0)
                if not items:
                    return best
                continue
            remaining = deadline - time.monotonic()
            if self.status[src] != "ok" or remaining <= 0:
                return None
            items = self._next(remaining)

    # -- sending (one thread per peer retires its sends) ----------------------------------------
    def send(
        self,
        dst: int,
        step: int,
        kind: Kind,
        payload: torch.Tensor | None = None,
        value: float = 0.0,
    ) -> bool:
        """Send one frame to ``dst`` without waiting; False if skipped (``dst`` is not reading)."""
        outbox = self.outboxes.get(dst)
        if outbox is None:
            outbox = self.outboxes[dst] = queue.Queue()
            threading.Thread(target=self._retire_loop, args=(outbox,), daemon=True).start()
        if outbox.unfinished_tasks >= MAX_OUTSTANDING:
            return False
        length = 0 if payload is None else payload.numel()
        header = torch.tensor([MAGIC, step, length, int(kind), value], dtype=torch.float64)
        try:
            outbox.put((dist.isend(header, dst, self.group, tag=TAG_HEADER), header))
            if payload is not None:
                # frames are host tensors on gloo: a vector on a GPU is copied here
                data = payload.detach().to(device="cpu", dtype=torch.float32).contiguous()
                outbox.put((dist.isend(data, dst, self.group, tag=TAG_PAYLOAD), data))
        except RuntimeError:
            return False  # the peer is gone: a message to a crashed process is simply lost
        return True

    @staticmethod
    def _retire_loop(outbox: queue.Queue) -> None:
        while True:
            work, _tensor = outbox.get()
            with contextlib.suppress(RuntimeError):  # the peer crashed: what it missed is lost
                work.wait()
            outbox.task_done()

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every send to complete; True when all did."""
        deadline = time.monotonic() + timeout
        while any(box.unfinished_tasks for box in self.outboxes.values()):
            if time.monotonic() >= deadline:
                return False
            time.sleep(1e-3)
        return True
