"""The coordinate-wise kernels: sorting network, statistics, compiled path."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch

from byzance.aggregators import _order
from byzance.aggregators._network import odd_even_merge_network
from byzance.aggregators._order import (
    coordinate_mean_around_median,
    coordinate_median,
    coordinate_trimmed_mean,
    set_compile_mode,
)


def apply_network(x: torch.Tensor) -> torch.Tensor:
    rows = list(x.unbind(0))
    for i, j in odd_even_merge_network(x.shape[0]):
        assert i < j
        rows[i], rows[j] = torch.minimum(rows[i], rows[j]), torch.maximum(rows[i], rows[j])
    return torch.stack(rows)


@pytest.mark.parametrize("n", range(1, 13))
def test_network_sorts_every_zero_one_input(n):
    # The 0-1 principle: a comparator network that sorts all 2^n binary inputs sorts all inputs.
    x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=n))).T.reshape(n, -1)
    assert torch.equal(apply_network(x), torch.sort(x, dim=0).values)


@pytest.mark.parametrize("n", [13, 20, 31, 33, 50, 64, 70])
def test_network_sorts_random_inputs(n):
    x = torch.randn(n, 500, generator=torch.Generator().manual_seed(n))
    assert torch.equal(apply_network(x), torch.sort(x, dim=0).values)


def test_network_size_is_batchers():
    assert len(odd_even_merge_network(20)) == 103
    assert len(odd_even_merge_network(16)) == 63
    assert odd_even_merge_network(1) == ()


def brute_mean_around_median(x: torch.Tensor, k: int) -> torch.Tensor:
    """Per coordinate: the lowest window of k sorted values that is a set of k nearest to the median.

    A window is a k-nearest set when no value outside it is strictly closer to
    the median than a value inside it.
    """
    out = []
    for column in x.T.tolist():
        s = sorted(column)
        n = len(s)
        med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
        for i in range(n - k + 1):
            inside = [abs(v - med) for v in s[i : i + k]]
            outside = [abs(v - med) for v in s[:i] + s[i + k :]]
            if max(inside) <= min(outside, default=float("inf")):
                break
        out.append(sum(s[i : i + k]) / k)
    return torch.tensor(out, dtype=x.dtype)


@pytest.mark.parametrize("n", [2, 5, 7, 10])
def test_mean_around_median_with_ties_matches_brute_force(n):
    # Small integers: many tied values and tied distances to the median.
    gen = torch.Generator().manual_seed(n)
    x = torch.randint(-3, 4, (n, 400), generator=gen).double()
    for k in range(1, n + 1):
        assert torch.allclose(coordinate_mean_around_median(x, k), brute_mean_around_median(x, k))


def test_mean_around_median_review_cases():
    # Median 0 of {-1, -1, 0, .5, .7}; the 4 nearest are {0, .5, .7, -1}: mean 0.05.
    x = torch.tensor([[-1.0], [-1.0], [0.0], [0.5], [0.7]])
    assert coordinate_mean_around_median(x, 4).item() == pytest.approx(0.05)
    x = torch.tensor([[0.0], [0.0], [0.3], [0.5], [0.55]])
    assert coordinate_mean_around_median(x, 4).item() == pytest.approx(0.3375)


@pytest.mark.parametrize("n", [1, 2, 3, 6, 11])
def test_statistics_against_brute_force(n):
    x = torch.randn(n, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    s = torch.sort(x, dim=0).values
    med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    assert torch.allclose(coordinate_median(x), med)
    for trim in range((n - 1) // 2 + 1):
        assert torch.allclose(coordinate_trimmed_mean(x, trim), s[trim : n - trim].mean(0))
    for k in range(1, n + 1):
        assert torch.allclose(coordinate_mean_around_median(x, k), brute_mean_around_median(x, k))


def test_mean_around_median_keeps_small_values_next_to_huge_ones():
    # A sliding window sum would subtract 1e30 and lose the small values.
    x = torch.tensor([[-1e30], [1.0], [2.0], [3.0], [4.0]], dtype=torch.float32)
    # Median 2; the window [1, 2, 3] reaches 1, so the mean is exactly 2.
    assert coordinate_mean_around_median(x, 3).item() == 2.0


@pytest.fixture
def compiled():
    set_compile_mode("always")
    yield
    set_compile_mode("auto")


@pytest.mark.compiled
@pytest.mark.parametrize(
    ("dtype", "n"), [(torch.float32, 8), (torch.float64, 7)], ids=["f32-n8", "f64-n7"]
)
def test_compiled_kernels_match_eager(compiled, dtype, n):
    x = torch.randn(n, 3001, dtype=dtype, generator=torch.Generator().manual_seed(0))
    x[0, :5] = 1e30  # huge values must not cancel small ones
    f = (n - 1) // 4
    cases = [
        (coordinate_median, {}),
        (coordinate_trimmed_mean, {"trim": f}),
        (coordinate_mean_around_median, {"k": n - f}),
    ]
    for fn, params in cases:
        got = fn(x, **params)
        set_compile_mode("never")
        want = fn(x, **params)
        set_compile_mode("always")
        assert got.dtype == dtype and got.shape == (3001,)
        torch.testing.assert_close(got, want)


def test_auto_mode_compiles_only_large_cpu_inputs():
    set_compile_mode("auto")
    assert not _order._use_compiled(torch.zeros(20, 1000))
    assert _order._use_compiled(torch.zeros(20, 1 << 20)) == (not _order._compile_failed)
    assert not _order._use_compiled(torch.zeros(1, 1 << 21))
    set_compile_mode("never")
    assert not _order._use_compiled(torch.zeros(20, 1 << 20))
    set_compile_mode("auto")
    with pytest.raises(ValueError, match="compile mode"):
        set_compile_mode("sometimes")  # type: ignore[arg-type]


def test_a_failed_compilation_falls_back_with_one_warning(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(_order, "_compiled", {})
    monkeypatch.setattr(_order, "_compile_failed", False)
    set_compile_mode("always")
    try:
        x = torch.randn(5, 10)
        with pytest.warns(RuntimeWarning, match="falling back to torch.sort"):
            out = coordinate_median(x)
        assert torch.equal(out, torch.median(x, dim=0).values)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            coordinate_median(x)  # no second warning: the fallback is remembered
    finally:
        set_compile_mode("auto")


def test_large_n_takes_selection_and_small_n_the_network():
    set_compile_mode("auto")
    try:
        median = _order.median_of_sorted
        big = torch.zeros(_order.select_min_rows, 1 << 14)
        assert _order._use_selection(big, median) == (not _order._compile_failed)
        assert not _order._use_compiled(big)
        assert not _order._use_selection(torch.zeros(20, 1 << 20), median)
        assert not _order._use_selection(big.to(torch.int64), median)
        assert not _order._use_selection(big, lambda rows: rows[0])  # no selection form
        set_compile_mode("never")
        assert not _order._use_selection(big, median)
    finally:
        set_compile_mode("auto")


def test_a_failed_selection_compile_falls_back_with_a_warning(monkeypatch):
    from byzance.aggregators import _select_kernels

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(_select_kernels, "_kernels", {})
    monkeypatch.setattr(_order, "_compile_failed", False)
    monkeypatch.setattr(_order, "select_min_rows", 2)
    set_compile_mode("always")
    try:
        x = torch.randn(9, 10)
        with pytest.warns(RuntimeWarning, match="falling back to torch.sort"):
            out = coordinate_trimmed_mean(x, 2)
        assert torch.allclose(out, torch.sort(x, dim=0).values[2:7].mean(0))
    finally:
        set_compile_mode("auto")
