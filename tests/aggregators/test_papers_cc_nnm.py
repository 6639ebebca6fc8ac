"""Centered clipping (Karimireddy et al. 2021) and NNM (Allouah et al. 2023) against their papers."""

from __future__ import annotations

import pytest
import torch

from byzance import aggregators as agg
from byzance import attacks
from byzance.sim.core import WorkerMomentum


def _honest(h: int, d: int, *, mean_norm: float, spread: float, seed: int = 0) -> torch.Tensor:
    """h vectors around a mean of norm ``mean_norm``, each about ``spread`` from it."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(d, generator=g, dtype=torch.float64)
    mu *= mean_norm / mu.norm()
    noise = torch.randn(h, d, generator=g, dtype=torch.float64) * spread / d**0.5
    return mu + noise


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0])
def test_cc_default_radius_follows_the_scale_of_its_inputs(scale):
    # The same inputs as gradients, moving averages or heavy-ball momentum
    # (1 / (1 - beta) times larger): the default radius scales with them, so the
    # rule does the same thing at every scale (was tau = 10 whatever the scale).
    x = _honest(25, 40, mean_norm=0.5, spread=1.0)
    v = x.mean(dim=0) + 0.3
    ref = agg.centered_clipping(x, 5, center=v)
    got = agg.centered_clipping(scale * x, 5, center=scale * v)
    torch.testing.assert_close(got, scale * ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("form_scale", [1.0, 10.0])  # ema / heavy-ball momentum, beta = 0.9
def test_cc_with_momentum_scaled_inputs_holds_against_a_large_vector(form_scale):
    # Momentum vectors of norm ~0.5 and spread ~1 (as on MNIST with the MLP), the
    # center at the previous aggregate (the honest mean), 5 of 25 sending a huge
    # vector against the mean. With tau = 10 each moved the center by tau / n: the
    # aggregate moved 2.0 from the honest mean, 4x its norm, and training collapsed.
    h, f = 20, 5
    honest = form_scale * _honest(h, 40, mean_norm=0.5, spread=1.0)
    byz = attacks.get("large_norm")(honest, f)
    x = torch.cat([honest, byz])
    mu = honest.mean(dim=0)
    out = agg.centered_clipping(x, f, center=mu)
    deviation = float((out - mu).norm())
    assert deviation <= 0.5 * float(mu.norm()), deviation
    assert float(out @ mu) > 0


def test_cc_carries_its_center_and_a_byzantine_input_moves_it_at_most_median_over_n():
    # The paper's recursion over steps: each call starts from the previous output.
    g = torch.Generator().manual_seed(1)
    v = None
    for _ in range(5):
        honest = 0.5 + torch.randn(20, 30, generator=g, dtype=torch.float64) * 0.2
        x = torch.cat([honest, torch.full((5, 30), 1e6, dtype=torch.float64)])
        start = torch.zeros(30, dtype=torch.float64) if v is None else v
        median = float((x - start).norm(dim=1).median())
        v_next = agg.centered_clipping(x, 5, center=v)
        pull = v_next - agg.centered_clipping(honest, 0, center=start, tau=median) * 20 / 25
        # The 5 Byzantine inputs add at most 5 * median / 25 to the honest part.
        assert float((pull - start * 5 / 25).norm()) <= 5 * median / 25 * (1 + 1e-9)
        v = v_next
    assert float((v - 0.5).norm()) < 1.0  # close to the honest mean (norm 0.5 * sqrt(30))


def test_nnm_is_the_papers_mixing():
    # Each vector replaced by the mean of its n - f nearest vectors, itself included.
    g = torch.Generator().manual_seed(2)
    x = torch.randn(9, 6, generator=g, dtype=torch.float64)
    f = 3
    out = agg.nnm(x, f)
    for i in range(9):
        dist = ((x - x[i]) ** 2).sum(dim=1)
        nearest = torch.argsort(dist)[: 9 - f]
        assert i in nearest.tolist()
        torch.testing.assert_close(out[i], x[nearest].mean(dim=0))


def test_nnm_under_sign_flip_steps_on_the_gradients_scale_with_the_default_momentum():
    # Allouah et al. (and Karimireddy et al.) send m <- beta m + (1 - beta) g. With
    # constant heterogeneous gradients the momentum stays on the gradients' scale,
    # and nnm>trimmed_mean under sign flipping still points along the honest mean,
    # with a norm below it. Heavy-ball momentum (the old default, m <- beta m + g)
    # made every step about 10x larger at the same lr: the mixed runs diverged.
    g = torch.Generator().manual_seed(3)
    h, f, d = 20, 5, 30
    label = torch.randint(0, 3, (h,), generator=g)
    centers = torch.randn(3, d, generator=g, dtype=torch.float64)  # one per class: skew
    grads = centers[label] + 0.3 * torch.randn(h, d, generator=g, dtype=torch.float64)
    momentum = WorkerMomentum(0.9)  # the default form
    for _ in range(50):
        sent = momentum(grads)
    byz = attacks.get("sign_flip")(sent, f)
    out = agg.get("nnm>trimmed_mean")(torch.cat([sent, byz]), f)
    mean = grads.mean(dim=0)
    assert float(out @ mean) > 0
    assert float(out.norm()) <= 1.5 * float(mean.norm())


def test_a_pipeline_hands_the_carried_center_to_its_last_stage():
    """bucketing>centered_clipping starts from the previous aggregate (Karimireddy et al. 2022).

    Before, a pipeline carried no center, so the clipping restarted from zero every step.
    """
    import byzance.aggregators as agg

    pipe = agg.compose(agg.get("bucketing", seed=0), agg.get("centered_clipping", tau=0.5))
    assert pipe.carries_center
    x = torch.ones(6, 3) * 10.0
    start = pipe(x, 1)  # from zero: moves at most tau
    assert float(start.norm()) <= 0.5 + 1e-6
    later = pipe(x, 1, center=torch.full((3,), 9.0))  # from the previous aggregate
    assert torch.all(later > 9.0)
    assert not agg.compose("nnm", "median").carries_center
