"""The C radix-descent kernels (_native) at the shapes where blocks, tails and threads matter.

test_select_exact.py checks the statistics against the sort with hypothesis
at small sizes; here the sizes exercise the 32-column (float32) and
16-column (float64) blocks with partial last blocks, the split of columns
across threads, larger n, and the fallback when no library can be built.
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from byzance.aggregators import _native, _native_rows, _order
from byzance.aggregators._order import (
    mean_around_median_of_sorted,
    median_of_sorted,
    trimmed_mean_of_sorted,
)
from byzance.aggregators._pairwise import distances_to
from byzance.aggregators.weighted import _sorted_weighted_median

needs_native = pytest.mark.skipif(
    shutil.which("cc") is None, reason="no C compiler here: the native kernels are not built"
)


def _assert_statistics_equal_the_sort(x: torch.Tensor) -> None:
    """The median (bit for bit), trimmed mean and meamed (on the columns it decides) of x."""
    n = x.shape[0]
    rows = torch.sort(x, dim=0).values
    median, bad = _native.median(x)
    assert not bad.any()
    assert torch.equal(median, median_of_sorted(rows))
    trim = n // 5
    trimmed, _ = _native.trimmed_mean(x, trim)
    torch.testing.assert_close(trimmed, trimmed_mean_of_sorted(rows, trim))
    k = n - n // 4
    around, bad = _native.mean_around_median(x, k)
    decided = bad == 0
    torch.testing.assert_close(around[decided], mean_around_median_of_sorted(rows, k)[decided])


@needs_native
def test_the_library_builds_where_there_is_a_compiler():
    assert _native.available()


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("n", "d"), [(33, 1), (64, 31), (257, 33), (1000, 70), (40, 1045)])
def test_statistics_equal_the_sort_across_blocks_and_threads(dtype, n, d):
    gen = torch.Generator().manual_seed(n * d)
    x = torch.randn(n, d, generator=gen, dtype=dtype)
    x[:, ::3] = torch.randint(-2, 3, (n, x[:, ::3].shape[1]), generator=gen).to(dtype)  # ties
    rows = torch.sort(x, dim=0).values
    trim, k = n // 5, n - n // 4
    median, bad = _native.median(x)
    assert not bad.any()
    assert torch.equal(median, median_of_sorted(rows))
    trimmed, _ = _native.trimmed_mean(x, trim)
    torch.testing.assert_close(trimmed, trimmed_mean_of_sorted(rows, trim))
    around, bad = _native.mean_around_median(x, k)
    want = mean_around_median_of_sorted(rows, k)
    decided = bad == 0
    torch.testing.assert_close(around[decided], want[decided])


@needs_native
def test_the_codes_tell_a_non_finite_column_from_an_undecided_tie():
    # Column 0: 1e-8 and 2e-8 are both at float32 distance 1.0 from the median 1.0, and only
    # one of them is taken (an undecidable tie); column 1 also holds an infinity.
    col = [1e-8, 2e-8, 1.0, 1.5, 5.0]
    x = torch.tensor([col, [*col[:4], math.inf], [0.0, 1.0, 2.0, 3.0, 4.0]]).T.contiguous()
    _, bad = _native.mean_around_median(x, 3)
    assert bad[0].item() == _native.BAD_TIE
    assert bad[1].item() & _native.BAD_NONFINITE
    assert bad[2].item() == 0
    _, bad = _native.median(x)
    assert bad.tolist() == [0, _native.BAD_NONFINITE, 0]


@needs_native
@pytest.mark.parametrize("n", [5, 6, 33, 100, 40_000])
def test_values_that_differ_only_in_their_low_bits(n):
    # float32 keys with equal high halves (1 + i ulp) need the short descent's second
    # phase; mixed with columns of spread values that close in the first. Beyond 32767
    # rows the 16-bit counts would overflow: the 32-bit descent takes them.
    gen = torch.Generator().manual_seed(n)
    ulps = torch.randint(0, 60, (n, 40), generator=gen).to(torch.float32)
    x = 1.0 + ulps * torch.finfo(torch.float32).eps
    x[:, ::3] = torch.randn(n, x[:, ::3].shape[1], generator=gen)
    x[:, 1::5] = -x[:, 1::5]
    _assert_statistics_equal_the_sort(x)


@needs_native
def test_half_precision_is_widened_exactly():
    x = torch.randn(41, 77, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    want = median_of_sorted(torch.sort(x, dim=0).values.float()).to(torch.bfloat16)
    assert torch.equal(_order.coordinate_median(x), want)


@needs_native
def test_every_thread_count_gives_the_same_bits():
    x = torch.randn(50, 32 * 7 + 5, generator=torch.Generator().manual_seed(2))
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(_native.trimmed_mean(x, 5)[0])
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(r, results[0]) for r in results)


def test_a_failed_build_warns_once_and_the_sort_answers(monkeypatch, tmp_path):
    monkeypatch.setenv("BYZANCE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", shutil.which("false") or "false")
    monkeypatch.setattr(_native, "_lib", None)
    monkeypatch.setattr(_native, "_tried", False)
    with pytest.warns(RuntimeWarning, match="native coordinate-wise kernels are unavailable"):
        assert not _native.available()
    assert not _native.available()  # decided once per process: no second warning
    x = torch.randn(40, 9, generator=torch.Generator().manual_seed(3))
    want = median_of_sorted(torch.sort(x, dim=0).values)
    assert torch.equal(_order.coordinate_median(x), want)


def test_byzance_native_0_turns_the_kernels_off(monkeypatch):
    monkeypatch.setenv("BYZANCE_NATIVE", "0")
    monkeypatch.setattr(_native, "_lib", None)
    monkeypatch.setattr(_native, "_tried", False)
    assert not _native.available()
    assert not _order._use_native(torch.zeros(64, 64), median_of_sorted)


@needs_native
@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    n=st.integers(2, 70),
    d=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    weights=st.sampled_from(["equal", "integers", "zeros", "uniform", "tiny"]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_weighted_median_equals_the_sort(n, d, seed, weights, dtype):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-3, 4, (n, d), generator=gen).to(dtype)  # ties
    x[:, d // 2 :] = torch.randn(n, d - d // 2, generator=gen, dtype=dtype)
    w = {
        "equal": torch.ones(n, dtype=dtype),
        "integers": torch.randint(0, 4, (n,), generator=gen).to(dtype),
        "zeros": torch.where(torch.arange(n) % 3 == 0, 0.0, 1.0).to(dtype),
        "uniform": torch.rand(n, generator=gen, dtype=dtype),
        # Weights within the 1e-12 W slack: the kernel's second descent, not the next key.
        "tiny": torch.where(torch.arange(n) % 4 == 1, 1e-15, 1.0).to(dtype),
    }[weights]
    if float(w.sum()) == 0:
        w[0] = 1.0
    got, bad = _native.weighted_median(x, w)
    assert not bad.any()
    assert torch.equal(got, _sorted_weighted_median(x, w))


@needs_native
def test_the_fixed_point_weighted_descent_is_checked_in_float64():
    # Cumulative weights 2e-9 W past W/2, or reaching it exactly (1 + 1 + 1 of 6): rounded
    # to 2^-30 of the total, the weights can put a cut on the wrong side of W/2 (they do
    # for 1, 1, 1, 3), and the float64 check sends the block to the float64 descent.
    w = torch.tensor([0.5 - 1e-9, 2e-9, 0.5 - 1e-9], dtype=torch.float64)
    w2 = torch.tensor([1.0, 1.0, 1.0, 3.0], dtype=torch.float64)
    for weights, rows in ((w, 3), (w2, 4)):
        x = torch.stack(
            [torch.randperm(rows, generator=torch.Generator().manual_seed(c)) for c in range(64)],
            dim=1,
        ).float()
        got, bad = _native.weighted_median(x, weights)
        assert not bad.any()
        assert torch.equal(got, _sorted_weighted_median(x, weights))


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("n", "d"), [(2, 1), (3, 255), (7, 4097), (33, 10_000)])
def test_squared_distances_match_float64(dtype, n, d):
    gen = torch.Generator().manual_seed(n + d)
    big = torch.randn(n, d + 9, generator=gen, dtype=dtype) * torch.logspace(-3, 3, n)[:, None]
    x = big[:, 4 : 4 + d]  # rows d + 9 apart: the kernel reads the row stride
    z = torch.randn(d, generator=gen, dtype=dtype)
    want = (x.double() - z.double()).square().sum(dim=1)
    got = _native_rows.sq_distances(x, z)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-6 if dtype == torch.float32 else 1e-13, atol=0)


@needs_native
def test_squared_distances_of_non_finite_rows_are_not_finite():
    x = torch.randn(4, 3000)
    x[1, 5], x[2, 2999] = math.nan, math.inf
    got = _native_rows.sq_distances(x, torch.zeros(3000))
    assert torch.isfinite(got).tolist() == [True, False, False, True]
    big = torch.full((2, 10), 1e30)  # squares beyond float32's range: redone in float64
    torch.testing.assert_close(distances_to(big, torch.zeros(10)), torch.full((2,), 1e30 * 10**0.5))


@needs_native
def test_a_changing_small_n_compiles_nothing_in_auto_mode(monkeypatch):
    # Large enough for the compiled network in auto mode; the C kernels take every n instead.
    monkeypatch.setattr(_order, "_compiled", {})
    _order.set_compile_mode("auto")
    for n in (3, 4, 5, 8):
        x = torch.randn(n, (1 << 20) // n + 1)
        want = median_of_sorted(torch.sort(x, dim=0).values)
        assert torch.equal(_order.coordinate_median(x), want)
    assert _order._compiled == {}


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [100, 33_000])
def test_quantized_values_equal_the_sort(dtype, n):
    # Few distinct values, each repeated: the descents' tie pass closes intervals that
    # no cut can split (16-bit low halves, and full 32- and 64-bit keys beyond 32767 rows).
    gen = torch.Generator().manual_seed(n)
    x = (torch.randint(-8, 9, (n, 48), generator=gen) * 0.125).to(dtype)
    x[:, ::4] *= 1e-30  # tiny values: the tie sits deep in the mantissa bits
    _assert_statistics_equal_the_sort(x)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_non_finite_value_is_flagged_from_the_columns_extremes(dtype):
    # +inf, -inf, NaN and a NaN with its sign bit set, each alone in its column; the
    # largest finite values of either sign are not flagged.
    big = torch.finfo(dtype).max
    x = torch.zeros(7, 6, dtype=dtype)
    x[3, 0], x[3, 1], x[3, 2] = math.inf, -math.inf, math.nan
    x[3, 3] = -torch.tensor(math.nan, dtype=dtype)
    x[:, 4], x[:, 5] = big, -big
    assert torch.signbit(x[3, 3])
    for _, bad in (_native.median(x), _native.trimmed_mean(x, 1), _native.mean_around_median(x, 5)):
        assert bad.tolist() == [_native.BAD_NONFINITE] * 4 + [0, 0]


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("n", "d"), [(2, 1), (3, 7), (7, 100), (20, 5000), (32, 70_001)])
def test_gram_matches_float64_product(dtype, n, d):
    # Tiles of 3 x 3 rows (n not a multiple of 3 repeats the last row, unstored), chunks
    # with a tail shorter than a vector, a column slice (row stride above d), two tasks.
    gen = torch.Generator().manual_seed(n + d)
    wide = torch.randn(n, d + 5, generator=gen, dtype=dtype) + 3.0
    x = wide[:, 2 : 2 + d]
    want = x.double() @ x.double().T
    got = _native_rows.gram(x)
    assert got.dtype == torch.float64 and torch.equal(got, got.T)
    torch.testing.assert_close(got, want, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=0)


@needs_native
def test_pairwise_distances_take_the_gram_kernel_for_few_wide_rows(monkeypatch):
    from byzance.aggregators import _pairwise

    calls = []
    real = _native_rows.gram
    monkeypatch.setattr(_native_rows, "gram", lambda x: calls.append(x.shape) or real(x))
    x = torch.randn(
        12, _native_rows.GRAM_MIN_COLUMNS + 3, generator=torch.Generator().manual_seed(1)
    )
    dist = _pairwise.sq_distances(x)
    assert calls == [x.shape]
    want = torch.cdist(x.double(), x.double()).square()
    torch.testing.assert_close(dist.double(), want, rtol=1e-5, atol=1e-3)
    assert torch.equal(dist.diagonal(), torch.zeros(12))


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_a_subset_of_rows_is_read_in_place(dtype):
    # The kernels take row indices: the statistic of x[rows] without the gathered copy
    # (bfloat16 is widened anyway, so only those rows are gathered and widened).
    gen = torch.Generator().manual_seed(3)
    wide = torch.randn(40, 300, generator=gen).to(dtype)
    x = wide[:, 5:250]  # a column slice: rows 300 apart
    rows = torch.tensor([31, 2, 17, 8, 39, 0, 22, 5, 11])
    sub = x[rows]
    for name, args in (("median", ()), ("trimmed_mean", (2,)), ("mean_around_median", (6,))):
        got = getattr(_native, name)(x, *args, rows)
        want = getattr(_native, name)(sub, *args)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@needs_native
def test_bulyan_reads_its_selected_rows_in_place(monkeypatch):
    from byzance.aggregators import _order, bulyan

    seen = []
    real = _native._run
    monkeypatch.setattr(
        _native,
        "_run",
        lambda name, x, *a, rows=None: seen.append((x, rows)) or real(name, x, *a, rows=rows),
    )
    x = torch.randn(11, 1000, generator=torch.Generator().manual_seed(4))
    got = bulyan(x, 2)
    ((arg, rows),) = seen
    assert arg.data_ptr() == x.data_ptr() and rows is not None and rows.numel() == 7
    assert torch.equal(got, _order.coordinate_mean_around_median(x[rows], 3))


@needs_native
def test_an_overflowing_mean_of_some_rows_is_recomputed_from_those_rows():
    # float32 sums of values near the largest finite one overflow; the recomputation in
    # float64 must gather the same rows the kernel read in place.
    big = torch.finfo(torch.float32).max
    x = torch.full((9, 40), big / 2)
    x[::2] = -big / 4  # rows left out: including them would change the mean
    rows = torch.tensor([1, 3, 5, 7, 8])
    got = _order.coordinate_mean_around_median(x, 4, rows=rows)
    want = _order.coordinate_mean_around_median(x[rows], 4)
    assert torch.isfinite(got).all()
    assert torch.equal(got, want)
