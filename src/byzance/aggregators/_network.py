"""Batcher's odd-even merge sorting network (shared by the compiled and the C kernels)."""

from __future__ import annotations

import functools


@functools.cache
def odd_even_merge_network(n: int) -> tuple[tuple[int, int], ...]:
    """Comparators (i, j), i < j, of Batcher's odd-even merge sort for n wires.

    Applying ``(lo, hi) = (min, max)`` to wires i and j in order sorts any input
    ascending. O(n log^2 n) comparators (103 for n = 20).
    """
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return tuple(pairs)
