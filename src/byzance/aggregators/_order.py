"""Coordinate-wise order statistics over the n rows of an (n, d) tensor.

The coordinate-wise rules (median, trimmed mean, mean around the median, the
second phase of Bulyan) need, for every coordinate, some order statistics of
its n values. ``torch.median(x, dim=0)`` or ``torch.sort(x, dim=0)`` cost 15x
to 80x one pass over the input on a CPU, because they sort each strided column
separately.

Here each statistic is written once, as a function of the n rows sorted
coordinate-wise (a list of (d,) tensors, or one sorted (n, d) tensor). Two
ways to get the sorted rows:

- eager: ``torch.sort(x, dim=0)``; used for small inputs, every non-CPU
  device, or when compilation is off or unavailable. On CUDA this is the
  path: for the n <= 4096 values of each coordinate, torch sorts every column
  in one segmented (bitonic, shared-memory) kernel, which reads the input
  about once, and the statistic is a few elementwise passes over the sorted
  (n, d) tensor; it runs on the input's device with no host synchronization.
- compiled: Batcher's odd-even merge sorting network over the n rows
  (``torch.minimum``/``torch.maximum`` of whole rows), followed by the
  statistic, traced by ``torch.compile`` into one fused loop over d. The
  comparators run in registers, the comparators the statistic does not need
  are removed as dead code, and the cost is close to reading the input once.
  One kernel is compiled per (statistic, n, parameters, dtype); d is dynamic;
  used for 2 <= n < ``select_min_rows`` when the native kernels are not, or
  in mode ``always`` below ``native_min_rows``: at n = 20 it runs at
  1.8x-4x one pass against 5x-9x for the native kernels, but its first
  call at each new n compiles for seconds (a minute for meamed at n = 50),
  which client sampling and dropped stragglers would pay round after round.

- native (CPU, float dtypes, every n >= 2 in compile mode ``auto``, n >=
  ``native_min_rows`` in mode ``always``; the first choice when available):
  radix descent over the float bits in C, one
  cache-resident block of columns at a time (:mod:`byzance.aggregators._native`):
  3x-3.6x one pass for a median from n = 50 to 1000, with n and d
  runtime arguments (nothing compiled per shape; the library is built once
  per machine and cached). Columns holding a non-finite value, and the rare
  ties that counts cannot decide, are computed by the sort.
- selection (``n >= select_min_rows``, CPU, when the native library is not
  available): the order statistics the
  statistic needs are found by a few fused counting passes over the n rows
  (:mod:`byzance.aggregators._select`), with n and d dynamic: one kernel per
  variant serves every n (no compilation per n), and the result is the
  sort's. Columns holding a non-finite value, and the rare ties that counts
  cannot decide, are computed by the sort.

``BYZANCE_COMPILE=auto|always|never`` (or :func:`set_compile_mode`) chooses:
``auto`` compiles CPU inputs of at least 2**20 elements that the native
kernels do not take, ``always`` every CPU input (and the network below
``native_min_rows`` rows); ``never`` also turns the native kernels off (pure torch: the sort). Only CPU kernels are compiled: a CUDA kernel from ``torch.compile``
(Triton) is not built or tested by byzance's test suite, so CUDA inputs
always take the eager path.

float16 and bfloat16 inputs are sorted in their own dtype (the order is
exact) and the statistic is computed in float32 (sums, midpoints, the
median window's comparisons), then rounded once to the input dtype.
"""

from __future__ import annotations

import functools
import math
import operator
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch

from byzance.aggregators import _native, _select
from byzance.aggregators._input import first_pass, first_pass_armed
from byzance.aggregators._network import network_kernel
from byzance.aggregators._shard import is_sharded, whole_numel

Rows = Sequence[torch.Tensor] | torch.Tensor
Statistic = Callable[..., torch.Tensor]
CompileMode = Literal["auto", "always", "never"]

AUTO_MIN_ELEMENTS = 1 << 20
MAX_NETWORK_ROWS = 128
# Inputs of at least this many rows take selection (counting passes) instead of the
# network: one kernel for every n, and fewer operations per value for large n.
select_min_rows = 129
# In compile mode ``always``, CPU inputs of at least this many rows take the C radix descent
# (:mod:`._native`) and smaller ones the compiled network (mode ``auto``: the C kernels at every n).
native_min_rows = 33
_HALF = (torch.float16, torch.bfloat16)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype sums are taken in for ``dtype``: float32 for float16/bfloat16, else itself."""
    return torch.float32 if dtype in _HALF else dtype


# -- statistics of coordinate-wise sorted rows ---------------------------------
def _total(rows: Rows) -> torch.Tensor:
    if isinstance(rows, torch.Tensor):
        return rows.sum(dim=0)
    return functools.reduce(operator.add, rows)


def median_of_sorted(rows: Rows) -> torch.Tensor:
    """Median of sorted rows (n of shape (d,)): the middle row, or the mean of the two middle rows."""
    n = len(rows)
    if n % 2:
        return rows[n // 2].clone()  # not a view: the (d,) result must not hold the (n, d) sort
    return rows[n // 2 - 1] * 0.5 + rows[n // 2] * 0.5  # halves first: no overflow near the max


def trimmed_mean_of_sorted(rows: Rows, trim: int) -> torch.Tensor:
    """Mean of sorted rows ``trim .. n - trim - 1`` (the ``trim`` lowest and highest dropped)."""
    n = len(rows)
    return _total(rows[trim : n - trim]) / (n - 2 * trim)


def mean_around_median_of_sorted(rows: Rows, k: int) -> torch.Tensor:
    """Mean of the ``k`` values closest to the median, coordinate-wise.

    The k values nearest to the median m form a window of k consecutive sorted
    values r[i .. i+k-1]: one where no value outside is closer to m than a
    value inside, i.e. ``m - r[i-1] >= r[i+k-1] - m`` and
    ``r[i+k] - m >= m - r[i]`` (a missing neighbour passes). When ties allow
    several such windows, the lowest is taken. The window is then summed
    directly (a masked sum, never a difference of sums, so a huge value
    outside it cannot cancel the small ones inside).
    """
    n = len(rows)
    med = median_of_sorted(rows)
    best_start = torch.full_like(rows[0], float(n - k))  # the data dtype keeps the loop vectorized
    for i in range(n - k, -1, -1):  # descending, so the lowest valid window is kept
        valid = torch.ones_like(rows[0], dtype=torch.bool)
        if i > 0:
            valid = valid & (med - rows[i - 1] >= rows[i + k - 1] - med)
        if i < n - k:
            valid = valid & (rows[i + k] - med >= med - rows[i])
        best_start = torch.where(valid, float(i), best_start)
    if isinstance(rows, torch.Tensor):
        j = torch.arange(n, device=rows.device, dtype=rows.dtype)[:, None]
        inside = (j >= best_start) & (j < best_start + k)
        return torch.where(inside, rows, 0.0).sum(dim=0) / k
    total = [
        torch.where((best_start <= j) & (best_start + k > j), r, 0.0) for j, r in enumerate(rows)
    ]
    return _total(total) / k


# -- dispatch ----------------------------------------------------------------------
_state_lock = threading.Lock()
_compiled: dict[tuple, Callable] = {}
_compile_failed = False
_mode: CompileMode = "auto"


def set_compile_mode(mode: CompileMode) -> None:
    """Choose when coordinate-wise rules use compiled kernels: auto, always or never."""
    global _mode
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"compile mode must be 'auto', 'always' or 'never'; got {mode!r}")
    _mode = mode


def compile_mode() -> CompileMode:
    """The current compile mode (see :func:`set_compile_mode`)."""
    return _mode


def _init_mode_from_env() -> None:
    env = os.environ.get("BYZANCE_COMPILE", "auto").strip().lower()
    if env in ("0", "off", "false", "no"):
        env = "never"
    if env in ("1", "on", "true", "yes"):
        env = "always"
    set_compile_mode(env if env in ("auto", "always", "never") else "auto")  # type: ignore[arg-type]


_init_mode_from_env()


def _compilable(x: torch.Tensor) -> bool:
    if _compile_failed or _mode == "never" or x.device.type != "cpu":
        return False  # compiled CUDA (Triton) kernels are not built or tested here
    if not x.dtype.is_floating_point or x.shape[0] < 2:
        return False
    # whole_numel: a block of a sharded evaluation takes the path the whole input would
    return _mode == "always" or whole_numel(x) >= AUTO_MIN_ELEMENTS


def _use_compiled(x: torch.Tensor) -> bool:
    """The compiled sorting network: CPU inputs of 2 .. ``MAX_NETWORK_ROWS`` rows."""
    return x.shape[0] <= MAX_NETWORK_ROWS and x.shape[0] < select_min_rows and _compilable(x)


def native_takes(x: torch.Tensor) -> bool:
    """Whether the C kernels (:mod:`._native`) take ``x``: in compile mode ``auto`` every input
    they support (CPU floats, n >= 2; nothing is compiled per shape), in mode ``always`` those of
    at least ``native_min_rows`` rows (below, the compiled network is faster once compiled, but
    it compiles once per n), in mode ``never`` none."""
    if _mode == "never" or not _native.supports(x):
        return False
    return _mode == "auto" or x.shape[0] >= native_min_rows


def _use_native(x: torch.Tensor, statistic: Statistic) -> bool:
    """Radix descent in C (:mod:`._native`) for the statistics it implements (:func:`native_takes`)."""
    return statistic in _SELECTORS and native_takes(x)


def _native_statistic(
    x: torch.Tensor,
    statistic: Statistic,
    params: dict[str, Any],
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """The statistic by :mod:`._native` (of ``x[rows]``, read in place, if given); shape (d,),
    x's dtype. Columns it leaves take the sort."""
    name = _SELECTORS[statistic]
    if name == "median":
        out, bad = _native.median(x, rows)
    elif name == "trimmed_mean":
        out, bad = _native.trimmed_mean(x, params["trim"], rows)
    else:
        out, bad = _native.mean_around_median(x, params["k"], rows)
    report_native_rows(bad)
    out = out.to(x.dtype)
    if bool(bad.any()):
        cols = bad.nonzero().flatten()
        out[cols] = _sorted_statistic(_columns(x, cols, rows), statistic, params)
    return out


def _columns(x: torch.Tensor, cols: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """The columns ``cols`` of ``x`` (of its ``rows`` only, if given): a small gathered copy."""
    return x[:, cols] if rows is None else x.index_select(1, cols).index_select(0, rows)


def report_native_rows(bad: torch.Tensor) -> None:
    """Report the kernel's load as the rule's first pass over the rows (see
    :func:`~byzance.aggregators._input.first_pass`): the rows are finite unless a
    column was flagged ``BAD_NONFINITE`` (codes ``bad`` (d,) from :mod:`._native`).

    Raises ``NonFiniteRows`` then, before the sort computes the flagged columns
    of a result that will be discarded. Not on a block of a sharded evaluation:
    another block (another rank) may not take the C kernels, and every block
    must report alike, so the caller's row check stands there.
    """
    if first_pass_armed() and not is_sharded():
        first_pass(not bool((bad & _native.BAD_NONFINITE).any()))


def _use_selection(x: torch.Tensor, statistic: Statistic) -> bool:
    """Selection by counting passes: CPU inputs of at least ``select_min_rows`` rows."""
    return statistic in _SELECTORS and x.shape[0] >= select_min_rows and _compilable(x)


def _compile_failure(err: Exception) -> None:
    global _compile_failed
    _compile_failed = True
    warnings.warn(
        f"byzance: compiling the coordinate-wise kernel failed ({type(err).__name__}: "
        f"{err}); falling back to torch.sort, which is correct but slower. "
        "Set BYZANCE_COMPILE=never to silence this.",
        RuntimeWarning,
        stacklevel=4,
    )


def _sorted_statistic(
    x: torch.Tensor, statistic: Statistic, params: dict[str, Any]
) -> torch.Tensor:
    """The statistic of ``x`` (n, c) sorted by ``torch.sort`` along dim 0; shape (c,), x's dtype."""
    rows = torch.sort(x, dim=0).values
    acc = accumulation_dtype(x.dtype)
    if acc != x.dtype:
        rows = rows.to(acc)
    return statistic(rows, **params).to(x.dtype)


def _select_statistic(
    x: torch.Tensor, statistic: Statistic, params: dict[str, Any]
) -> torch.Tensor:
    """The statistic by selection (:mod:`._select`); shape (d,), x's dtype."""

    def fallback(sub: torch.Tensor) -> torch.Tensor:
        return _sorted_statistic(sub, statistic, params)

    name = _SELECTORS[statistic]
    if name == "median":
        return _select.select_median(x, fallback)
    if name == "trimmed_mean":
        return _select.select_trimmed_mean(x, params["trim"], fallback)
    return _select.select_mean_around_median(x, params["k"], fallback)


def reduce_sorted(
    x: torch.Tensor, statistic: Statistic, rows: torch.Tensor | None = None, **params: Any
) -> torch.Tensor:
    """Apply ``statistic`` to the rows of ``x`` (n, d) sorted coordinate-wise; shape (d,).

    The result is on ``x``'s device, in ``x``'s dtype (computed in float32 for
    half precision). Large CPU inputs take a compiled path: the sorting
    network for few rows, selection by counting passes (:mod:`._select`) for
    many; both give the sort's result. ``rows`` (m,): the statistic of
    ``x[rows]``, which the C kernels read in place (no (m, d) copy); the
    other paths gather the rows first.
    """
    if rows is not None:
        if rows.numel() >= 2 and _use_native(x, statistic):
            out = _native_statistic(x, statistic, params, rows)
            return _without_overflow(out, x, statistic, params, rows)
        x = x.index_select(0, rows)
    if _use_native(x, statistic):
        return _without_overflow(_native_statistic(x, statistic, params), x, statistic, params)
    if _use_selection(x, statistic):
        try:
            out = _select_statistic(x.contiguous(), statistic, params)
            return _without_overflow(out, x, statistic, params)
        except Exception as err:  # no C++ compiler, unsupported platform, ...
            _compile_failure(err)
    elif _use_compiled(x):
        key = (
            statistic.__name__,
            x.shape[0],
            tuple(sorted(params.items())),
            x.dtype,
            x.device.type,
        )
        try:
            with _state_lock:
                fn = _compiled.get(key)
                if fn is None:
                    kernel = network_kernel(
                        functools.partial(statistic, **dict(key[2])),
                        x.shape[0],
                        accumulation_dtype(x.dtype),
                    )
                    fn = _compiled[key] = torch.compile(kernel, dynamic=True)
            return _without_overflow(fn(x.contiguous()), x, statistic, params)
        except Exception as err:  # no C++ compiler, unsupported platform, ...
            _compile_failure(err)
    return _without_overflow(_sorted_statistic(x, statistic, params), x, statistic, params)


def _without_overflow(
    out: torch.Tensor,
    x: torch.Tensor,
    statistic: Statistic,
    params: dict[str, Any],
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """``out`` (the statistic of ``x``, or of ``x[rows]``), with its coordinates that
    overflowed (inf, or NaN from inf - inf) recomputed.

    A mean of values near the dtype's largest finite value overflows in that
    dtype although the mean itself is finite. Those coordinates are computed
    again in float64 on rows scaled by a power of two 2^-ceil(log2 n) (exact),
    so that no sum of n rows can overflow, and scaled back. One host
    synchronization (is any output non-finite?) on the (d,) result; the
    common path is otherwise unchanged.
    """
    if math.isfinite(out.sum().item()):  # one scalar, no (d,) mask (an overflowing sum: below)
        return out
    bad = ~torch.isfinite(out)
    if not bool(bad.any()):
        return out
    cols = bad.nonzero().flatten()
    sub = _columns(x, cols, rows)
    scale = 2.0 ** -math.ceil(math.log2(max(sub.shape[0], 2)))
    ordered = torch.sort(sub.to(torch.float64) * scale, dim=0).values
    fixed = (statistic(ordered, **params) / scale).to(out.dtype)
    out = out.clone()
    out[cols] = fixed
    return out


def coordinate_median(x: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise median of ``x`` (n, d), shape (d,); mean of the two middle values for even n."""
    return reduce_sorted(x, median_of_sorted)


def coordinate_trimmed_mean(x: torch.Tensor, trim: int) -> torch.Tensor:
    """Coordinate-wise mean of ``x`` (n, d) without its ``trim`` lowest and highest values."""
    return reduce_sorted(x, trimmed_mean_of_sorted, trim=trim)


def coordinate_mean_around_median(
    x: torch.Tensor, k: int, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """Coordinate-wise mean of the ``k`` values of ``x`` (n, d) (of ``x[rows]``, if given)
    closest to the median."""
    return reduce_sorted(x, mean_around_median_of_sorted, rows, k=k)


_SELECTORS: dict[Statistic, str] = {
    median_of_sorted: "median",
    trimmed_mean_of_sorted: "trimmed_mean",
    mean_around_median_of_sorted: "meamed",
}
