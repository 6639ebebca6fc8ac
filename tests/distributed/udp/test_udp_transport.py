"""Sender to receiver on loopback: reassembly, authentication, steps, loss, bounded memory."""

from __future__ import annotations

import socket
import time
import tracemalloc
from collections.abc import Iterator

import pytest
import torch

from byzance.distributed.udp import LossModel, UdpReceiver, UdpSender, encode, generate_keys
from byzance.distributed.udp.datagram import HEADER, TAG_SIZE, to_bytes
from byzance.errors import InvalidParameterError

KEYS = generate_keys(4)
D = 5_000
SMALL = 512  # bytes per datagram: up to 110 coordinates, 46 datagrams per gradient


def _grads(step: int, n: int = 4) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(step))


@pytest.fixture
def rx() -> Iterator[UdpReceiver]:
    with UdpReceiver(KEYS, D, window=2) as receiver:
        yield receiver


@pytest.fixture
def raw() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    yield sock
    sock.close()


def _send_all(rx: UdpReceiver, step: int, grads: torch.Tensor, **sender_args) -> list:
    """Each worker sends in turn; the next starts once the receiver has read everything
    (so that no test depends on the size of the kernel's socket buffer)."""
    stats = []
    seen = rx.datagrams_seen
    for w in range(grads.shape[0]):
        with UdpSender(w, KEYS[w], datagram_bytes=SMALL, **sender_args) as tx:
            stats.append(tx.send(step, grads[w], rx.address))
        seen += stats[-1].sent
        _wait_seen(rx, seen)
    return stats


def _wait_seen(rx: UdpReceiver, count: int) -> None:
    deadline = time.monotonic() + 5.0
    while rx.datagrams_seen < count and time.monotonic() < deadline:
        time.sleep(0.002)
    assert rx.datagrams_seen == count, "the receiver did not read every datagram sent"


def test_reassembly_is_exact_under_reordering_duplication_and_delay(rx: UdpReceiver) -> None:
    grads = _grads(0)
    loss = LossModel(duplicate=0.3, reorder_window=16, max_delay_s=0.002, seed=1)
    sent = _send_all(rx, 0, grads, loss=loss)
    got = rx.collect(0, timeout=5.0)
    assert torch.equal(got.values, grads) and bool(got.present.all())
    assert got.workers == (0, 1, 2, 3)
    s = got.stats
    assert not s.timed_out and s.complete == (0, 1, 2, 3) and s.crashed == ()
    assert s.datagrams_accepted == sum(x.datagrams for x in sent) == 4 * 46
    assert s.rejected["duplicate"] == sum(x.duplicated for x in sent) > 0
    assert s.datagrams_rejected == s.rejected["duplicate"]
    assert s.coordinates_missing == 0


def test_dropped_datagrams_leave_exactly_their_coordinates_missing(rx: UdpReceiver) -> None:
    grads = _grads(1)
    sent = _send_all(rx, 0, grads, loss=LossModel(drop=0.1, seed=2))
    got = rx.collect(0, timeout=0.3)
    assert got.stats.timed_out
    dropped = sum(x.dropped for x in sent)
    assert dropped > 0
    assert got.stats.datagrams_accepted == 4 * 46 - dropped
    # Whole chunks are missing or present; present values are exact, missing ones are 0.
    size = -(-D // 46)  # 109 coordinates per chunk, the last one shorter
    chunks = got.present[:, : size * 45].reshape(4, 45, size)
    assert bool((chunks.all(dim=2) | ~chunks.any(dim=2)).all())
    assert torch.equal(got.values[got.present], grads[got.present])
    assert bool((got.values[~got.present] == 0).all())
    assert got.stats.coordinates_missing == int((~got.present).sum()) > 0


def test_forged_unknown_malformed_and_foreign_datagrams_are_rejected_and_counted(
    rx: UdpReceiver, raw: socket.socket
) -> None:
    honest = _grads(2)
    lie = torch.full((D,), 1e6)
    attacker_key = KEYS[3]
    bad = []
    # Worker 3 (Byzantine) signs a gradient in worker 0's name with its own key.
    bad += [
        to_bytes(d)
        for d in encode(lie, worker=0, step=0, key=attacker_key, datagram_bytes=SMALL)[:5]
    ]
    # A stranger signs with a key nobody gave it.
    bad += [
        to_bytes(d) for d in encode(lie, worker=1, step=0, key=b"x" * 32, datagram_bytes=SMALL)[:3]
    ]
    # A worker id nobody holds a key for.
    bad += [
        to_bytes(d) for d in encode(lie, worker=42, step=0, key=b"x" * 32, datagram_bytes=SMALL)[:2]
    ]
    # Garbage, a truncated datagram, a flipped payload bit.
    good = to_bytes(encode(honest[1], worker=1, step=0, key=KEYS[1], datagram_bytes=SMALL)[0])
    flipped = bytearray(good)
    flipped[HEADER.size + 1] ^= 0x40
    malformed = [b"\x00" * 7, b"BZ" + b"\x01" * 200, good[: -TAG_SIZE - 4]]
    # Authentic but for another run, or with the wrong gradient size.
    foreign = [to_bytes(d) for d in encode(lie, worker=2, step=0, key=KEYS[2], session=7)[:1]]
    wrong_dim = [to_bytes(d) for d in encode(torch.ones(10), worker=2, step=0, key=KEYS[2])]
    for wire in [*bad, bytes(flipped), *malformed, *foreign, *wrong_dim]:
        raw.sendto(wire, rx.address)
    _wait_seen(rx, len(bad) + 1 + len(malformed) + len(foreign) + len(wrong_dim))
    _send_all(rx, 0, honest)
    got = rx.collect(0, timeout=5.0)
    assert torch.equal(got.values, honest)
    assert got.stats.rejected == {
        "malformed": 4,
        "unknown_worker": 2,
        "bad_tag": 9,
        "wrong_session": 1,
        "stale": 0,
        "future": 0,
        "duplicate": 0,
    }


def test_replayed_and_late_datagrams_are_stale(rx: UdpReceiver, raw: socket.socket) -> None:
    step0 = _grads(3)
    recorded = [
        to_bytes(d) for d in encode(step0[0], worker=0, step=0, key=KEYS[0], datagram_bytes=SMALL)
    ]
    _send_all(rx, 0, step0)
    rx.collect(0, timeout=5.0)
    for wire in recorded:  # an eavesdropper replays worker 0's step-0 datagrams
        raw.sendto(wire, rx.address)
    _wait_seen(rx, 4 * 46 + len(recorded))
    step1 = _grads(4)
    _send_all(rx, 1, step1)
    got = rx.collect(1, timeout=5.0)
    assert torch.equal(got.values, step1)
    assert got.stats.rejected["stale"] == len(recorded)
    with pytest.raises(InvalidParameterError, match="already collected"):
        rx.collect(1, timeout=0.0)


def test_a_future_step_is_buffered_within_the_window_and_rejected_beyond(
    rx: UdpReceiver,
) -> None:
    step1, step0 = _grads(5), _grads(6)
    _send_all(rx, 1, step1)  # fast workers, one step ahead
    _send_all(rx, 5, step1)  # too far ahead for a window of 2
    _send_all(rx, 0, step0)
    got0 = rx.collect(0, timeout=5.0)
    assert torch.equal(got0.values, step0) and got0.stats.rejected["future"] == 4 * 46
    start = time.monotonic()
    got1 = rx.collect(1, timeout=5.0)
    assert torch.equal(got1.values, step1) and not got1.stats.timed_out
    assert time.monotonic() - start < 4.0  # it was complete already: no wait for the deadline


def test_a_silent_worker_is_reported_crashed_and_expected_workers_end_the_wait(
    rx: UdpReceiver,
) -> None:
    grads = _grads(7)
    _send_all(rx, 0, grads[:3])
    got = rx.collect(0, timeout=0.2)
    assert got.stats.timed_out and got.stats.crashed == (3,) and got.stats.complete == (0, 1, 2)
    assert not bool(got.present[3].any()) and got.stats.coordinates_missing == D
    _send_all(rx, 1, grads[:3])
    got = rx.collect(1, timeout=5.0, workers=[2, 0])
    assert not got.stats.timed_out and got.workers == (2, 0)
    assert torch.equal(got.values, grads[[2, 0]])
    with pytest.raises(InvalidParameterError, match="no key"):
        rx.collect(2, timeout=0.0, workers=[9])


def test_receiver_memory_stays_bounded_under_a_flood(raw: socket.socket) -> None:
    keys = generate_keys(3)
    d = 20_000
    tracemalloc.start()
    try:
        with UdpReceiver(keys, d, window=2) as rx:
            budget = rx.buffer_bytes
            assert budget <= 2 * 3 * d * 5 + 70_000
            junk = torch.randn(d)
            flood: list[bytes] = []
            for step in range(2, 40):  # valid tags, every step beyond the window
                flood += [
                    to_bytes(x)
                    for x in encode(junk, worker=1, step=step, key=keys[1], datagram_bytes=1472)[
                        :20
                    ]
                ]
            valid = [
                to_bytes(x)
                for x in encode(junk, worker=2, step=1, key=keys[2], datagram_bytes=1472)
            ]
            flood += valid * 5  # within the window: buffered once, then duplicates
            flood += [bytes(range(256)) * 5] * 300  # garbage
            flood += [
                to_bytes(x)
                for x in encode(junk, worker=0, step=0, key=b"f" * 32, datagram_bytes=1472)
            ] * 3
            tracemalloc.reset_peak()
            before, _ = tracemalloc.get_traced_memory()
            for i in range(0, len(flood), 200):
                for wire in flood[i : i + 200]:
                    raw.sendto(wire, rx.address)
                _wait_seen(rx, min(i + 200, len(flood)))  # no kernel drops: every one is counted
            _, peak = tracemalloc.get_traced_memory()
            assert rx.buffer_bytes == budget
            assert peak - before < 256 * 1024, f"the receiver's heap grew by {peak - before} bytes"
            honest = torch.randn(3, d)
            for w in range(3):
                with UdpSender(w, keys[w]) as tx:
                    tx.send(0, honest[w], rx.address)
            got = rx.collect(0, timeout=5.0)
            assert torch.equal(got.values, honest)
            r = got.stats.rejected
            assert r["future"] == 38 * 20
            assert r["duplicate"] == 4 * len(valid)
            assert r["malformed"] == 300 and r["bad_tag"] == 3 * len(valid)
            assert got.stats.datagrams_rejected + len(valid) == len(flood)
    finally:
        tracemalloc.stop()


def test_flow_control_window_delivers_everything_and_never_blocks_on_a_dead_receiver(
    rx: UdpReceiver,
) -> None:
    grads = _grads(8)
    with UdpSender(0, KEYS[0], datagram_bytes=SMALL, window=4) as tx:
        stats = tx.send(0, grads[0], rx.address)
    assert stats.sent == 46
    got = rx.collect(0, timeout=5.0, workers=[0])
    assert torch.equal(got.values[0], grads[0]) and not got.stats.timed_out
    # Nobody listens on this port: no acknowledgement ever comes, the sender still finishes.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()
    with UdpSender(0, KEYS[0], datagram_bytes=SMALL, window=40, ack_timeout=0.01) as tx:
        tx.send(0, grads[0], dead)
        assert tx.ack_timeouts == 46 - 40


def test_one_send_reaches_every_node_of_a_decentralized_run() -> None:
    grads = _grads(9)
    with UdpReceiver(KEYS, D) as a, UdpReceiver(KEYS, D) as b:
        for w in range(4):
            with UdpSender(w, KEYS[w], datagram_bytes=SMALL, window=8) as tx:
                stats = tx.send(0, grads[w], [a.address, b.address])
                assert stats.sent == 2 * stats.datagrams
        for node in (a, b):
            assert torch.equal(node.collect(0, timeout=5.0).values, grads)
