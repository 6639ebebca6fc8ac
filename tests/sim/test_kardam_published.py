"""Kardam behaving as published (Damaskinos et al., ICML 2018).

The Lipschitz filter alone slows honest training by at most about f/n (an
honest gradient passes with probability (n - f)/n), and rejects Byzantine
gradients of huge noise, all of them once our no-starvation rule is off.
A small smooth problem (a noisy quadratic), workers arriving in random order
and computing on stale models, as in the asynchronous simulator.
"""

from __future__ import annotations

import torch

from byzance.sim.asynchronous import Arrivals, AsyncSimulator
from byzance.sim.kardam import KardamFilter

N, F, D = 10, 3, 20


def _run(
    kardam: KardamFilter,
    *,
    byzantine: int = 0,
    sigma: float = 0.0,
    arrivals: int = 1500,
    seed: int = 0,
) -> tuple[float, float]:
    """Honest and Byzantine acceptance rates on 0.5 |x - 1|^2 with noisy gradients.

    Byzantine workers (the last ``byzantine``) are 4 times as fast and send
    N(0, sigma^2 I) noise.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.zeros(D)
    rates = torch.tensor([1.0] * (N - byzantine) + [4.0] * byzantine)
    started = {w: x.clone() for w in range(N)}  # the model each worker computes at
    counts = {"h": 0, "ha": 0, "b": 0, "ba": 0}
    for _ in range(arrivals):
        w = int(torch.multinomial(rates, 1, generator=gen))
        at = started[w]
        if w >= N - byzantine:
            grad = sigma * torch.randn(D, generator=gen)
        else:
            grad = (at - 1.0) + 0.3 * torch.randn(D, generator=gen)
        accepted, applied = kardam(w, grad, at)
        key = "b" if w >= N - byzantine else "h"
        counts[key] += 1
        counts[key + "a"] += accepted
        if accepted:
            x = x - 0.05 * applied
        started[w] = x.clone()
    return counts["ha"] / max(counts["h"], 1), counts["ba"] / max(counts["b"], 1)


def test_the_paper_filter_is_the_default():
    kardam = KardamFilter(N, F)
    assert kardam.max_rejections == -1  # our no-starvation rule is off unless asked for
    assert kardam.last_sources.maxlen == 2 * F  # the frequency filter is published: on


def test_without_byzantine_workers_the_lipschitz_filter_slows_by_about_f_over_n():
    honest, _ = _run(KardamFilter(N, F, frequency_filter=False))
    assert honest >= 1 - F / N - 0.03  # the paper: slowdown below f/n


def test_huge_gaussian_noise_is_always_rejected_without_the_no_starvation_rule():
    for sigma in (1e3, 1e6):
        for frequency in (True, False):
            kardam = KardamFilter(N, F, frequency_filter=frequency)
            honest, byzantine = _run(kardam, byzantine=F, sigma=sigma, arrivals=800)
            assert byzantine == 0.0, (sigma, frequency)
            assert honest > 0.0


def test_the_no_starvation_rule_lets_byzantine_noise_through_clipped():
    kardam = KardamFilter(N, F, frequency_filter=False, max_rejections=5)
    _, byzantine = _run(kardam, byzantine=F, sigma=1e6, arrivals=800)
    assert byzantine > 0.1  # roughly one in max_rejections + 1 tries


def test_the_frequency_filter_costs_honest_gradients_and_can_be_switched_off():
    with_filter, _ = _run(KardamFilter(N, F, frequency_filter=True))
    without, _ = _run(KardamFilter(N, F, frequency_filter=False))
    assert with_filter < without
    kardam = KardamFilter(N, F, frequency_filter=False)
    assert kardam.last_sources.maxlen == 0


def test_state_dict_round_trip_filters_the_same_way():
    a = KardamFilter(N, F, max_rejections=3)
    _run(a, byzantine=F, sigma=1e3, arrivals=200)
    b = KardamFilter(N, F, max_rejections=3)
    b.load_state_dict(a.state_dict())
    assert _run(a, byzantine=F, sigma=1e3, arrivals=200, seed=1) == _run(
        b, byzantine=F, sigma=1e3, arrivals=200, seed=1
    )


def test_the_simulator_counts_byzantine_acceptances_and_resumes_them():
    torch.manual_seed(0)
    x = torch.randn(300, 5)
    y = (x[:, 0] > 0).long()
    shards = list(torch.arange(300).chunk(N))
    model = torch.nn.Linear(5, 2)
    sim = AsyncSimulator(
        model,
        x,
        y,
        shards,
        f=F,
        byzantine=F,
        attack=None,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        max_rejections=2,
        num_classes=2,
    )
    stats = [sim.step() for _ in range(120)]
    byz = [s for s in stats if s.byzantine]
    expected = sum(s.accepted for s in byz) / len(byz)
    assert stats[-1].byzantine_acceptance_rate == expected
    restored = Arrivals()
    restored.load_state_dict(sim.arrivals.state_dict())
    assert (restored.byzantine_arrivals, restored.byzantine_accepted) == (
        sim.arrivals.byzantine_arrivals,
        sim.arrivals.byzantine_accepted,
    )
    assert restored.byzantine_arrivals == len(byz)
