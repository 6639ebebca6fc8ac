"""End to end over loopback: with 10% of the datagrams lost and one Byzantine worker,
gradient descent with the median over the UDP transport still converges; the average
with zero-filled losses does not."""

from __future__ import annotations

import torch

from byzance.aggregators import aggregate_with_missing
from byzance.distributed.udp import LossModel, UdpReceiver, UdpSender, generate_keys

N, D, F = 7, 300, 1
DATAGRAM = 200  # 32 coordinates per datagram: 10 datagrams per gradient


def _train(rule: str, fill: str, steps: int) -> tuple[float, float, int]:
    """Distance to the optimum before and after, and the coordinates lost overall."""
    keys = generate_keys(N)
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(D, generator=gen)
    w = torch.zeros(D)
    start = float((w - target).norm())
    lost = 0
    senders = [
        UdpSender(i, keys[i], datagram_bytes=DATAGRAM, loss=LossModel(drop=0.1, seed=i))
        for i in range(N - 1)
    ]
    byzantine = UdpSender(N - 1, keys[N - 1], datagram_bytes=DATAGRAM)  # always delivers
    with UdpReceiver(keys, D) as rx:
        for step in range(steps):
            for tx in senders:  # honest: gradient of 0.5 ||w - target||^2, plus noise
                tx.send(step, w - target + 0.05 * torch.randn(D, generator=gen), rx.address)
            byzantine.send(step, torch.full((D,), 1e4), rx.address)
            got = rx.collect(step, timeout=0.05)
            lost += got.stats.coordinates_missing
            w = w - 0.3 * aggregate_with_missing(rule, got.values, got.present, F, fill=fill)
    for tx in [*senders, byzantine]:
        tx.close()
    return start, float((w - target).norm()), lost


def test_median_learns_at_10_percent_loss_with_a_byzantine_worker() -> None:
    start, end, lost = _train("median", "auto", steps=25)
    assert lost > 0
    assert end < 0.05 * start


def test_zero_filled_average_is_broken_by_the_same_worker() -> None:
    start, end, _ = _train("average", "zero", steps=3)
    assert end > 100 * start
