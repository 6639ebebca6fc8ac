"""Norm clipping: static (a fixed threshold) and adaptive (ARC)."""

from __future__ import annotations

from typing import Annotated

import torch

from byzance.aggregators._alloc import empty_rows
from byzance.aggregators._input import first_pass
from byzance.aggregators._registry import Requirement, Rule, register
from byzance.aggregators._shard import norms as whole_norms
from byzance.aggregators._shard import whole
from byzance.errors import InvalidParameterError
from byzance.registry import Bound


def clip_rows(
    x: torch.Tensor,
    threshold: torch.Tensor | float,
    norms: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scale each row of ``x`` (n, d) to norm at most ``threshold``; shape (n, d).

    ``norms`` (n,), the rows' norms when the caller has them, saves a pass.
    The result is written into ``out`` (n, d) when given, which may be ``x``
    itself (in place), else into a new tensor, in huge pages when large (see
    :mod:`byzance.aggregators._alloc`); one product with the (n, 1) scales.
    In place, with wide rows, only the rows whose scale is below 1 are read
    and written: the others are already their result (x * 1 == x, bit for bit).
    """
    if norms is None:
        norms = row_norms(x)
    scale = torch.clamp(threshold / norms.clamp(min=torch.finfo(norms.dtype).tiny), max=1.0)
    scale = scale.to(x.dtype)
    if out is None:
        out = empty_rows(x.shape, like=x)
    elif _same_view(out, x) and x.shape[1] >= _ROW_BY_ROW_MIN_WIDTH:
        for row in (scale < 1).nonzero().flatten().tolist():
            out[row].mul_(scale[row])
        return out
    return torch.mul(x, scale[:, None], out=out)


# In place, rows at least this wide are scaled one by one (one kernel per clipped row);
# narrower ones in one product over all rows, cheaper than n kernel launches.
_ROW_BY_ROW_MIN_WIDTH = 4096


def _same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` are the same elements (same start, shape and strides)."""
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()


def row_norms(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norms (n,) of the rows of ``x`` (n, d); float32 for float16/bfloat16 inputs
    (a float16 norm overflows above 65504, which finite rows easily reach), float64
    when a finite row's norm overflows the accumulation dtype.

    This is the rule's first pass: it reports whether the norms are finite
    (:func:`~byzance.aggregators._input.first_pass`), which they are exactly
    when the rows are, barring overflow.
    """
    acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    norms = whole_norms(x, dtype=acc)
    bad = ~torch.isfinite(norms)
    finite = not bool(bad.any())
    first_pass(finite)
    if finite:
        return norms
    # A finite row whose squared norm overflows (float32 rows of ~1e19 and more): its
    # norm again in float64, scaled by its largest entry. The norms are then float64.
    rows = bad.nonzero().flatten()
    sub = x[rows].to(torch.float64)
    top = whole(lambda t: t.abs().amax(dim=-1), sub, op="max")
    top = top.clamp(min=torch.finfo(torch.float64).tiny)[:, None]
    norms = norms.to(torch.float64)
    norms[rows] = top[:, 0] * whole_norms(sub / top)
    return norms


def _clipping(
    x: torch.Tensor, f: int, *, c: Annotated[float, Bound(0, open_low=True)] = 1.0
) -> torch.Tensor:
    """Static clipping: x_i <- x_i * min(1, c / |x_i|).

    The static pre-aggregation clipping studied by Allouah et al., "Adaptive
    Gradient Clipping for Robust Federated Learning", ICLR 2025, as the
    baseline of ARC.

    Args:
        x: inputs, shape (n, d).
        f: Byzantine inputs tolerated (passed on unchanged).
        c: norm threshold, > 0.

    Returns:
        Shape (n, d): a new tensor (``out=`` writes into a given one, see
        :class:`~byzance.aggregators.Rule`).
    """
    return _clipping_into(x, f, None, c=c)


def _clipping_into(
    x: torch.Tensor, f: int, out: torch.Tensor | None, *, c: float = 1.0
) -> torch.Tensor:
    """:func:`_clipping` written into ``out`` (n, d), which may be ``x``."""
    if not c > 0:
        raise InvalidParameterError(f"clipping: threshold c must be > 0; got c={c}.")
    return clip_rows(x, c, out=out)


def _arc(x: torch.Tensor, f: int) -> torch.Tensor:
    """Adaptive robust clipping: clip the k largest inputs to the (k+1)-th largest norm.

    k = floor(2 (f / n) (n - f)). Allouah, Guerraoui, Gupta, Jellouli, Rizk,
    Stephan, "Adaptive Gradient Clipping for Robust Federated Learning", ICLR
    2025 (arXiv 2405.14432).

    Args:
        x: inputs, shape (n, d).
        f: Byzantine inputs tolerated; requires n >= 2f + 1.

    Returns:
        Shape (n, d): a new tensor (``out=`` writes into a given one, see
        :class:`~byzance.aggregators.Rule`).
    """
    return _arc_into(x, f, None)


def _arc_into(x: torch.Tensor, f: int, out: torch.Tensor | None) -> torch.Tensor:
    """:func:`_arc` written into ``out`` (n, d), which may be ``x``."""
    n = x.shape[0]
    k = (2 * f * (n - f)) // n
    if k == 0:  # nothing clipped: a copy (no pass over the rows reports them finite)
        if out is None:
            return empty_rows(x.shape, like=x).copy_(x)
        return out if out.data_ptr() == x.data_ptr() else out.copy_(x)
    norms = row_norms(x)
    threshold = torch.topk(norms, k + 1).values[k]  # the (k+1)-th largest norm
    return clip_rows(x, threshold, norms, out=out)


clipping = register(
    Rule(
        name="clipping",
        impl=_clipping,
        requirement=Requirement(0, 1),
        paper="Static norm clipping, as in Allouah et al., Adaptive Gradient Clipping for "
        "Robust Federated Learning, ICLR 2025",
        summary="each input scaled to norm at most c",
        cost="O(nd): row norms and one scaling; output (n, d).",
        missing="whole_vectors",
        speed_floor="pass",
        kind="preaggregator",
        checks_rows=True,
        impl_into=_clipping_into,
    )
)
arc = register(
    Rule(
        name="arc",
        impl=_arc,
        requirement=Requirement(2, 1),
        paper="Allouah et al., Adaptive Gradient Clipping for Robust Federated Learning, ICLR 2025",
        summary="the k = floor(2f(n-f)/n) largest inputs clipped to the next largest norm",
        cost="O(nd): row norms, the (k+1)-th largest of the n norms, one scaling; output (n, d).",
        missing="whole_vectors",
        speed_floor="pass",
        kind="preaggregator",
        checks_rows=True,
        impl_into=_arc_into,
    )
)
