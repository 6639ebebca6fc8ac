"""The non-coordinate-wise rules at large n: the geometric median's start, the NaN/inf check
made by a rule's first pass, clipping and ARC into a given tensor, and pipelines that scale
their own intermediate rows in place."""

from __future__ import annotations

import math
import sys

import pytest
import torch

import byzance.aggregators as agg
from byzance.aggregators import _input, _native
from byzance.aggregators._pairwise import central_point, central_point_and_distances
from byzance.aggregators.geometric_median import weiszfeld
from byzance.errors import InvalidParameterError, NonFiniteInputError

FIRST_PASS_RULES = [r.name for r in agg.rules() if r.checks_rows]


def _rows(n: int, d: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# -- the geometric median's start ----------------------------------------------------------
def _objective(x: torch.Tensor, z: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x.double() - z.double(), dim=1).sum())


@pytest.mark.parametrize("n", [5, 32, 33, 70, 257])
def test_the_start_is_no_worse_than_the_mean_and_every_group_medoid(n):
    x = _rows(n, 40, seed=n)
    z = central_point(x)
    rows = torch.linalg.vector_norm(x[:, None] - x[None], dim=2).sum(dim=0)  # F of each row
    assert _objective(x, z) <= _objective(x, x.mean(0)) * (1 + 1e-9)
    if n <= 32:  # every row is a candidate: the medoid (or an average of tied ones)
        assert _objective(x, z) <= float(rows.min()) * (1 + 1e-9)


@pytest.mark.parametrize(("n", "f"), [(20, 9), (101, 50), (300, 149)])
@pytest.mark.parametrize("where", ["first", "last", "spread"])
def test_far_byzantine_rows_do_not_drag_the_start(n, f, where):
    """f < n/2 rows at 1e12, wherever they are among the rows: the start stays near the
    honest ones (the bound of the docstring: 2 sum_honest |x_i - c| / (h - f))."""
    honest = _rows(n - f, 30, seed=1)
    byz = 1e12 + _rows(f, 30, seed=2)
    idx = {
        "first": torch.arange(n),
        "last": torch.cat([torch.arange(f, n), torch.arange(f)]),
        "spread": torch.randperm(n, generator=torch.Generator().manual_seed(3)),
    }[where]
    x = torch.cat([byz, honest])[idx]
    z = central_point(x)
    spread = torch.linalg.vector_norm(honest - honest.mean(0), dim=1)
    bound = 2 * float(spread.sum()) / (n - 2 * f) + float(spread.max())
    assert float(torch.linalg.vector_norm(z - honest.mean(0))) <= bound


@pytest.mark.parametrize("n", [10, 40])  # every row a candidate; the groups' medoids
@pytest.mark.parametrize("d", [1, 3])
def test_the_start_distances_survive_huge_rows_that_cancel_in_the_mean(n, d):
    """Two opposite rows of norm 2^40 in float32: the honest rows' products with the mean
    are lost in the rounding of 2^80, so the Gram form cannot give their distances to a
    start built from the mean; they come directly, and the geometric median is the honest
    point (the Gram form's zero distances once stopped Weiszfeld at 0.12 instead of 1)."""
    x = torch.ones(n, d)
    x[n - 3, 0], x[n - 2, 0] = 2.0**40, -(2.0**40)
    z, dist = central_point_and_distances(x)
    if dist is not None:
        direct = torch.linalg.vector_norm(x.double() - z.double(), dim=1)
        torch.testing.assert_close(dist.double(), direct, rtol=0.02, atol=1e-6)
    torch.testing.assert_close(agg.geometric_median(x, f=2), torch.ones(d), rtol=0, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_median_on_an_input_is_reached_not_crept_toward(dtype):
    """Weiszfeld approaches an input that is the geometric median only linearly: the
    relative-decrease test once stopped it at 0.0033 for 1-D inputs 0, 0, 0, 1, 1708,
    whose median is 0; in 3-D, three copies of a point outweigh the two others."""
    x = torch.tensor([[0.0], [1.0], [0.0], [1708.0], [0.0]], dtype=dtype)
    assert agg.geometric_median(x, f=2).item() == 0.0
    a = torch.tensor([0.5, -2.0, 3.0], dtype=dtype)
    y = torch.stack([a + 4.0, a, torch.tensor([9.0, 1.0, -7.0], dtype=dtype), a, a])
    assert torch.equal(agg.geometric_median(y, f=2), a)
    # Rows around an interior median: no input is returned.
    z = agg.geometric_median(_rows(7, 3, seed=5, dtype=dtype), f=3)
    assert bool(
        (torch.linalg.vector_norm(_rows(7, 3, seed=5, dtype=dtype) - z, dim=1) > 1e-3).all()
    )


def test_the_start_averages_equally_central_candidates():
    # One dimension, even n: every point between the two middle values is a geometric
    # median; the start is their average, the same after a translation.
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0]], dtype=torch.float64)
    assert central_point(x).item() == pytest.approx(1.5)
    assert central_point(x + 1e3).item() == pytest.approx(1001.5)


def test_the_start_of_rows_near_the_largest_float():
    big = torch.finfo(torch.float64).max / 4
    x = torch.tensor([[1.0], [2.0], [3.0], [big], [big]], dtype=torch.float64)
    assert central_point(x).item() == pytest.approx(2.0)


def test_weighted_start_follows_the_weights():
    x = torch.tensor([[0.0], [1.0], [10.0]], dtype=torch.float64)
    assert central_point(x, torch.tensor([1.0, 1.0, 5.0], dtype=torch.float64)).item() == 10.0


@pytest.mark.parametrize("n", [9, 64, 200])
def test_geometric_median_reaches_the_same_fixed_point_from_the_new_start(n):
    x = _rows(n, 50, seed=n)
    x[: n // 3] += 1e3  # a third far away
    z_new, _ = weiszfeld(x, tol=1e-14, max_iter=2000)
    z_mean, _ = weiszfeld(x, tol=1e-14, max_iter=2000, init=x.mean(0))
    torch.testing.assert_close(z_new, z_mean, rtol=0, atol=1e-6)


def test_the_start_needs_no_sort(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the start must not sort")

    monkeypatch.setattr(torch, "sort", refuse)
    monkeypatch.setattr(torch, "median", refuse)
    monkeypatch.setattr(torch, "kthvalue", refuse)
    x = _rows(300, 20)
    agg.geometric_median(x, f=10, max_iter=2)


# -- the NaN/inf check by the rule's first pass ----------------------------------------------
def test_the_first_pass_rules_are_the_expected_ones():
    expected = {"arc", "bucketing", "centered_clipping", "clipping", "geometric_median"}
    expected |= {"krum", "multi_krum", "nnm", "skewed_geometric_median"}
    expected |= NATIVE_FIRST_PASS
    assert expected <= set(FIRST_PASS_RULES)


# Their first pass is the C kernels' load; without a C compiler the rows are checked after.
NATIVE_FIRST_PASS = {"median", "trimmed_mean", "meamed", "weighted_median"}


@pytest.mark.parametrize("name", FIRST_PASS_RULES)
def test_finite_rows_cost_no_separate_check(name, monkeypatch):
    """The explicit row check never runs on finite rows: the first pass stands for it."""
    if name in NATIVE_FIRST_PASS and not _native.available():
        pytest.skip("no C compiler: the C kernels' load is not there to check the rows")

    def refuse(*args, **kwargs):
        raise AssertionError("separate pass over the rows")

    monkeypatch.setattr(_input, "_finite_rows", refuse)
    import byzance.aggregators._registry as registry

    monkeypatch.setattr(registry, "finite_rows", refuse)
    x = _rows(9, 6)
    params = {"seed": 0} if name == "bucketing" else {}
    agg.get(name)(x, 2, **params)


@pytest.mark.parametrize("name", [*FIRST_PASS_RULES, "arc>krum", "clipping>geometric_median"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("row", [0, 4, 8])
def test_a_non_finite_row_found_by_the_first_pass_is_dropped_and_counted(name, bad, row):
    x = _rows(9, 6)
    poisoned = x.clone()
    poisoned[row, 3] = bad
    kept = torch.ones(9, dtype=torch.bool)
    kept[row] = False
    rule = agg.get(name)
    params = {"seed": 0} if name == "bucketing" else {}
    assert torch.equal(rule(poisoned, 2, **params), rule(x[kept], 1, **params))
    worse = poisoned.clone()
    worse[(row + 1) % 9, 0] = bad
    worse[(row + 2) % 9, 5] = bad
    with pytest.raises(NonFiniteInputError, match="3 of 9 inputs"):
        rule(worse, 2, **params)


@pytest.mark.parametrize("name", ["clipping", "arc", "geometric_median", "krum", "nnm"])
def test_finite_rows_whose_norms_overflow_are_kept(name):
    x = _rows(9, 6, dtype=torch.float32)
    x[2] = 3e38  # finite; its squared norm overflows float32
    out = agg.get(name)(x, 2)
    assert bool(torch.isfinite(out).all())


def test_arc_without_clipping_still_finds_a_non_finite_row():
    # f = 0: k = 0, no norms computed; the row check is made after the rule.
    x = _rows(5, 4)
    x[1, 1] = math.nan
    with pytest.raises(NonFiniteInputError):
        agg.arc(x, 0)


def test_a_rule_called_directly_is_not_checked():
    x = _rows(5, 4)
    x[1, 1] = math.nan
    norms = agg.clipping.impl(x, 0, c=1.0)  # the bare implementation: no boundary checks
    assert bool(torch.isnan(norms[1]).any())


# -- clipping and ARC into a given tensor, and in place in pipelines -------------------------
@pytest.mark.parametrize("name", ["clipping", "arc"])
def test_out_receives_the_rows_and_the_input_is_untouched(name):
    x = _rows(10, 7)
    before = x.clone()
    buf = torch.empty_like(x)
    out = agg.get(name)(x, 2, out=buf)
    assert out.data_ptr() == buf.data_ptr()
    assert torch.equal(out, agg.get(name)(x, 2))
    assert torch.equal(x, before)


@pytest.mark.parametrize("name", ["clipping", "arc"])
def test_out_may_be_the_input_itself(name):
    x = _rows(10, 7)
    expected = agg.get(name)(x, 2)
    same = agg.get(name)(x, 2, out=x)
    assert same.data_ptr() == x.data_ptr()
    assert torch.equal(x, expected)


@pytest.mark.parametrize("name", ["clipping", "arc"])
def test_in_place_on_wide_rows_scales_only_the_clipped_rows(name, monkeypatch):
    # Wide rows take the row-by-row path: the same bits as the product over all rows.
    x = _rows(10, 5000, dtype=torch.float32) * torch.linspace(0.01, 0.1, 10)[:, None]
    expected = agg.get(name)(x, 2, c=1.0) if name == "clipping" else agg.get(name)(x, 2)
    short = torch.linalg.vector_norm(x, dim=1) <= float(
        torch.linalg.vector_norm(expected, dim=1).max()
    )
    products = []
    real_mul = torch.Tensor.mul_
    monkeypatch.setattr(torch.Tensor, "mul_", lambda t, s: products.append(1) or real_mul(t, s))
    params = {"c": 1.0} if name == "clipping" else {}
    same = agg.get(name)(x, 2, out=x, **params)
    assert same.data_ptr() == x.data_ptr()
    assert torch.equal(x, expected)
    assert len(products) == int((~short).sum()) > 0


def test_out_with_a_dropped_row_gets_the_kept_rows_first():
    x = _rows(10, 7)
    x[3, 0] = math.nan
    buf = torch.zeros_like(x)
    out = agg.clipping(x, 2, out=buf)
    keep = torch.arange(10) != 3
    assert out.shape == (9, 7)
    assert torch.equal(out, agg.clipping(x[keep], 1))
    assert torch.equal(buf[:9], out)


def test_out_is_refused_where_it_makes_no_sense():
    x = _rows(10, 7)
    with pytest.raises(InvalidParameterError, match="out= is accepted only"):
        agg.median(x, 2, out=torch.empty(7, dtype=torch.float64))
    with pytest.raises(InvalidParameterError, match="shape"):
        agg.clipping(x, 2, out=torch.empty(10, 6, dtype=torch.float64))
    with pytest.raises(InvalidParameterError, match="dtype"):
        agg.clipping(x, 2, out=torch.empty(10, 7))


def test_a_pipeline_never_writes_into_its_input():
    x = _rows(12, 9)
    before = x.clone()
    for name in ["clipping>average", "arc>krum", "nnm>clipping>median", "bucketing>arc>average"]:
        rule = agg.compose(
            *(agg.get(p, seed=1) if p == "bucketing" else agg.get(p) for p in name.split(">"))
        )
        rule(x, 2)
        assert torch.equal(x, before), name


def test_a_pipeline_scales_its_own_intermediate_rows_in_place(monkeypatch):
    """nnm>clipping: the clipping stage writes into nnm's rows, allocating nothing."""
    clipping = sys.modules["byzance.aggregators.clipping"]  # the module, not the rule
    allocated = []
    real = clipping.empty_rows

    def counting(shape, like):
        allocated.append(shape)
        return real(shape, like)

    monkeypatch.setattr(clipping, "empty_rows", counting)
    x = _rows(12, 9)
    out = agg.compose("nnm", "clipping", "average")(x, 2)
    assert allocated == []
    expected = agg.average(agg.clipping(agg.nnm(x, 2), 2), 2)
    assert torch.equal(out, expected)


def test_a_baseline_pipeline_passes_nan_through_and_checks_finite_inputs():
    x = _rows(6, 4)
    x[2, 1] = math.nan
    out = agg.compose("clipping", "average")(x, 1)
    assert bool(torch.isnan(out[1]))
