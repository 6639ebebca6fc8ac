"""Selection (_select's counting passes, _native's radix descent) against the sort, exactly.

Each selection path is forced at small sizes (``select_min_rows`` or
``native_min_rows`` lowered, compile mode ``always``), so that hypothesis can
afford many small inputs:
ties, +-0.0, subnormals, the largest finite values, odd and even n, float32,
float64 and bfloat16. Order statistics and medians must be the sort's values
bit for bit (0.0 and -0.0 compare equal, as in the sort); means may differ
only by the order of float summation.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from byzance.aggregators import _native, _order, _select, _select_kernels
from byzance.aggregators._order import (
    coordinate_mean_around_median,
    coordinate_median,
    coordinate_trimmed_mean,
    set_compile_mode,
)

SETTINGS = settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

F32_TINY = torch.finfo(torch.float32).smallest_normal
PALETTE = [0.0, -0.0, 1.0, -1.0, 2.5, 1e-42, -1e-42, F32_TINY, 3.0, -7.0, 1e30, -1e30]
HUGE = [1e300, -1e300, 5e299]  # stand for the dtype's largest finite value, its negative, half


def _force_counting(monkeypatch):
    monkeypatch.setattr(_select_kernels, "EAGER_KERNELS", True)
    monkeypatch.setattr(_order, "select_min_rows", 2)
    monkeypatch.setattr(_order, "native_min_rows", 1 << 30)
    set_compile_mode("always")
    yield
    set_compile_mode("auto")
    assert not _order._compile_failed  # an error inside selection would hide behind the sort


@pytest.fixture
def counting(monkeypatch):
    """Counting passes for every input of at least 2 rows, run eagerly (same arithmetic)."""
    yield from _force_counting(monkeypatch)


@pytest.fixture(params=["counting", "native"])
def forced(request, monkeypatch):
    """Each selection path in turn for every input of at least 2 rows."""
    if request.param == "native":
        if not _native.available():
            pytest.skip("no C compiler here: the native kernels are not built")
        monkeypatch.setattr(_order, "native_min_rows", 2)
        set_compile_mode("always")
        yield
        set_compile_mode("auto")
        return
    yield from _force_counting(monkeypatch)


@pytest.fixture
def forced_compiled(monkeypatch):
    """Selection for every input of at least 2 rows, its kernels compiled."""
    monkeypatch.setattr(_order, "select_min_rows", 2)
    monkeypatch.setattr(_order, "native_min_rows", 1 << 30)
    set_compile_mode("always")
    yield
    set_compile_mode("auto")
    assert not _order._compile_failed  # an error inside selection would hide behind the sort


def sort_path(fn, x, **params):
    set_compile_mode("never")
    try:
        return fn(x, **params)
    finally:
        set_compile_mode("always")


@st.composite
def matrices(draw, max_n=15, huge=False, dtypes=(torch.float32, torch.bfloat16)):
    n = draw(st.integers(2, max_n))
    d = draw(st.integers(2, 6))
    palette = PALETTE + HUGE if huge else PALETTE
    kind = draw(st.sampled_from(["palette", "normal", "mixed"]))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    normal = torch.randn(n, d, generator=gen, dtype=torch.float64)
    picks = torch.tensor(palette, dtype=torch.float64)[
        torch.randint(len(palette), (n, d), generator=gen)
    ]
    if kind == "palette":
        x = picks
    elif kind == "normal":
        x = normal
    else:
        x = torch.where(torch.rand(n, d, generator=gen) < 0.5, picks, normal)
    dtype = draw(st.sampled_from(dtypes))
    big = torch.finfo(dtype).max
    x = torch.where(x.abs() == 1e300, x.sign() * big, torch.where(x == 5e299, big / 2, x))
    return x.to(dtype)


def assert_same_order_statistic(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype == want.dtype
    assert torch.equal(got, want), (got, want)


def assert_same_mean(got: torch.Tensor, want: torch.Tensor, x: torch.Tensor) -> None:
    """Equal up to the order of float summation: n eps times the column's largest
    magnitude (huge values that cancel leave only rounding, not the small ones)."""
    assert got.dtype == want.dtype
    rtol, atol = {torch.bfloat16: (1e-2, 0.0), torch.float32: (1.3e-6, 1e-5)}.get(
        want.dtype, (1e-7, 1e-7)
    )  # torch.testing.assert_close's defaults, bfloat16 looser
    both_zero = (got == 0) & (want == 0)  # float sums may end at +0.0 or -0.0
    acc = torch.float32 if x.dtype == torch.bfloat16 else x.dtype
    cancel = x.shape[0] * torch.finfo(acc).eps * x.double().abs().max(0).values  # per column
    err = (torch.where(both_zero, 0.0, got.double()) - want.double()).abs()
    limit = cancel + rtol * want.double().abs() + atol
    assert bool((err <= limit).all()), (got, want, limit)


ALL_DTYPES = (torch.float32, torch.float64, torch.bfloat16)


@SETTINGS
@given(x=matrices(huge=True, dtypes=ALL_DTYPES))
def test_select_ranks_equal_the_sort(counting, x):
    n = x.shape[0]
    acc = torch.float32 if x.dtype == torch.bfloat16 else x.dtype
    srt = torch.sort(x.to(acc), dim=0).values
    ranks = sorted({1, n, (n + 1) // 2, n // 2 + 1})
    vals, bad = _select.select_ranks(x, ranks)
    assert not bad.any()
    for r, k in enumerate(ranks):
        assert_same_order_statistic(vals[r], srt[k - 1])


@SETTINGS
@given(x=matrices(), data=st.data())
def test_distances_to_a_centre_equal_the_sort(counting, x, data):
    n = x.shape[0]
    acc = torch.float32 if x.dtype == torch.bfloat16 else x.dtype
    v = x.to(acc)
    centre = v[data.draw(st.integers(0, n - 1))]
    dist = torch.where(v <= centre, centre - v, v - centre)
    k = data.draw(st.integers(1, n))
    vals, _ = _select.select_ranks(x, [k], center=centre)
    assert_same_order_statistic(vals[0], torch.sort(dist, dim=0).values[k - 1])


@SETTINGS
@given(x=matrices(huge=True, dtypes=ALL_DTYPES))
def test_median_equals_the_sort(forced, x):
    assert_same_order_statistic(coordinate_median(x), sort_path(coordinate_median, x))


@SETTINGS
@given(x=matrices(huge=True), data=st.data())
def test_trimmed_mean_equals_the_sort(forced, x, data):
    trim = data.draw(st.integers(0, (x.shape[0] - 1) // 2))
    got = coordinate_trimmed_mean(x, trim)
    assert_same_mean(got, sort_path(coordinate_trimmed_mean, x, trim=trim), x)


@SETTINGS
@given(x=matrices(huge=True), data=st.data())
def test_mean_around_median_equals_the_sort(forced, x, data):
    k = data.draw(st.integers(1, x.shape[0]))
    got = coordinate_mean_around_median(x, k)
    assert_same_mean(got, sort_path(coordinate_mean_around_median, x, k=k), x)


@pytest.mark.parametrize("n", [99, 100])
def test_ties_and_clusters_at_the_selection_sizes(forced, n):
    # Heavy ties, a tight cluster between huge outliers (value-spaced thresholds split it
    # slowly: the sort fallback must finish it), and plain Gaussian columns.
    gen = torch.Generator().manual_seed(n)
    ties = torch.randint(-2, 3, (n, 64), generator=gen).float()
    cluster = 1.0 + torch.randint(0, 40, (n, 64), generator=gen).float() * 2.0**-20
    cluster[: n // 5] = 3e38
    cluster[n // 5 : n // 3] = -3e38
    gauss = torch.randn(n, 64, generator=gen)
    x = torch.cat([ties, cluster, gauss], dim=1)
    f = n // 10
    assert_same_order_statistic(coordinate_median(x), sort_path(coordinate_median, x))
    for fn, params in [
        (coordinate_trimmed_mean, {"trim": f}),
        (coordinate_mean_around_median, {"k": n - f}),
    ]:
        assert_same_mean(fn(x, **params), sort_path(fn, x, **params), x)


@pytest.mark.parametrize("n", [7, 8])
def test_float64_statistics_with_ties_and_huge_values(forced, n):
    gen = torch.Generator().manual_seed(n)
    big = torch.finfo(torch.float64).max
    palette = torch.tensor(
        [0.0, -0.0, 1.0, 1.0, -2.0, 5e-324, big, -big, 0.5, 3.0], dtype=torch.float64
    )
    x = palette[torch.randint(len(palette), (n, 40), generator=gen)]
    assert torch.isfinite(x).all()
    x[:, :10] = torch.randn(n, 10, generator=gen, dtype=torch.float64)
    for fn, params in [
        (coordinate_trimmed_mean, {"trim": 2}),
        (coordinate_mean_around_median, {"k": n - 2}),
    ]:
        assert_same_mean(fn(x, **params), sort_path(fn, x, **params), x)


def test_non_finite_columns_take_the_sort(forced):
    x = torch.randn(9, 6, generator=torch.Generator().manual_seed(3))
    x[2, 1] = float("nan")
    x[4, 3] = float("inf")
    x[5, 4] = -float("inf")
    for fn, params in [
        (coordinate_median, {}),
        (coordinate_trimmed_mean, {"trim": 2}),
        (coordinate_mean_around_median, {"k": 7}),
    ]:
        got, want = fn(x, **params), sort_path(fn, x, **params)
        torch.testing.assert_close(got, want, equal_nan=True)


def _median_and_trim(sizes: list[tuple[int, int]], gen: torch.Generator) -> None:
    """The median (checked against the sort) and a trimmed mean of random (n, d) inputs."""
    for n, d in sizes:
        x = torch.randn(n, d, generator=gen)
        assert torch.equal(coordinate_median(x), sort_path(coordinate_median, x))
        coordinate_trimmed_mean(x, n // 10)


def test_kernels_are_built_per_variant_not_per_n(counting):
    """Every kernel is keyed by its variant and dtype, never by n or d (run eagerly: seconds)."""
    gen = torch.Generator().manual_seed(0)
    _median_and_trim([(90, 257), (130, 1000), (77, 2)], gen)
    kernels = _select_kernels.compiled_kernel_count()
    _median_and_trim([(91, 257), (143, 1000), (64, 2), (101, 300)], gen)
    assert _select_kernels.compiled_kernel_count() == kernels


# Compiling the selection kernels from a cold cache takes over a minute on 2 cores: this
# test runs when BYZANCE_COMPILED_TESTS=1 (the benchmarks exercise the compiled path).
@pytest.mark.compiled
@pytest.mark.skipif(
    os.environ.get("BYZANCE_COMPILED_TESTS") != "1", reason="set BYZANCE_COMPILED_TESTS=1"
)
def test_a_second_n_does_not_compile_again(forced_compiled):
    from torch._dynamo.utils import counters

    gen = torch.Generator().manual_seed(0)
    _median_and_trim([(90, 257), (130, 1000), (77, 2)], gen)  # builds each path's kernels
    kernels = _select_kernels.compiled_kernel_count()
    graphs = counters["stats"]["unique_graphs"]
    _median_and_trim([(91, 257), (143, 1000), (64, 2), (101, 300)], gen)  # other n, same kernels
    assert _select_kernels.compiled_kernel_count() == kernels
    assert counters["stats"]["unique_graphs"] == graphs
