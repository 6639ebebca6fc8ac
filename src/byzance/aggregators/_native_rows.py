"""The row-wise C kernels: distances from the rows to a point, the Gram matrix of a few
rows, and a weighted step from a point (centered clipping's update, the average).

Built and loaded with the coordinate-wise kernels (:mod:`._native`, which
says how and when); the C is ``_native_distances.h``, ``_native_gram.h`` and
``_native_step.h``.
Callers check :func:`takes` first.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from byzance.aggregators import _native
from byzance.aggregators._native import CHUNK_ALIGN, _in_parallel, _threads_wanted, library

# The dtypes the row-wise kernels read (others are widened or take the torch paths).
ROW_DTYPES = (torch.float32, torch.float64)
# The fewest values per thread task of the distances and the weighted step: below, one
# call costs less than handing work to the pool (tens of microseconds).
MIN_TASK_VALUES = 1 << 18


def takes(x: torch.Tensor) -> bool:
    """Whether these kernels read ``x`` (n, d) as it is: float32 or float64 on the CPU, at
    least 2 rows, with the library available (:func:`._native.supports`)."""
    return x.dtype in ROW_DTYPES and _native.supports(x)


def sq_distances(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (n,), float64, from the rows of ``x`` (n, d) to ``z`` (d,).

    Same dtype for both (float32 or float64, CPU); rows split across torch's
    thread count. Each lane sums 16 squared differences in the input's dtype,
    then in float64 (see ``_native_distances.h``).
    """
    lib = library()
    assert lib is not None
    fn = lib.byz_sq_distances_f64 if x.dtype == torch.float64 else lib.byz_sq_distances_f32
    if x.stride(-1) != 1:
        x = x.contiguous()
    if not z.is_contiguous():
        z = z.contiguous()
    n, d = x.shape
    out = torch.empty(n, dtype=torch.float64)
    args = (x.data_ptr(), x.stride(0))
    tail = (d, z.data_ptr(), out.data_ptr())
    tasks = max(1, min(_threads_wanted(), n, n * d // MIN_TASK_VALUES))
    if tasks == 1:  # the common small case, without the ranges and the pool
        fn(*args, 0, n, *tail)
        return out
    bounds = [(n * t // tasks, n * (t + 1) // tasks) for t in range(tasks)]
    _in_parallel(lambda r0, r1: fn(*args, r0, r1, *tail), bounds)
    return out


# The Gram kernel's largest n (GRAM_MAX_ROWS in _native_gram.h), and the largest for which it
# beats BLAS (measured on 2 cores at d = 1e6: Krum 8.7x -> 3.3x one pass at n = 10, 4.3x ->
# 3.8x at n = 20, but 3.0x -> 4.0x at n = 32).
GRAM_MAX_ROWS = 32
GRAM_FASTER_UP_TO = 24
# Columns per thread task of the Gram kernel, and the fewest it is used for (below, BLAS's
# single call costs less than the tasks and the partial matrices).
GRAM_MIN_COLUMNS = 1 << 16


def gram(x: torch.Tensor) -> torch.Tensor:
    """The Gram matrix ``x @ x.T`` (n, n), float64, of ``x`` (n, d) with n <= ``GRAM_MAX_ROWS``.

    float32 or float64 rows with unit column stride, CPU; columns split across
    torch's thread count, each task's partial matrix summed here. Each SIMD
    lane sums a chunk's products in the input's dtype, then in float64 (see
    ``_native_gram.h``): more accurate than a float32 BLAS product.
    """
    lib = library()
    assert lib is not None
    n, d = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    fn = getattr(lib, f"byz_gram_{'f64' if x.dtype == torch.float64 else 'f32'}")
    tasks = min(_threads_wanted(), max(1, d // GRAM_MIN_COLUMNS))
    step = -(-d // tasks)
    bounds = [(c, min(c + step, d)) for c in range(0, d, step)]
    parts = torch.zeros(len(bounds), n, n, dtype=torch.float64)
    args = (x.data_ptr(), x.stride(0), n)

    def work(c0: int, c1: int) -> int:
        t = c0 // step
        return fn(*args, c0, c1, parts[t].data_ptr())

    if any(_in_parallel(work, bounds)):
        raise ValueError(f"byzance: the Gram kernel takes at most {GRAM_MAX_ROWS} rows; got {n}")
    upper = parts.sum(0).triu()
    return upper + upper.triu(1).T


def weighted_step(
    x: torch.Tensor, weights: torch.Tensor | None, center: torch.Tensor | None, div: float
) -> tuple[torch.Tensor, bool]:
    """``center + (1 / div) sum_i weights[i] (x[i] - center)`` (d,), and whether it is finite.

    ``x`` (n, d) float32 or float64 with unit column stride, CPU; ``weights``
    (n,) (None: all ones; any dtype, read as float64); ``center`` (d,) in
    ``x``'s dtype (None: zero). One pass over the rows, summed in float64
    (float32 rows in float32 runs of 8 first; see ``_native_step.h``),
    columns split across torch's thread count above ``MIN_TASK_VALUES``;
    the flag is False when an output is NaN or infinite (a non-finite input,
    or a sum that overflowed: a float32 run, or a float64 sum).
    """
    call = _StepCall("byz_weighted_step", x, weights, center, div)
    return call.out, not any(_in_parallel(call.run, call.bounds))  # one range: no pool


def step_and_sq_distances(
    x: torch.Tensor, weights: torch.Tensor | None, center: torch.Tensor | None, div: float
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """:func:`weighted_step`'s result z (d,) and whether it is finite, with the squared
    distances (n,), float64, from the rows of ``x`` to z: one pass over memory (each panel
    of columns read again from the cache for its distances; see ``_native_step.h``).

    The distances are summed as :func:`sq_distances` sums them, so a float32 square beyond
    float32's range makes a distance infinite (callers redo such rows). Not for a block of
    a sharded evaluation: the distances here are over this block's columns only.
    """
    call = _StepCall("byz_step_distances", x, weights, center, div)
    parts = torch.zeros(len(call.bounds), x.shape[0], dtype=torch.float64)  # each task's sums
    starts = {c0: t for t, (c0, _) in enumerate(call.bounds)}
    bad = _in_parallel(lambda c0, c1: call.run(c0, c1, parts[starts[c0]].data_ptr()), call.bounds)
    return call.out, parts.sum(0) if len(call.bounds) > 1 else parts[0], not any(bad)


class _StepCall:
    """A call of the step kernel ``name`` (``x``'s dtype): its (d,) result ``out``, the
    column ranges of its thread tasks ``bounds`` (whole 32-column chunks), and the tensors
    the C reads (``x``, the weights, the center, in its layout), held here until the kernel
    returns. Kept lean: at d = 1e4 the average's kernel takes 8 us, and every microsecond
    of Python around it shows against ``torch.mean``."""

    __slots__ = ("bounds", "center", "fn", "head", "out", "tail", "weights", "x")

    def __init__(
        self,
        name: str,
        x: torch.Tensor,
        weights: torch.Tensor | None,
        center: torch.Tensor | None,
        div: float,
    ) -> None:
        assert x.is_cpu  # callers check takes(x): the C reads host memory
        fn = _KERNELS.get((name, x.dtype))
        if fn is None:
            lib = library()
            assert lib is not None and x.dtype in ROW_DTYPES
            fn = getattr(lib, f"{name}_{'f64' if x.dtype == torch.float64 else 'f32'}")
            _KERNELS[(name, x.dtype)] = fn
        n, d = x.shape
        if x.stride(1) != 1:
            x = x.contiguous()
        if weights is not None and (weights.dtype != torch.float64 or not weights.is_contiguous()):
            weights = weights.to(torch.float64).contiguous()
        if center is not None and (center.dtype != x.dtype or not center.is_contiguous()):
            center = center.to(x.dtype).contiguous()
        self.fn, self.x, self.weights, self.center = fn, x, weights, center
        self.out = out = torch.empty(d, dtype=x.dtype)
        self.head = (x.data_ptr(), n, x.stride(0))
        self.tail = (
            None if weights is None else weights.data_ptr(),
            div,
            None if center is None else center.data_ptr(),
            out.data_ptr(),
        )
        tasks = (
            1 if n * d < 2 * MIN_TASK_VALUES else min(_threads_wanted(), n * d // MIN_TASK_VALUES)
        )
        if tasks == 1:
            self.bounds = [(0, d)]
        else:
            per_task = -(-d // tasks)
            step = -(-per_task // CHUNK_ALIGN) * CHUNK_ALIGN
            self.bounds = [(c, min(c + step, d)) for c in range(0, d, step)]

    def run(self, c0: int, c1: int, *more: int) -> int:
        """The kernel on columns c0 .. c1 - 1 (``more``: step_and_sq_distances' sums)."""
        return self.fn(*self.head, c0, c1, *self.tail, *more)


# The step kernels by (name, dtype): ctypes' attribute lookup and the name cost a
# microsecond a call.
_KERNELS: dict[tuple[str, torch.dtype], Callable[..., int]] = {}
