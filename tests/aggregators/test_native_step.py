"""The weighted-step C kernel (centered clipping's update, the average) at the shapes where
its 16-column blocks, float32 runs of 8 rows, column tails and thread tasks matter."""

from __future__ import annotations

import importlib
import itertools
import math
import shutil

import pytest
import torch

from byzance import aggregators as agg
from byzance.aggregators import _native, _native_rows

needs_native = pytest.mark.skipif(
    shutil.which("cc") is None, reason="no C compiler here: the native kernels are not built"
)
_cc_module = importlib.import_module("byzance.aggregators.centered_clipping")


def _same(a, b):
    return bool(((a == b) | (a.isnan() & b.isnan())).all())


def _reference(x, w, v, div):
    """The step in float64: v + (1 / div) sum_i w_i (x_i - v)."""
    x64 = x.double()
    v64 = torch.zeros(x.shape[1], dtype=torch.float64) if v is None else v.double()
    w64 = torch.ones(x.shape[0], dtype=torch.float64) if w is None else w.double()
    return v64 + (w64[:, None] * (x64 - v64)).sum(0) / div


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [2, 7, 8, 9, 17, 33])
@pytest.mark.parametrize("d", [1, 15, 16, 33, 1000])
@pytest.mark.parametrize(("weighted", "centered"), [(False, False), (True, False), (True, True)])
def test_the_step_equals_its_float64_definition(dtype, n, d, weighted, centered):
    gen = torch.Generator().manual_seed(n * 1000 + d)
    wide = torch.randn(n, d + 5, generator=gen, dtype=dtype) * torch.logspace(-2, 2, n)[:, None]
    x = wide[:, 3 : 3 + d]  # rows d + 5 apart: the kernel reads the row stride
    w = torch.rand(n, generator=gen, dtype=torch.float64) if weighted else None
    v = torch.randn(d, generator=gen, dtype=dtype) if centered else None
    got, finite = _native_rows.weighted_step(x, w, v, float(n))
    assert finite and got.dtype == dtype and got.shape == (d,)
    want = _reference(x, w, v, n)
    # float32: runs of 8 rows summed in float32, then float64; float64: summed directly.
    rtol = 1e-6 if dtype == torch.float32 else 1e-13
    scale = (w.abs().max() if weighted else 1.0) * (x.double() - (0 if v is None else v.double()))
    atol = float(scale.abs().max()) * n * (4e-7 if dtype == torch.float32 else 1e-15)
    torch.testing.assert_close(got.double(), want.to(dtype).double(), rtol=rtol, atol=atol)


@needs_native
def test_columns_split_across_threads_give_the_single_task_result():
    x = torch.randn(12, 50_000, generator=torch.Generator().manual_seed(1))
    w = torch.rand(12, dtype=torch.float64)
    v = torch.randn(50_000)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, _ = _native_rows.weighted_step(x, w, v, 12.0)
        torch.set_num_threads(3)  # 600,000 values: three tasks of whole 32-column chunks
        three, finite = _native_rows.weighted_step(x, w, v, 12.0)
    finally:
        torch.set_num_threads(threads)
    assert finite and torch.equal(one, three)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("column", [0, 15, 16, 40])  # first block, its last lane, the tail
def test_a_non_finite_input_or_output_is_reported(dtype, column):
    x = torch.randn(9, 41, dtype=dtype)
    assert _native_rows.weighted_step(x, None, None, 9.0)[1]
    for bad in (math.nan, math.inf, -math.inf):
        y = x.clone()
        y[4, column] = bad
        out, finite = _native_rows.weighted_step(y, None, None, 9.0)
        assert not finite
        assert torch.isfinite(out).tolist() == [j != column for j in range(41)]
    big = torch.finfo(dtype).max
    y = x.clone()
    y[:, column] = big
    out, finite = _native_rows.weighted_step(y, None, None, 9.0)
    if dtype == torch.float32 and column >= 32:  # the tail past the blocks sums in float64
        assert finite and out[column] == big
    else:  # a block's float32 run overflows; float64: the float64 sum does
        assert not finite


@needs_native
def test_the_average_is_the_kernel_with_float64_sums():
    x = torch.randn(20, 3001, generator=torch.Generator().manual_seed(2)) * 1e3
    want = x.double().mean(0).float()
    # runs of 8 float32 rows: within an ulp or two of the correctly rounded mean
    torch.testing.assert_close(agg.average(x, 0), want, rtol=3e-7, atol=1e-4)
    got = agg.average(x.double(), 0)
    torch.testing.assert_close(got, _reference(x.double(), None, None, 20), rtol=1e-14, atol=1e-12)


@needs_native
@pytest.mark.parametrize("tau", [None, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_centered_clipping_in_c_agrees_with_its_torch_path(monkeypatch, tau, dtype):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(11, 2000, generator=gen, dtype=dtype)
    x[:2] *= 50  # two far rows, clipped
    center = torch.randn(2000, generator=gen, dtype=dtype) * 0.1
    native = agg.centered_clipping(x, 2, center=center, tau=tau, iterations=3)
    monkeypatch.setattr(_native, "supports", lambda x: False)
    torch_path = agg.centered_clipping(x, 2, center=center, tau=tau, iterations=3)
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(native, torch_path, rtol=rtol, atol=rtol)


@needs_native
def test_centered_clipping_redoes_an_overflowing_step_in_float64():
    x = torch.full((5, 40), 3.0e38)
    x[0] = -3.0e38  # float32 sums of the clipped steps overflow, the float64 ones do not
    out = agg.centered_clipping(x, 1, center=torch.zeros(40), tau=1e41)
    want = (x.double().sum(0) / 5).float()
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, want)
    assert _native.supports(x)


@needs_native
def test_the_weighted_average_is_the_kernel_and_falls_back_on_overflow():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(13, 1001, generator=gen)
    w = torch.rand(13, generator=gen) + 0.1
    want = (w.double() @ x.double()) / w.double().sum()
    torch.testing.assert_close(agg.weighted_average(x, 0, weights=w), want.float())
    big = torch.full((9, 40), 3.0e38)  # a float32 run overflows: float64 sums instead
    assert torch.equal(agg.weighted_average(big, 0, weights=torch.ones(9)), big[0])
    big[2, 5] = math.nan  # a NaN in, a NaN out (the baseline drops nothing)
    got = agg.weighted_average(big, 0, weights=torch.ones(9))
    assert got[5].isnan() and torch.isfinite(got).sum() == 39


@needs_native
@pytest.mark.parametrize("rule", ["average", "weighted_average"])
def test_a_nan_column_does_not_change_the_other_columns(rule):
    # Only the non-finite columns take the fallback: a column's value never depends on another.
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(9, 200, generator=gen) * torch.logspace(-3, 3, 9)[:, None]
    fn = agg.get(rule)
    clean = fn(x, 0)
    y = x.clone()
    y[4, 7] = math.nan
    dirty = fn(y, 0)
    keep = torch.arange(200) != 7
    assert torch.equal(dirty[keep], clean[keep])


@needs_native
def test_weights_below_float32s_normal_range_keep_their_precision():
    # The float32 lanes take the weights scaled by a power of two (largest in [0.5, 1)), so a
    # weight below FLT_MIN (1.2e-38) is not cut to a subnormal or 0 (centered clipping's
    # scales tau / radius reach that range for a small tau and rows near float32's largest).
    x = torch.randn(4, 17, generator=torch.Generator().manual_seed(2))
    w = torch.full((4,), 1e-42, dtype=torch.float64)
    got, finite = _native_rows.weighted_step(x, w, None, 1.0)
    want = _reference(x, w, None, 1.0)
    assert finite
    torch.testing.assert_close(got.double(), want.float().double(), rtol=1e-6, atol=0)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_column_range_starting_mid_row_writes_only_its_columns(dtype):
    # c0 not a multiple of 16 (the wrapper's tasks start at multiples of 32, but the C takes
    # any range): blocks from c0, tail to c1, nothing written outside.
    lib = _native.library()
    fn = lib.byz_weighted_step_f64 if dtype == torch.float64 else lib.byz_weighted_step_f32
    gen = torch.Generator().manual_seed(3)
    for n in (1, 7, 9):
        for c0, c1 in ((5, 38), (17, 33), (3, 19), (0, 15), (20, 20)):
            x = torch.randn(n, 45, generator=gen, dtype=dtype)[:, :40]  # ld 45 > d 40
            w = torch.rand(n, generator=gen, dtype=torch.float64)
            v = torch.randn(40, generator=gen, dtype=dtype)
            for wp, vp in ((None, None), (w, None), (None, v), (w, v)):
                out = torch.full((40,), 7.0, dtype=dtype)
                bad = fn(
                    x.data_ptr(), n, x.stride(0), c0, c1,
                    None if wp is None else wp.data_ptr(), float(n),
                    None if vp is None else vp.data_ptr(), out.data_ptr(),
                )  # fmt: skip
                assert bad == 0
                want = _reference(x, wp, vp, n).to(dtype)
                rtol = 1e-6 if dtype == torch.float32 else 1e-14
                torch.testing.assert_close(out[c0:c1], want[c0:c1], rtol=rtol, atol=rtol)
                assert (out[:c0] == 7.0).all() and (out[c1:] == 7.0).all()


@needs_native
def test_rows_of_stride_zero():
    row = torch.randn(50, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    got, finite = _native_rows.weighted_step(row.expand(9, 50), None, None, 9.0)
    assert finite
    torch.testing.assert_close(got, row, rtol=1e-15, atol=0)


@needs_native
def test_the_wrappers_tasks_cover_disjoint_aligned_columns(monkeypatch):
    seen = []
    real = _native_rows._in_parallel

    def spy(work, bounds):
        seen.append(list(bounds))
        return real(work, bounds)

    monkeypatch.setattr(_native_rows, "_in_parallel", spy)
    monkeypatch.setattr(_native_rows, "MIN_TASK_VALUES", 1)  # split even small inputs
    gen = torch.Generator().manual_seed(5)
    for d in (1, 31, 33, 100, 1000):
        x = torch.randn(9, d, generator=gen)
        w = torch.rand(9, generator=gen, dtype=torch.float64)
        v = torch.randn(d, generator=gen)
        x[3, d - 1] = math.inf  # the flag of the last task only
        outs = []
        for tasks in (1, 2, 3, 7):
            monkeypatch.setattr(_native_rows, "_threads_wanted", lambda t=tasks: t)
            seen.clear()
            out, finite = _native_rows.weighted_step(x, w, v, 9.0)
            assert not finite
            outs.append(out)
            if seen:
                (bounds,) = seen
                assert bounds[0][0] == 0 and bounds[-1][1] == d and len(bounds) <= tasks
                assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
                assert all(c0 % _native.CHUNK_ALIGN == 0 for c0, _ in bounds)
        assert all(_same(o, outs[0]) for o in outs)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_signed_zeros_subnormals_and_zero_weights_on_infinite_rows(dtype):
    x = torch.full((3, 20), -0.0, dtype=dtype)
    out, finite = _native_rows.weighted_step(x, None, None, 3.0)
    assert finite and torch.equal(out, x.mean(0))  # +0, as torch's mean gives
    tiny = torch.finfo(dtype).smallest_normal / 4  # subnormal inputs are kept, not flushed
    sub = torch.full((5, 20), tiny, dtype=dtype)
    out, finite = _native_rows.weighted_step(sub, None, None, 5.0)
    assert finite and torch.equal(out, sub[0])
    y = torch.randn(3, 20, dtype=dtype)
    y[1, 4] = math.inf  # 0 * inf = NaN, as torch's w @ x gives: reported, not hidden
    w = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    out, finite = _native_rows.weighted_step(y, w, None, 2.0)
    assert not finite and out[4].isnan() and torch.isfinite(out).sum() == 19
    assert ((w.to(dtype) @ y) / 2)[4].isnan()


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("n", "d"), [(2, 7), (9, 1000), (20, 7001), (130, 600)])
def test_the_step_with_its_distances_equals_the_two_passes(dtype, n, d):
    # n = 130 (float32): panels under 256 columns, so one panel, the two passes in turn
    gen = torch.Generator().manual_seed(n + d)
    x = torch.randn(n, d + 3, generator=gen, dtype=dtype)[:, 1 : 1 + d]
    w = torch.rand(n, generator=gen, dtype=torch.float64)
    v = torch.randn(d, generator=gen, dtype=dtype)
    threads = torch.get_num_threads()
    try:
        for tasks in (1, 2):
            torch.set_num_threads(tasks)
            z, sq, finite = _native_rows.step_and_sq_distances(x, w, v, 3.0)
            want_z, want_finite = _native_rows.weighted_step(x, w, v, 3.0)
            assert finite == want_finite and torch.equal(z, want_z)
            want = _native_rows.sq_distances(x, z)
            rtol = 1e-6 if dtype == torch.float32 else 1e-13
            torch.testing.assert_close(sq, want, rtol=rtol, atol=0)
    finally:
        torch.set_num_threads(threads)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1.0, 1e20])  # 1e20: float32 squares overflow, redone
def test_weiszfeld_and_clipping_in_one_pass_agree_with_two(monkeypatch, dtype, scale):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(11, 3000, generator=gen, dtype=dtype) * scale
    x[:3] += 20 * scale  # three far rows
    kwargs = {"tol": 0.0, "max_iter": 6}
    one_pass = agg.geometric_median(x, 3, **kwargs)
    clipped = agg.centered_clipping(x, 3, iterations=4)
    gm_module = importlib.import_module("byzance.aggregators.geometric_median")
    monkeypatch.setattr(gm_module, "is_sharded", lambda: True)  # the two-pass iterations
    monkeypatch.setattr(_cc_module, "is_sharded", lambda: True)
    # The one-pass mean is summed in float64 where the two passes take BLAS's float32 product.
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    atol = rtol * float(x.abs().max())
    assert torch.isfinite(one_pass).all()
    two_passes = agg.geometric_median(x, 3, **kwargs)
    torch.testing.assert_close(one_pass, two_passes, rtol=rtol, atol=atol)
    torch.testing.assert_close(
        clipped, agg.centered_clipping(x, 3, iterations=4), rtol=rtol, atol=atol
    )
