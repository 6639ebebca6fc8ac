"""Edge cases of the native kernels (tie pass, 16-bit vector counts,
block extremes, uncounted weighted passes, meamed window sums).

Every statistic is compared with the sort-based references: medians and weighted
medians bit for bit, means to a tolerance scaled by the column's largest value
(the kernel sums in row order, the reference in sorted order), and meamed only
on the columns the kernel decides (bad == 0).
"""

from __future__ import annotations

import itertools
import math
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from byzance.aggregators import _native
from byzance.aggregators._order import (
    mean_around_median_of_sorted,
    median_of_sorted,
    trimmed_mean_of_sorted,
)
from byzance.aggregators.weighted import _sorted_weighted_median

needs_native = pytest.mark.skipif(
    shutil.which("cc") is None, reason="no C compiler here: the native kernels are not built"
)

DTYPES = [torch.float32, torch.float64]


def _close(got: torch.Tensor, want: torch.Tensor, x: torch.Tensor, mask=None) -> None:
    """|got - want| within a few ulps of the column's largest |value| times n (sum order)."""
    n = x.shape[0]
    tol = x.abs().max(dim=0).values * torch.finfo(x.dtype).eps * 4 * n
    err = (got - want).abs()
    ok = (err <= tol) | (got == want)
    if mask is not None:
        ok = ok | ~mask
    bad_cols = (~ok).nonzero().flatten()[:5].tolist()
    assert not bad_cols, (bad_cols, got[bad_cols], want[bad_cols])


def _check_all(x: torch.Tensor, trims=None, ks=None, weights=()) -> None:
    n = x.shape[0]
    rows = torch.sort(x, dim=0).values
    med, bad = _native.median(x)
    assert not bad.any()
    assert torch.equal(med, median_of_sorted(rows))
    for trim in range((n + 1) // 2) if trims is None else trims:
        got, bad = _native.trimmed_mean(x, trim)
        assert not bad.any()
        _close(got, trimmed_mean_of_sorted(rows, trim), x)
    for k in range(1, n + 1) if ks is None else ks:
        got, bad = _native.mean_around_median(x, k)
        assert not (bad & _native.BAD_NONFINITE).any()
        _close(got, mean_around_median_of_sorted(rows, k), x, mask=bad == 0)
    for w in weights:
        got, bad = _native.weighted_median(x, w)
        assert not bad.any()
        assert torch.equal(got, _sorted_weighted_median(x, w))


@needs_native
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_every_small_column_of_awkward_values(dtype, n):
    # All n-tuples of +-0.0, subnormals, 1e-30, 0.125, 1 and 1 + ulp: ties of every
    # shape, signed zeros, values with equal float32 high halves; d is not a multiple
    # of 32 or 16 (padding lanes).
    sub = torch.finfo(dtype).tiny / 4
    eps = torch.finfo(dtype).eps
    vals = [-0.0, 0.0, sub, 2 * sub, -1e-30, 0.125, 1.0, 1.0 + eps]
    if n == 5:
        vals = [-0.0, sub, -1e-30, 0.125, 1.0, 1.0 + eps]
    x = torch.tensor(list(itertools.product(vals, repeat=n)), dtype=dtype).T.contiguous()
    weights = [
        torch.ones(n, dtype=torch.float64),
        (torch.arange(n) % 2).double(),  # zero weights, equal weights otherwise
        torch.tensor([1e-15] + [1.0] * (n - 1), dtype=torch.float64),  # within the slack
        torch.tensor([3e-10] + [1.0] * (n - 1), dtype=torch.float64),  # 0 in fixed point
        torch.arange(1, n + 1, dtype=torch.float64),
    ]
    _check_all(x, weights=weights)


@needs_native
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [9, 10, 127, 128, 129])
def test_a_repeated_value_closed_by_the_tie_pass_then_reopened(dtype, n):
    # The rank's value V (0.1: mixed low bits) repeated over the middle with spread
    # values on both sides: the tie pass closes the column at V (below = rank,
    # upto = rank + 1); later passes see V's set bits (below drops to count(< V))
    # and its clear bits (upto rises to count(<= V)), which reopens the column.
    gen = torch.Generator().manual_seed(n)
    d = 35
    x = torch.randn(n, d, generator=gen, dtype=dtype) * 10
    m = n // 2
    lo, hi = max(1, m - n // 3), min(n - 1, m + n // 3 + 1)
    for j in range(d):
        v = [0.1, -0.1, 1.0 / 3.0, 3.0, 1e-30, 0.0][j % 6]
        x[lo:hi, j] = v
    x[:, 5] = 0.1  # a constant column in the same block
    x = x[torch.randperm(n, generator=gen)].contiguous()
    _check_all(
        x,
        trims=[0, 1, lo, n // 2 - 1, (n - 1) // 2],
        ks=[1, 2, hi - lo, hi - lo + 1, n - 1, n],
        weights=[torch.ones(n, dtype=torch.float64), torch.rand(n, generator=gen).double()],
    )


@needs_native
@pytest.mark.parametrize("dtype", DTYPES)
def test_values_one_ulp_apart_take_only_uncounted_weighted_passes(dtype):
    # 1 + {0..3} ulp: the highest differing bit is bit 1, so the fixed-point weighted
    # descent ends within its uncounted passes (below/upto never refreshed).
    eps = torch.finfo(dtype).eps
    gen = torch.Generator().manual_seed(7)
    for n in (2, 3, 4, 5, 8, 33):
        x = 1.0 + torch.randint(0, 4, (n, 45), generator=gen).to(dtype) * eps
        ws = [
            torch.ones(n, dtype=torch.float64),
            torch.rand(n, generator=gen).double(),
            torch.where(torch.arange(n) % 2 == 0, 0.0, 2.0).double(),
        ]
        _check_all(x, weights=ws)


@needs_native
@pytest.mark.parametrize("n", [32767, 32768])
def test_the_16_bit_and_32_bit_descents_at_their_boundary(n):
    # float32 at the last 16-bit size and the first 32-bit one: ties in the low
    # halves (1 + {0,1,2} ulp), repeated random values and signed zeros, so the tie
    # pass runs in settle16 (n = 32767) and in the 32-bit settle (n = 32768).
    gen = torch.Generator().manual_seed(n)
    eps = torch.finfo(torch.float32).eps
    v = torch.randn(3, generator=gen)
    x = torch.cat(
        [
            1.0 + torch.randint(0, 3, (n, 6), generator=gen).float() * eps,
            v[torch.randint(0, 3, (n, 6), generator=gen)],
            torch.where(torch.rand(n, 4, generator=gen) < 0.5, -0.0, 0.0),
            torch.randn(n, 3, generator=gen),
        ],
        dim=1,
    ).contiguous()
    _check_all(x, trims=[1, n // 3, (n - 1) // 2], ks=[n - 2, n], weights=[])
    w = torch.rand(n, generator=gen).double()
    got, bad = _native.weighted_median(x, w)
    assert not bad.any()
    assert torch.equal(got, _sorted_weighted_median(x, w))


@needs_native
def test_float64_ties_at_32768_rows():
    gen = torch.Generator().manual_seed(1)
    n = 32768
    v = torch.randn(3, generator=gen, dtype=torch.float64)
    x = torch.cat(
        [
            v[torch.randint(0, 3, (n, 9), generator=gen)],
            1.0 + torch.randint(0, 2, (n, 8), generator=gen).double() * 2.0**-52,
        ],
        dim=1,
    ).contiguous()
    _check_all(x, trims=[1, n // 3], ks=[n - 1], weights=[])


@needs_native
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [2, 3, 5, 40])
def test_non_finite_columns_are_flagged_from_the_extremes(dtype, n):
    big = torch.finfo(dtype).max
    gen = torch.Generator().manual_seed(n)
    specials = [
        -torch.tensor(math.nan, dtype=dtype),  # NaN with the sign bit
        torch.tensor(math.nan, dtype=dtype),
        torch.tensor(math.inf, dtype=dtype),
        torch.tensor(-math.inf, dtype=dtype),
        torch.tensor(big, dtype=dtype),  # finite: not flagged
        torch.tensor(-big, dtype=dtype),
    ]
    d = 2 * len(specials) + 5  # a partial block
    x = torch.randn(n, d, generator=gen, dtype=dtype)
    for j, s in enumerate(specials):
        x[n // 2, 2 * j] = s
        x[0, 2 * j + 1] = s
    assert torch.signbit(x[n // 2, 0]) and torch.isnan(x[n // 2, 0])
    nonfinite = ~torch.isfinite(x).all(dim=0)
    finite = ~nonfinite
    rows = torch.sort(x[:, finite], dim=0).values
    for name, args, ref in (
        ("median", (), median_of_sorted(rows)),
        ("trimmed_mean", (n // 4,), trimmed_mean_of_sorted(rows, n // 4)),
        ("mean_around_median", (max(1, n - 1),), mean_around_median_of_sorted(rows, max(1, n - 1))),
        ("weighted_median", (torch.ones(n, dtype=torch.float64),), None),
    ):
        got, bad = getattr(_native, name)(x, *args)
        assert torch.equal((bad & _native.BAD_NONFINITE) != 0, nonfinite), name
        if name == "median":
            assert torch.equal(got[finite], ref)
        elif ref is not None:
            _close(got[finite], ref, x[:, finite], mask=bad[finite] == 0)
        else:
            assert torch.equal(got[finite], _sorted_weighted_median(x[:, finite], args[0]))


@needs_native
@pytest.mark.parametrize("dtype", DTYPES)
def test_meamed_ties_at_the_kth_distance(dtype):
    # Columns symmetric about the median (ties below and above at every distance),
    # k = 1 .. n; equal tie values are decided by the kernel, distinct ones may be
    # flagged. The lowest window is the reference's choice.
    cols = [
        [0.0, 1.0, 2.0],
        [0.0, 1.0, 1.0, 2.0],
        [-1.0, 0.0, 0.0, 1.0, 1.0],
        [1.0, 1.0, 1.0, 1.0, 1.0],
        [-2.0, -1.0, 0.0, 1.0, 2.0],
        [-0.0, 0.0, -0.0, 0.0, 0.0],
        [0.125, 0.25, 0.375, 0.5, 0.625],
        [-3.0, 1.0, 1.0, 1.0, 5.0],
    ]
    for col in cols:
        x = torch.tensor(col, dtype=dtype)[:, None].repeat(1, 33)
        x[:, 1::2] = -x[:, 1::2]
        _check_all(x)


@needs_native
@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(
    n=st.integers(2, 70),
    d=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    kind=st.sampled_from(["eighths", "few", "tiny", "subnormal", "ulps"]),
    dtype=st.sampled_from(DTYPES),
)
def test_quantized_and_tiny_data_equal_the_sort(n, d, seed, kind, dtype):
    gen = torch.Generator().manual_seed(seed)
    if kind == "eighths":
        x = torch.randint(-12, 13, (n, d), generator=gen).to(dtype) * 0.125
    elif kind == "few":
        x = torch.randn(3, generator=gen, dtype=dtype)[torch.randint(0, 3, (n, d), generator=gen)]
    elif kind == "tiny":
        x = torch.randint(-3, 4, (n, d), generator=gen).to(dtype) * 1e-30
    elif kind == "subnormal":
        x = torch.randint(-4, 5, (n, d), generator=gen).to(dtype) * (torch.finfo(dtype).tiny / 8)
    else:
        x = 1.0 + torch.randint(0, 4, (n, d), generator=gen).to(dtype) * torch.finfo(dtype).eps
    x[:, ::4] = torch.randn(n, x[:, ::4].shape[1], generator=gen, dtype=dtype)
    w = torch.randint(0, 3, (n,), generator=gen).double()
    if float(w.sum()) == 0:
        w[0] = 1.0
    _check_all(
        x,
        trims=sorted({0, n // 4, (n - 1) // 2}),
        ks=sorted({1, n // 2 + 1, n - n // 4, n}),
        weights=[w, torch.ones(n, dtype=torch.float64)],
    )
