"""Batcher's odd-even merge sorting network (shared by the compiled coordinate-wise paths:
the sorting network of :mod:`._order` and the counting passes of :mod:`._select`), and the
Python kernel that applies it for ``torch.compile``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch


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


_KERNEL_TEMPLATE = """
def {name}(x):
    rows = list(x.unbind(0))
    for i, j in PAIRS:
        lo = torch.minimum(rows[i], rows[j])
        rows[j] = torch.maximum(rows[i], rows[j])
        rows[i] = lo
    rows = [r.to(ACC) for r in rows]
    return STATISTIC(rows).to(x.dtype)
"""


def network_kernel(statistic: Callable[..., torch.Tensor], n: int, acc: torch.dtype) -> Callable:
    """``statistic`` (of the n sorted rows, each summed in ``acc``) after sorting the n rows of
    its input with the network: a fresh Python function, with its own code object and so its
    own ``torch.compile`` cache."""
    name = f"sorted_{getattr(statistic, 'func', statistic).__name__}_{n}"
    namespace: dict[str, Any] = {
        "torch": torch,
        "ACC": acc,
        "PAIRS": odd_even_merge_network(n),
        "STATISTIC": statistic,
    }
    exec(_KERNEL_TEMPLATE.format(name=name), namespace)
    return namespace[name]
