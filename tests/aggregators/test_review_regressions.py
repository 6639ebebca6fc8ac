"""Regressions for defects found in review, each with its reproduction."""

from __future__ import annotations

import pytest
import torch

import byzance.aggregators as agg
from byzance import errors
from byzance.aggregators.bulyan import bulyan_selection
from byzance.aggregators.geometric_median import weiszfeld


def test_meamed_with_tied_values_keeps_the_nearest_ones():
    # Median 0; the 4 nearest of {-1, -1, 0, .5, .7} are {0, .5, .7, -1}.
    x = torch.tensor([[-1.0], [-1.0], [0.0], [0.5], [0.7]])
    assert agg.meamed(x, f=1).item() == pytest.approx(0.05)


def test_bulyan_phase_two_with_tied_values():
    # Selected {-2, -2, 0, 1, 2}, median 0: the 3 nearest are 0, 1 and one of the +-2;
    # the lowest such window is {-2, 0, 1}.
    x = torch.tensor([[-2.0], [-2.0], [0.0], [1.0], [2.0], [9.0], [-9.0]])
    assert agg.bulyan(x, f=1).item() == pytest.approx(-1 / 3)


def test_mda_never_keeps_every_input_when_a_distance_overflows():
    x = torch.tensor([[-1.0], [-2.0], [-3.0], [-3e38], [0.0]])
    assert agg.mda.selected(x, f=2).tolist() == [0, 1, 4]
    assert agg.mda(x, f=2).item() == pytest.approx(-1.0)


def test_distances_of_half_precision_inputs_are_finite():
    x = (torch.randn(9, 1000, generator=torch.Generator().manual_seed(0)) * 10).half()
    dist = agg.sq_distances(x)
    assert dist.dtype == torch.float32 and torch.isfinite(dist).all()


def test_distances_of_two_distant_clusters_are_accurate():
    gen = torch.Generator().manual_seed(0)
    base = torch.cat([torch.full((4, 500), 1e4), torch.zeros(4, 500)]).double()
    x = (base + 1e-2 * torch.randn(8, 500, generator=gen, dtype=torch.float64)).float()
    got = agg.sq_distances(x).double()
    want = ((x.double()[:, None] - x.double()[None]) ** 2).sum(-1)
    off = ~torch.eye(8, dtype=torch.bool)
    assert ((got - want).abs()[off] / want[off]).max() < 1e-2


def test_geometric_median_leaves_a_starting_point_on_an_input():
    # Starts at the coordinate-wise median (0, 0), an input; the minimizer is the
    # Fermat point (1/2 - 1/(2 sqrt 3)) (1, 1) with objective 1.9319.
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    z, _ = weiszfeld(x, tol=1e-12, max_iter=1000)
    assert torch.allclose(z, torch.full((2,), 0.5 - 0.5 / 3**0.5, dtype=torch.float64), atol=1e-6)


def test_weighted_geometric_median_at_a_heavy_input():
    x = torch.tensor([[1.677], [0.946], [0.798]], dtype=torch.float64)
    w = torch.tensor([0.75, 0.319, 0.165], dtype=torch.float64)
    assert agg.geometric_median(x, f=1, weights=w).item() == pytest.approx(1.677, abs=1e-5)


def test_bulyan_runs_the_whole_selection_pipeline():
    z = torch.randn(11, 5, generator=torch.Generator().manual_seed(0))
    pipeline = agg.get("nnm>median")
    remaining, chosen = list(range(11)), []
    for _ in range(11 - 2 * 2):  # the literal recursion, one round at a time
        rest = z[remaining]
        out = pipeline(rest, f=2)
        chosen.append(remaining.pop(int((rest - out).norm(dim=1).argmin())))
    assert bulyan_selection(z, 2, "nnm>median").tolist() == chosen
    with pytest.raises(errors.InvalidParameterError, match="other than bulyan"):
        agg.bulyan(z, f=2, selection="nnm>bulyan")
    with pytest.raises(errors.InvalidParameterError, match="per-input parameters"):
        agg.bulyan(z, f=2, selection=agg.get("geometric_median", weights=torch.ones(11)))


def test_pipelines_refuse_parameters_and_follow_dropped_rows():
    with pytest.raises(errors.InvalidParameterError, match="takes no parameters"):
        agg.get("nnm>geometric_median").partial(max_iter=1)
    y = torch.randn(7, 3, generator=torch.Generator().manual_seed(1))
    y[0, 0], y[1, 1] = float("nan"), float("inf")
    rule = agg.compose("nnm", agg.get("geometric_median", weights=torch.ones(7)))
    assert torch.isfinite(rule(y, f=2)).all()


@pytest.mark.parametrize(
    "call",
    [
        lambda x: agg.centered_clipping(x, 0, tau=float("nan")),
        lambda x: agg.geometric_median(x, 0, nu=float("nan")),
        lambda x: agg.geometric_median(x, 0, max_iter=2.5),
        lambda x: agg.bucketing(x, 0, s=2.5),
    ],
)
def test_non_numeric_parameters_are_refused(call):
    with pytest.raises(errors.InvalidParameterError):
        call(torch.randn(5, 3))


def test_median_result_does_not_hold_the_sorted_input():
    out = agg.median(torch.randn(21, 1000), f=1)
    assert out._base is None
