"""Exact coordinate-wise order statistics by selection (counting passes), not sorting.

For large n a sort along dim 0 costs 80x-150x one pass over the input on a
CPU. Here the k-th smallest value of every column of ``x`` (n, d) is found by
a few fused counting passes over the n rows (compiled by ``torch.compile``
with n and d dynamic, so one kernel serves every n and d):

1. ``s`` strided rows (s = 32, or 64 for n >= 512) are sorted coordinate-wise
   by a sorting network; the sample values around the target quantile are the
   first thresholds (data values). One pass counts ``#(x <= t_b)`` for each of
   them and takes each column's min and max (a non-finite min or max sends
   the column to the sort fallback). A column whose bracket top holds rank k
   exactly is resolved (the threshold is a data value).
2. Each unresolved (column, rank) keeps a bracket ``(lo, hi]`` with
   ``#(x <= lo) < k <= #(x <= hi)``. A refining pass counts T thresholds
   placed by interpolation search (one mean gap apart around the rank's
   interpolated place in the bracket's value range) and takes, in the same
   loop, the bracket's min and max and the largest value below each
   threshold. Rank k is resolved when it is the first or last value of the
   bracket, the last value below a threshold, or when the bracket holds one
   distinct value; otherwise the bracket narrows to one sub-interval. The
   pass reads every column while more than a quarter are pending, and only
   the pending ones (gathered inside the kernel, never copied) after that.
3. Columns still unresolved after ``MAX_REFINE`` passes (adversarial
   clusters) are sorted with ``torch.sort`` (exact, slower).

Every answer is a data value found by comparisons only: the result is the
sort's, bit for bit (``-0.0`` and ``0.0`` compare equal, as in the sort).
Inputs are compared in the statistic's accumulation dtype (float32 for
float16/bfloat16, which holds them exactly).

The statistics (median, trimmed mean, mean around the median) then need one
more fused pass at most: the trimmed mean sums the values strictly between
its two order statistics and adds the boundary values times their
multiplicities; the mean around the median selects the (n - f)-th smallest
distance to the median the same way, then sums the window with the sort
definition's tie rule (the lowest window wins). Columns whose tie at the
window's edge cannot be decided from counts fall back to the sort.
Extra memory: O(T d) for the thresholds and counts, no (n, d) temporary.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from byzance.aggregators._select_kernels import (
    FIRST,
    INF,
    NEXT,
    REFINE,
    STEP,
    TRIMMED,
    WINDOW,
    kernel,
)

REFINE_THRESHOLDS = 8  # thresholds per refining pass
FIRST_WINDOW = 12  # sample order statistics around each target in the first pass
MAX_REFINE = 8  # refining passes before the remaining columns are sorted

Fallback = Callable[[torch.Tensor], torch.Tensor]


# -- selection ---------------------------------------------------------------------
def _sample_size(n: int) -> int:
    return 32 if n < 512 else 64


def _first_positions(ranks: list[int], n: int, s: int) -> list[int]:
    """Sample positions (0-based, in the sorted sample) around each target rank's estimate."""
    pos: list[int] = []
    for group in _groups(ranks, n, s):
        centre = round(sum(group) / len(group) * s / n - 0.5)
        start = min(max(centre - FIRST_WINDOW // 2 + 1, 0), max(s - FIRST_WINDOW, 0))
        pos.extend(min(start + i, s - 1) for i in range(FIRST_WINDOW))
    return pos


def _groups(ranks: list[int], n: int, s: int) -> list[list[int]]:
    """Ranks whose sample windows would overlap share one window."""
    groups: list[list[int]] = []
    for k in sorted(ranks):
        if groups and (k - groups[-1][0]) * s / n < FIRST_WINDOW / 4:
            groups[-1].append(k)
        else:
            groups.append([k])
    return groups


def select_ranks(
    x: torch.Tensor, ranks: list[int], center: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``ranks``-th smallest values (1-based) of every column of ``x`` (n, d).

    With ``center`` (d,) the values are the distances ``|x - center|``
    computed as the sort-based statistics do (``center - x`` below it,
    ``x - center`` above it, in the accumulation dtype).

    Returns:
        ``(values, bad)``: values of shape (len(ranks), d) in the accumulation
        dtype (exact data values), and a (d,) bool mask of the columns that
        hold a non-finite value (their values are unspecified: the caller
        computes them another way).
    """
    n, d = x.shape
    acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    s = _sample_size(n)
    dev = x.device
    idx = torch.tensor([(2 * i + 1) * n // (2 * s) for i in range(s)], device=dev)
    pos_list = _first_positions(ranks, n, s)
    pos = torch.tensor(pos_list, device=dev)
    ctr = center if center is not None else torch.zeros(2, dtype=acc, device=dev)
    first = kernel(FIRST, acc, centered=center is not None, s=s, t=len(pos_list))
    t, counts, vmin, vmax = first(x, idx, pos, ctr)
    bad = ~(torch.isfinite(vmin) & torch.isfinite(vmax))
    out = torch.empty((len(ranks), d), dtype=acc, device=dev)
    cols = torch.arange(d, device=dev)
    for r, k in enumerate(ranks):
        # The first pass's thresholds are data values: the largest value <= t_b is t_b.
        state = _State(
            cols=cols,
            row=torch.full_like(cols, r),
            rank=torch.full((d,), k, dtype=torch.int32, device=dev),
            lo=torch.full((d,), -INF, dtype=acc, device=dev),
            hi=torch.full((d,), INF, dtype=acc, device=dev),
            clo=torch.zeros(d, dtype=torch.int32, device=dev),
            chi=torch.full((d,), n, dtype=torch.int32, device=dev),
        )
        _refine(x, out, state, (counts, t, vmin, vmax, t), bad, center, acc)
    return out, bad


class _State:
    """The pending (column, rank) pairs and their brackets ``(lo, hi]``, all of shape (V,)."""

    def __init__(self, **fields: torch.Tensor) -> None:
        self.cols, self.row, self.rank = fields["cols"], fields["row"], fields["rank"]
        self.lo, self.hi, self.clo, self.chi = (
            fields["lo"],
            fields["hi"],
            fields["clo"],
            fields["chi"],
        )


def _refine(
    x: torch.Tensor,
    out: torch.Tensor,
    st: _State,
    first: tuple[torch.Tensor, ...],
    bad: torch.Tensor,
    center: torch.Tensor | None,
    acc: torch.dtype,
) -> None:
    """Narrow the brackets of the pending (column, rank) pairs; write the answers into ``out``."""
    d = x.shape[1]
    gathered = kernel(REFINE, acc, centered=center is not None, t=REFINE_THRESHOLDS, gather=True)
    step = kernel(STEP, acc, t=REFINE_THRESHOLDS)
    counts, below_t, mn, mx, t = first
    for i in range(MAX_REFINE + 1):
        done, answer, lo, hi, clo, chi, vmin, vmax, t = step(
            counts, below_t, mn, mx, t, st.lo, st.hi, st.clo, st.chi, st.rank
        )
        if i == 0:
            done = done | bad
        out[st.row[done], st.cols[done]] = answer[done]
        keep = (~done).nonzero().flatten()
        if keep.numel() == 0:
            return
        st = _State(
            cols=st.cols[keep],
            row=st.row[keep],
            rank=st.rank[keep],
            lo=lo[keep],
            hi=hi[keep],
            clo=clo[keep],
            chi=chi[keep],
        )
        vmin, vmax, t = vmin[keep], vmax[keep], t[:, keep]
        if i == MAX_REFINE:
            break
        ctr = center[st.cols] if center is not None else vmin
        if 4 * st.cols.numel() > d:  # gathering costs ~4x per column; cols are distinct
            counts, below_t, mn, mx = _full_width(
                x, st.cols, ctr, st.lo, st.hi, t, center is not None, acc
            )
        elif st.cols.numel() == 1:  # a size-1 dimension would compile a kernel of its own
            two = torch.zeros(2, dtype=st.cols.dtype, device=x.device)
            res = gathered(x, st.cols[two], ctr[two], st.lo[two], st.hi[two], t[:, two])
            counts, below_t, mn, mx = (r[..., :1] for r in res)
        else:
            counts, below_t, mn, mx = gathered(x, st.cols, ctr, st.lo, st.hi, t)
    # Adversarial clusters: sort the few columns left.
    v = x[:, st.cols].to(acc)
    if center is not None:
        c = center[st.cols]
        v = torch.where(v <= c, c - v, v - c)
    srt = torch.sort(v, dim=0).values
    out[st.row, st.cols] = srt.gather(0, (st.rank.long() - 1)[None])[0]


def _full_width(
    x: torch.Tensor,
    cols: torch.Tensor,
    ctr: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    t: torch.Tensor,
    centered: bool,
    acc: torch.dtype,
) -> tuple[torch.Tensor, ...]:
    """The refining pass over every column (cheaper than gathering when most are pending)."""
    d = x.shape[1]

    def wide(v: torch.Tensor, fill: float) -> torch.Tensor:
        out = torch.full((*v.shape[:-1], d), fill, dtype=v.dtype, device=v.device)
        out[..., cols] = v
        return out

    refine_pass = kernel(REFINE, acc, centered=centered, t=t.shape[0], gather=False)
    res = refine_pass(
        x, cols, wide(ctr, 0.0) if centered else ctr, wide(lo, 0.0), wide(hi, 0.0), wide(t, 0.0)
    )
    return tuple(r[..., cols] for r in res)


# -- statistics --------------------------------------------------------------------
def _fix_bad(out: torch.Tensor, bad: torch.Tensor, x: torch.Tensor, fallback: Fallback) -> None:
    if bool(bad.any()):
        cols = bad.nonzero().flatten()
        out[cols] = fallback(x[:, cols]).to(out.dtype)


def _median_from(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = x.shape[0]
    if n % 2:
        vals, bad = select_ranks(x, [n // 2 + 1])
        return vals[0], bad
    vals, bad = select_ranks(x, [n // 2])
    lower = vals[0]
    # The next value: the same one if it is repeated, else the smallest value above it.
    at_most, above = kernel(NEXT, lower.dtype)(x, lower)
    upper = torch.where(at_most > n // 2, lower, above)
    return lower * 0.5 + upper * 0.5, bad  # halves first, as median_of_sorted


def select_median(x: torch.Tensor, fallback: Fallback) -> torch.Tensor:
    """Coordinate-wise median of ``x`` (n, d), shape (d,), in ``x``'s dtype (as ``median_of_sorted``)."""
    med, bad = _median_from(x)
    out = med.to(x.dtype)
    _fix_bad(out, bad, x, fallback)
    return out


def select_trimmed_mean(x: torch.Tensor, trim: int, fallback: Fallback) -> torch.Tensor:
    """Mean of the values of ranks ``trim + 1 .. n - trim`` of every column of ``x`` (n, d); (d,)."""
    n = x.shape[0]
    vals, bad = select_ranks(x, [trim + 1, n - trim])
    a, b = vals[0], vals[1]
    acc = a.dtype
    inner, le_a, lt_b = kernel(TRIMMED, acc)(x, a, b)
    low = (le_a - trim).to(acc)  # copies of a inside the window (a < b)
    high = (n - trim - lt_b).to(acc)  # copies of b inside the window
    total = torch.where(a == b, a * (n - 2 * trim), inner + a * low + b * high)
    out = (total / (n - 2 * trim)).to(x.dtype)
    _fix_bad(out, bad, x, fallback)
    return out


def select_mean_around_median(x: torch.Tensor, k: int, fallback: Fallback) -> torch.Tensor:
    """Mean of the ``k`` values of every column of ``x`` (n, d) closest to its median; (d,).

    The same window as ``mean_around_median_of_sorted``: the values at
    distance below the k-th smallest distance D, then those at distance D,
    the ones below the median first (the lowest window wins).
    """
    med, bad = _median_from(x)
    dist_vals, bad_d = select_ranks(x, [k], center=med)
    dist = dist_vals[0]
    acc = dist.dtype
    near_sum, low_sum, high_sum, counts, ends = kernel(WINDOW, acc)(x, med, dist)
    near, tie_low, tie_high = counts[0], counts[1], counts[2]
    need = k - near
    take_low = torch.minimum(tie_low, need)
    take_high = need - take_low
    low_part = torch.where(take_low == tie_low, low_sum, take_low.to(acc) * ends[1])
    high_part = torch.where(
        take_high == tie_high,
        high_sum,
        torch.where(take_high == 0, 0.0, take_high.to(acc) * ends[2]),
    )
    out = ((near_sum + low_part + high_part) / k).to(x.dtype)
    # Partly taken ties of distinct values (rounded distances): the sort decides.
    undecided = ((take_low < tie_low) & (take_low > 0) & (ends[0] != ends[1])) | (
        (take_high < tie_high) & (take_high > 0) & (ends[2] != ends[3])
    )
    _fix_bad(out, bad | bad_d | undecided, x, fallback)
    return out
