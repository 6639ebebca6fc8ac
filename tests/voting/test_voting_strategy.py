"""Best responses and strategic gain against the mean and (skewed) geometric medians, worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

import byzance.aggregators as agg
from byzance.errors import InvalidParameterError
from byzance.voting import strategy


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_best_response_to_the_geometric_median_by_hand():
    # Two others at (-1, 0) and (1, 0). The outcomes one voter can reach are the points z
    # from which the segment between them is seen under an angle of at least 120 degrees
    # (the two unit pulls towards them then sum to at most 1): a lens bounded by arcs of
    # the circle of centre c = (0, -1/sqrt 3) and radius R = 2/sqrt 3. The voter at
    # x = (1, 1) lies outside; its best outcome is the lens point nearest x, on the
    # upper arc: c + R (x - c) / |x - c|, at distance |x - c| - R.
    x = torch.tensor([[1.0, 1.0], [-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    c = torch.tensor([0.0, -1 / math.sqrt(3)], dtype=torch.float64)
    radius = 2 / math.sqrt(3)
    best = c + radius * (x[0] - c) / torch.linalg.vector_norm(x[0] - c)
    r = strategy.best_responses(x, torch.tensor([0]), "geometric_median", iterations=30)
    torch.testing.assert_close(r.outcome[0], best, atol=2e-4, rtol=0)
    assert float(r.loss_best[0]) == pytest.approx(
        float(torch.linalg.vector_norm(x[0] - c)) - radius, abs=1e-6
    )
    # The truthful outcome is the Fermat point of the triangle: worse for the voter.
    fermat = agg.geometric_median(x, 0, tol=1e-15, max_iter=10_000)
    assert float(r.loss_truth[0]) == pytest.approx(
        float(torch.linalg.vector_norm(fermat - x[0])), abs=1e-6
    )
    assert float(r.loss_truth[0]) > float(r.loss_best[0]) + 0.02
    # Reporting the strategic vote really moves the geometric median there.
    outcome = agg.geometric_median(torch.cat([r.report, x[1:]]), 0, tol=1e-15, max_iter=10_000)
    torch.testing.assert_close(outcome, r.outcome[0], atol=1e-6, rtol=0)
    # Abstaining leaves the two others, whose geometric median is any point of their
    # segment: the voter is at distance at least 1 from each.
    assert float(r.loss_abstain[0]) >= 1.0 - 1e-5


def test_symmetric_voter_has_nothing_to_gain():
    # Voter on the axis of symmetry: the truthful outcome (0, 1/sqrt 3) is already the
    # reachable point nearest to it.
    x = torch.tensor([[0.0, 2.0], [-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    r = strategy.best_responses(x, torch.tensor([0]), "geometric_median")
    assert float(r.loss_truth[0]) == pytest.approx(2 - 1 / math.sqrt(3), abs=1e-9)
    assert float(r.loss_best[0]) == pytest.approx(float(r.loss_truth[0]), abs=1e-9)
    assert float(r.alpha[0]) == pytest.approx(0.0, abs=1e-6)


def test_the_mean_is_fully_manipulable():
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r = strategy.best_responses(x, torch.tensor([0, 3]), "mean")
    assert torch.equal(r.loss_best, torch.zeros(2, dtype=torch.float64))
    for k, i in enumerate((0, 3)):
        reported = x.clone()
        reported[i] = r.report[k]
        torch.testing.assert_close(reported.mean(0), x[i])
    torch.testing.assert_close(r.alpha, torch.full((2,), 6.0, dtype=torch.float64))  # n - 1


def test_tilted_solver_without_pull_is_the_geometric_median_and_skew_by_transform():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 30, 3, generator=gen, dtype=torch.float64)
    w = torch.ones(2, 30, dtype=torch.float64)
    y = strategy.tilted_geometric_median(x, w, torch.zeros(2, 3, dtype=torch.float64))
    for b in range(2):
        torch.testing.assert_close(
            y[b], agg.geometric_median(x[b], 0, tol=1e-15, max_iter=10_000), atol=1e-7, rtol=0
        )
    # A pull t moves the minimizer where the others' unit pulls sum to t.
    t = torch.tensor([[0.5, 0.0, 0.0], [0.0, -0.3, 0.2]], dtype=torch.float64)
    y = strategy.tilted_geometric_median(x, w, t)
    units = (y[:, None, :] - x) / torch.linalg.vector_norm(y[:, None, :] - x, dim=-1, keepdim=True)
    torch.testing.assert_close(units.sum(1), t, atol=1e-9, rtol=0)


def test_isotropic_preferences_make_the_geometric_median_asymptotically_strategyproof():
    gen = torch.Generator().manual_seed(2)
    sample = torch.randn(20_000, 2, generator=gen, dtype=torch.float64)
    iso = strategy.asymptotic_alpha(sample, sample[:500])
    assert float(iso.mean()) < 0.01
    polarized = sample * torch.tensor([3.0, 1.0], dtype=torch.float64)
    care = torch.tensor([3.0, 1.0])
    gm = strategy.asymptotic_alpha(polarized, polarized[:500], care=care)
    skewed = strategy.asymptotic_alpha(polarized, polarized[:500], care=care, skew=care)
    assert float(gm.mean()) > 0.1 > float(skewed.mean())


def test_measured_gain_approaches_the_prediction_as_n_grows():
    gen = torch.Generator().manual_seed(3)
    scale = torch.tensor([3.0, 1.0], dtype=torch.float64)
    x = torch.randn(300, 2, generator=gen, dtype=torch.float64) * scale
    r = strategy.best_responses(x, torch.arange(8), "geometric_median")
    predicted = strategy.asymptotic_alpha(x, x[:8])
    torch.testing.assert_close(r.alpha, predicted, atol=0.05, rtol=0.3)


def test_bad_inputs_are_refused():
    x = torch.randn(5, 2, dtype=torch.float64)
    with pytest.raises(InvalidParameterError, match="'mean' or 'geometric_median'"):
        strategy.best_responses(x, torch.tensor([0]), "krum")
    with pytest.raises(InvalidParameterError, match="positive definite"):
        strategy.best_responses(
            x, torch.tensor([0]), "geometric_median", skew=torch.tensor([1.0, -1.0])
        )
