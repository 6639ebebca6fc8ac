"""The plain average: the brittle baseline that robust rules replace."""

from __future__ import annotations

import math

import torch

from byzance.aggregators import _native_rows
from byzance.aggregators._registry import Requirement, Rule, register


def _average(x: torch.Tensor, f: int) -> torch.Tensor:
    """Coordinate-wise mean of the n inputs.

    Args:
        x: inputs, shape (n, d).
        f: ignored; the mean tolerates no Byzantine input (one vector of huge
            norm moves it anywhere), but it runs for any f, as the baseline.

    Returns:
        Shape (d,).

    Example:
        >>> average(torch.tensor([[0.0, 1.0], [2.0, 3.0]]), f=0)
        tensor([1., 2.])

    On the CPU (float32 or float64 with the C kernels), one pass in C sums
    in float64 (float32 rows in runs of 8 first) and reports whether the
    result is finite, so no pass of its own looks for an overflowed sum;
    only the columns whose result is not finite (a NaN or inf input, an
    overflow) are computed again, by the torch path below, so that a column's
    value never depends on the others (nor on which block of a sharded call
    holds it).
    """
    if _native_rows.takes(x):
        out, finite = _native_rows.weighted_step(x, None, None, x.shape[0])
        if not finite:
            cols = (~torch.isfinite(out)).nonzero().flatten()
            out[cols] = _torch_average(x[:, cols])
        return out
    return _torch_average(x)


def _torch_average(x: torch.Tensor) -> torch.Tensor:
    """The mean (d,) of ``x`` (n, d) by ``torch.mean``, with the columns whose sum overflows
    again in float64 on rows scaled by an exact power of two, so that no sum overflows."""
    out = x.mean(dim=0)
    # One reduction of the (d,) result first: a boolean mask of d values costs more than the mean.
    bad = None if math.isfinite(out.sum().item()) else ~torch.isfinite(out)
    if bad is not None and bool(bad.any()):
        cols = bad.nonzero().flatten()
        scale = 2.0 ** -math.ceil(math.log2(max(x.shape[0], 2)))
        out[cols] = ((x[:, cols].double() * scale).mean(dim=0) / scale).to(x.dtype)
    return out


average = register(
    Rule(
        name="average",
        impl=_average,
        requirement=Requirement(0, 1),
        paper="Stochastic gradient descent's mini-batch average (non-robust baseline).",
        summary="coordinate-wise mean; breaks with a single Byzantine input",
        cost="O(nd): one pass over the input.",
        missing="coordinate_wise",
        speed_floor="pass",
        robust=False,
    )
)
