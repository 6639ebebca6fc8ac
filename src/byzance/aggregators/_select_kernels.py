"""The compiled kernels of the selection by counting passes (:mod:`._select`).

Each is the Python source of one fused pass, built once per variant (its
static parameters, the accumulation dtype) into its own function, with its
own code object and so its own ``torch.compile`` cache; n and d are dynamic,
so one kernel serves every n and d.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch

from byzance.aggregators._network import odd_even_merge_network

INF = float("inf")

# -- kernels (one Python function per variant: its own code object, its own compile cache) --
FIRST = """
def {name}(x, idx, pos, center):
    v = x.to(ACC)
    if CENTERED:
        v = torch.where(v <= center, center - v, v - center)
    rows = list(v.index_select(0, idx).unbind(0))
    for i, j in PAIRS:
        lo = torch.minimum(rows[i], rows[j])
        rows[j] = torch.maximum(rows[i], rows[j])
        rows[i] = lo
    t = torch.stack(rows).index_select(0, pos)
    counts = torch.stack([(v <= t[b]).sum(0, dtype=torch.int32) for b in range(T)])
    return t, counts, v.amin(0), v.amax(0)
"""

REFINE = """
def {name}(x, cols, center, lo, hi, t):
    v = (x.index_select(1, cols) if GATHER else x).to(ACC)
    if CENTERED:
        v = torch.where(v <= center, center - v, v - center)
    above = v > lo
    inside = above & (v <= hi)
    mn = torch.where(inside, v, INF).amin(0)
    mx = torch.where(inside, v, -INF).amax(0)
    counts, below = [], []
    for b in range(T):
        le = v <= t[b]
        counts.append(le.sum(0, dtype=torch.int32))
        below.append(torch.where(le & above, v, -INF).amax(0))
    return torch.stack(counts), torch.stack(below), mn, mx
"""

TRIMMED = """
def {name}(x, a, b):
    v = x.to(ACC)
    inner = torch.where((v > a) & (v < b), v, 0.0).sum(0)
    return inner, (v <= a).sum(0, dtype=torch.int32), (v < b).sum(0, dtype=torch.int32)
"""

NEXT = """
def {name}(x, a):
    v = x.to(ACC)
    return (v <= a).sum(0, dtype=torch.int32), torch.where(v > a, v, INF).amin(0)
"""

WINDOW = """
def {name}(x, m, dist):
    v = x.to(ACC)
    low = v <= m
    dv = torch.where(low, m - v, v - m)
    near = dv < dist
    tie = dv == dist
    tie_low = tie & low
    tie_high = tie & ~low
    i32 = torch.int32
    return (
        torch.where(near, v, 0.0).sum(0),
        torch.where(tie_low, v, 0.0).sum(0),
        torch.where(tie_high, v, 0.0).sum(0),
        torch.stack([near.sum(0, dtype=i32), tie_low.sum(0, dtype=i32), tie_high.sum(0, dtype=i32)]),
        torch.stack([
            torch.where(tie_low, v, INF).amin(0),
            torch.where(tie_low, v, -INF).amax(0),
            torch.where(tie_high, v, INF).amin(0),
            torch.where(tie_high, v, -INF).amax(0),
        ]),
    )
"""

STEP = """
def {name}(counts, below_t, mn, mx, t, lo, hi, clo, chi, rank):
    below = counts < rank
    up = ~below
    has_up = up.any(0)
    nlo = torch.maximum(torch.where(below, t, -INF).amax(0), lo)
    nclo = torch.maximum(torch.where(below, counts, 0).amax(0), clo)
    nhi = torch.where(has_up, torch.where(up, t, INF).amin(0), hi)
    nchi = torch.where(has_up, torch.where(up, counts, chi).amin(0), chi)
    last = torch.where(has_up, torch.where(up, below_t, INF).amin(0), mx)
    first_in = clo == rank - 1
    last_in = chi == rank
    at_threshold = nchi == rank
    answer = torch.where(first_in, mn, torch.where(last_in, mx, torch.where(at_threshold, last, mn)))
    done = first_in | last_in | at_threshold | (mn == mx)
    vmax = torch.minimum(mx, last)
    # Interpolation search: the rank's expected place in the new bracket's value range, and
    # thresholds one mean gap apart around it, clamped into the range.
    a = torch.maximum(nlo, mn)
    b = torch.minimum(nhi, vmax)
    m = (nchi - nclo).to(ACC)
    frac = ((rank - nclo).to(ACC) - 0.5) / m
    gap = b / m - a / m
    guess = a + (b * frac - a * frac)
    offsets = torch.arange(T, dtype=ACC, device=t.device)[:, None] - (T - 1) / 2
    tn = torch.minimum(torch.maximum(guess + offsets * gap, a), b)
    return done, answer, nlo, nhi, nclo, nchi, mn, vmax, tn
"""

_lock = threading.Lock()
_kernels: dict[tuple, Callable] = {}


EAGER_KERNELS = False
"""Run the kernels' Python code without compiling it (the same arithmetic, slowly): the
exactness tests check the algorithm this way at small sizes, in seconds."""


def compiled_kernel_count() -> int:
    """How many selection kernels this process has built (one per variant, not per n or d)."""
    return len(_kernels)


def kernel(template: str, dtype: torch.dtype, **static: Any) -> Callable:
    """The compiled kernel for ``template`` and its static parameters (built once per process)."""
    key = (template, dtype, EAGER_KERNELS, *sorted(static.items()))
    with _lock:
        fn = _kernels.get(key)
        if fn is None:
            name = "select_" + "_".join(f"{k}{v}" for k, v in sorted(static.items()))
            namespace: dict[str, Any] = {
                "torch": torch,
                "ACC": dtype,
                "INF": INF,
                "CENTERED": static.get("centered", False),
                "T": static.get("t", 0),
                "GATHER": static.get("gather", False),
                "PAIRS": odd_even_merge_network(static.get("s", 0)),
            }
            exec(template.format(name=name.replace("-", "_")), namespace)
            fn = namespace[name.replace("-", "_")]
            _kernels[key] = fn = fn if EAGER_KERNELS else torch.compile(fn, dynamic=True)
    return fn
