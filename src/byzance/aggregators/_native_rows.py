"""The row-wise C kernels: distances from the rows to a point, and the Gram matrix of a few rows.

Built and loaded with the coordinate-wise kernels (:mod:`._native`, which
says how and when); the C is ``_native_distances.h`` and ``_native_gram.h``.
Callers check :func:`._native.supports` first.
"""

from __future__ import annotations

import torch

from byzance.aggregators._native import _in_parallel, _threads_wanted, library


def sq_distances(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (n,), float64, from the rows of ``x`` (n, d) to ``z`` (d,).

    Same dtype for both (float32 or float64, CPU); rows split across torch's
    thread count. Each lane sums 16 squared differences in the input's dtype,
    then in float64 (see ``_native_distances.h``).
    """
    lib = library()
    assert lib is not None
    if x.stride(-1) != 1:
        x = x.contiguous()
    z = z.contiguous()
    n, d = x.shape
    out = torch.empty(n, dtype=torch.float64)
    fn = getattr(lib, f"byz_sq_distances_{'f64' if x.dtype == torch.float64 else 'f32'}")
    args = (x.data_ptr(), x.stride(0))
    tasks = max(1, min(_threads_wanted(), n))
    bounds = [(n * t // tasks, n * (t + 1) // tasks) for t in range(tasks)]

    def work(r0: int, r1: int) -> int:
        return fn(*args, r0, r1, d, z.data_ptr(), out.data_ptr())

    _in_parallel(work, bounds)
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
