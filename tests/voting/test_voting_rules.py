"""Weighted rules and the skewed geometric median (byzance.aggregators)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import byzance.aggregators as agg
from byzance.errors import InvalidParameterError


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(
    n=st.integers(1, 9), d=st.integers(1, 4), seed=st.integers(0, 10_000), w=st.floats(0.1, 10.0)
)
def test_equal_weights_give_the_unweighted_rules(n, d, seed, w):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    weights = torch.full((n,), w, dtype=torch.float64)
    f = (n - 1) // 2
    assert torch.equal(agg.weighted_median(x, f, weights=weights), agg.median(x, f))
    assert torch.equal(agg.weighted_median(x, f), agg.median(x, f))
    torch.testing.assert_close(agg.weighted_average(x, 0, weights=weights), x.mean(0))
    torch.testing.assert_close(
        agg.geometric_median(x, f, weights=weights, tol=1e-14, max_iter=2000),
        agg.geometric_median(x, f, tol=1e-14, max_iter=2000),
        atol=1e-9,
        rtol=0,
    )


def test_weighted_median_by_hand():
    x = torch.tensor([[0.0, 5.0], [1.0, 4.0], [9.0, 3.0]])
    # Column 0: weights 1, 1, 3 -> cumulative 1, 2, 5 of total 5: 9 holds more than half.
    assert agg.weighted_median(x, 1, weights=[1.0, 1.0, 3.0]).tolist() == [9.0, 3.0]
    # Cumulative weight hitting exactly half: midpoint of that value and the next.
    assert agg.weighted_median(x, 1, weights=[1.0, 1.0, 2.0]).tolist() == [5.0, 3.5]
    # A zero-weight value is never chosen.
    assert agg.weighted_median(x, 1, weights=[0.0, 1.0, 1.0]).tolist() == [5.0, 3.5]
    assert agg.weighted_average(x, 0, weights=[1.0, 0.0, 1.0]).tolist() == [4.5, 4.0]


def test_weighted_median_resists_byzantine_inputs_below_half_the_weight():
    honest = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    x = torch.cat([honest, torch.full((4, 3), 1e9)])  # 4 of 10 inputs, but weight 0.1 each
    w = torch.tensor([1.0] * 6 + [0.1] * 4)
    out = agg.weighted_median(x, 4, weights=w)
    assert bool((out <= honest.max(0).values).all()) and bool((out >= honest.min(0).values).all())
    assert float(agg.weighted_average(x, 4, weights=w).abs().max()) > 1e6


@pytest.mark.parametrize("name", ["weighted_average", "weighted_median"])
def test_bad_weights_are_refused(name):
    x = torch.randn(4, 2)
    with pytest.raises(InvalidParameterError, match="one per input"):
        agg.get(name)(x, 1, weights=[1.0, 1.0])
    with pytest.raises(InvalidParameterError, match="non-negative"):
        agg.get(name)(x, 1, weights=[1.0, -1.0, 1.0, 1.0])


def test_skewed_geometric_median_with_identity_is_the_geometric_median():
    x = torch.randn(11, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    gm = agg.geometric_median(x, 2, tol=1e-14, max_iter=2000)
    sgm = agg.skewed_geometric_median(x, 2, skew=torch.eye(5), tol=1e-14, max_iter=2000)
    torch.testing.assert_close(sgm, gm, atol=1e-10, rtol=0)
    torch.testing.assert_close(agg.skewed_geometric_median(x, 2, tol=1e-14, max_iter=2000), gm)


def test_skewed_geometric_median_minimizes_the_skewed_distances():
    gen = torch.Generator().manual_seed(5)  # its minimizer lies on no input: smooth there
    x = torch.randn(9, 2, generator=gen, dtype=torch.float64) * torch.tensor(
        [3.0, 1.0], dtype=torch.float64
    )
    s = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    z = agg.skewed_geometric_median(x, 1, skew=s, tol=1e-15, max_iter=5000)

    def objective(point: torch.Tensor) -> float:
        return float(torch.linalg.vector_norm((point - x) @ s, dim=1).sum())

    for direction in torch.randn(20, 2, generator=gen, dtype=torch.float64):
        assert objective(z) <= objective(z + 1e-3 * direction) + 1e-9
    # It differs from the plain geometric median: the skew matters.
    assert float((z - agg.geometric_median(x, 1, tol=1e-15, max_iter=5000)).abs().max()) > 1e-3


def test_bad_skew_is_refused():
    x = torch.randn(5, 2)
    with pytest.raises(InvalidParameterError, match=r"\(2, 2\) matrix"):
        agg.skewed_geometric_median(x, 1, skew=torch.eye(3))
    with pytest.raises(InvalidParameterError, match="symmetric"):
        agg.skewed_geometric_median(x, 1, skew=[[1.0, 2.0], [0.0, 1.0]])
    with pytest.raises(InvalidParameterError, match="positive definite"):
        agg.skewed_geometric_median(x, 1, skew=[[1.0, 0.0], [0.0, -1.0]])
