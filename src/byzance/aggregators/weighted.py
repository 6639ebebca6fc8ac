"""Weighted mean and weighted coordinate-wise median: one weight per participant.

Weights express reputation (account age, a trust score): a participant of
weight w counts as w participants of weight 1. With equal weights both rules
are the plain average and the coordinate-wise median. The weighted geometric
median is :func:`byzance.aggregators.geometric_median` with ``weights``.
"""

from __future__ import annotations

from typing import Any

import torch

from byzance.aggregators import _native, _native_rows, _order
from byzance.aggregators._registry import Requirement, Rule, register
from byzance.errors import InvalidParameterError


def check_weights(weights: Any, n: int, x: torch.Tensor, who: str) -> torch.Tensor:
    """Weights as a (n,) tensor in ``x``'s dtype (ones when None); finite, >= 0, not all 0."""
    if weights is None:
        return torch.ones(n, dtype=x.dtype, device=x.device)
    w = torch.as_tensor(weights).to(device=x.device, dtype=x.dtype)
    if w.shape != (n,):
        raise InvalidParameterError(
            f"{who}: weights must have shape ({n},), one per input; got {tuple(w.shape)}."
        )
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise InvalidParameterError(
            f"{who}: weights must be finite, non-negative and not all zero; got {w.tolist()[:8]}."
        )
    return w


def _weighted_average(x: torch.Tensor, f: int, *, weights: Any = None) -> torch.Tensor:
    """Weighted mean sum_i w_i x_i / sum_i w_i.

    Not robust: one input of huge norm, or of huge weight, moves it anywhere.
    It is the baseline of reputation-weighted aggregation. On the CPU (float32
    or float64 with the C kernels) it is the average's one pass in C
    (:func:`~byzance.aggregators._native_rows.weighted_step`, float64 sums),
    the columns where a float32 run of it overflows redone on float64 rows.

    Args:
        x: inputs, shape (n, d).
        f: ignored (the weighted mean tolerates no Byzantine input).
        weights: non-negative weights, shape (n,); equal by default.

    Returns:
        Shape (d,).

    Example:
        >>> weighted_average(torch.tensor([[0.0], [3.0]]), f=0, weights=[2.0, 1.0])
        tensor([1.])
    """
    w = check_weights(weights, x.shape[0], x, "weighted_average")
    if _native_rows.takes(x):  # one pass in C
        total = float(w.double().sum())
        out, finite = _native_rows.weighted_step(x, w, None, total)
        if not finite and x.dtype == torch.float32:
            # A float32 run overflowed (or an input is NaN/inf): those columns on float64 rows.
            cols = (~torch.isfinite(out)).nonzero().flatten()
            sub = x[:, cols].double()
            out[cols] = _native_rows.weighted_step(sub, w, None, total)[0].to(x.dtype)
        return out
    if x.dtype in (torch.float16, torch.bfloat16):  # normalized first: w @ x may overflow
        wf = w.float()
        return (wf / wf.sum()).to(x.dtype) @ x
    return (w @ x) / w.sum()


def weighted_median_of_columns(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Weighted median of every column of ``x`` (n, d) with row weights ``w`` (n,) or (n, d).

    The weighted median of values v_1 <= ... <= v_n with weights w_k and total
    W is the midpoint of the lower one (the first v_k whose cumulative weight
    reaches W/2) and the upper one (the first whose cumulative weight exceeds
    W/2). Equal weights give the ordinary median (the mean of the two middle
    values for even n); a zero-weight value is never chosen.

    Large CPU inputs with one weight per row take the radix descent of
    :mod:`byzance.aggregators._native` (no sort; the weights summed in another
    order than the sorted cumulative sum, within the same 1e-12 W slack).
    """
    if w.ndim == 1 and _order.native_takes(x):
        out, bad = _native.weighted_median(x, w)
        _order.report_native_rows(bad)
        out = out.to(x.dtype)
        if bool(bad.any()):
            cols = bad.nonzero().flatten()
            out[cols] = _sorted_weighted_median(x[:, cols], w)
        return out
    return _sorted_weighted_median(x, w)


def _sorted_weighted_median(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """:func:`weighted_median_of_columns` by a sort along dim 0."""
    values, order = torch.sort(x, dim=0)
    wk = (w[:, None].expand_as(x) if w.ndim == 1 else w).gather(0, order).to(torch.float64)
    cum = torch.cumsum(wk, dim=0)
    half = cum[-1:] / 2
    slack = 1e-12 * cum[-1:]  # cumulative sums of equal weights hit W/2 up to rounding
    lower = (cum >= half - slack).to(torch.int8).argmax(dim=0, keepdim=True)
    upper = (cum > half + slack).to(torch.int8).argmax(dim=0, keepdim=True)
    # Halves first: the sum of two values near the dtype's largest would overflow.
    return values.gather(0, lower)[0] / 2 + values.gather(0, upper)[0] / 2


def _weighted_median(x: torch.Tensor, f: int, *, weights: Any = None) -> torch.Tensor:
    """Coordinate-wise weighted median (see :func:`weighted_median_of_columns`).

    Robust as long as the Byzantine inputs hold less than half of the total
    weight: each coordinate then stays within the range of the honest values
    (the weighted form of the median of Yin, Chen, Ramchandran, Bartlett,
    "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
    Rates", ICML 2018). With equal weights it is the median and tolerates f < n/2.

    Args:
        x: inputs, shape (n, d).
        f: Byzantine inputs tolerated with equal weights; requires n >= 2f + 1.
        weights: non-negative weights, shape (n,); equal by default.

    Returns:
        Shape (d,).

    Example:
        >>> weighted_median(torch.tensor([[0.0], [1.0], [9.0]]), f=1, weights=[1.0, 1.0, 3.0])
        tensor([9.])
    """
    w = check_weights(weights, x.shape[0], x, "weighted_median")
    return weighted_median_of_columns(x, w)


weighted_average = register(
    Rule(
        name="weighted_average",
        impl=_weighted_average,
        requirement=Requirement(0, 1),
        paper="Weighted mean (reputation-weighted baseline, non-robust).",
        summary="weighted mean, one weight per participant",
        cost="O(nd): one weighted pass over the input.",
        missing="whole_vectors",
        speed_floor="pass",
        robust=False,
        row_params=("weights",),
    )
)

weighted_median = register(
    Rule(
        name="weighted_median",
        impl=_weighted_median,
        requirement=Requirement(2, 1),
        paper="Yin et al., Byzantine-Robust Distributed Learning: Towards Optimal "
        "Statistical Rates, ICML 2018 (weighted form)",
        summary="coordinate-wise weighted median, one weight per participant",
        cost=(
            "O(nd log n): one sort along dim 0, then cumulative weights and one gather per "
            "coordinate; on the CPU, O(nd) by one weighted radix descent over each "
            "cache-resident block in fixed-point weights, checked in float64 (the load "
            "also checks the rows for NaN/inf)."
        ),
        missing="whole_vectors",
        speed_floor="pass",
        row_params=("weights",),
        checks_rows=True,
    )
)
