"""Aggregation when some coordinates of some inputs never arrived.

A lossy transport (gradients sent over UDP, see ``byzance.distributed.udp``) hands
the server an (n, d) tensor and a boolean mask ``present`` of the same shape:
a datagram that was lost leaves a run of coordinates of one worker missing.
AggregaThor (Damaskinos, El Mhamdi, Guerraoui, Guirguis, Rouault,
"AggregaThor: Byzantine Machine Learning via Robust Gradient Aggregation",
SysML 2019) observed that a robust rule can treat such losses as one more
kind of faulty data instead of paying for a reliable transport. This module
says, rule by rule, what "treat as faulty" means:

- a worker none of whose coordinates arrived is a crashed worker: its row is
  dropped and the rule's n/f requirement is checked on the workers left (f is
  kept: the crashed ones may have been honest);
- coordinate-wise rules (``average``, ``median``, ``trimmed_mean``,
  ``meamed``) run on the values present at each coordinate: with m_j values
  present at coordinate j, the median is the median of those m_j values, the
  trimmed mean trims f values at each end, MeaMed averages the m_j - f values
  closest to the median. A coordinate where fewer than 2f + 1 values arrived
  aggregates to 0 (no step there): the f Byzantine values could be a majority
  of what arrived, so nothing there can be trusted. The average (not robust)
  averages whatever arrived;
- every other rule (Krum, Multi-Krum, geometric median, MDA, Bulyan, centered
  clipping, pipelines with pre-aggregators) needs whole vectors: each missing
  coordinate is filled with the coordinate-wise median of the values present
  at that coordinate, then the rule runs unchanged. The median of the present
  values is itself robust when at least 2f + 1 arrived (fewer than half of
  them Byzantine: it stays within the honest values' range), so a fill cannot
  be steered by the Byzantine workers beyond what they control anyway; with
  fewer, the fill is 0;
- ``fill="zero"`` instead fills every missing coordinate with 0 before the rule
  runs: the naive baseline (averaging with zero-filled losses biases the
  aggregate towards 0 by the loss rate).

Non-finite values that did arrive are faulty input, as everywhere in byzance:
the worker is dropped and counted as one of the f faulty ones.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from byzance.aggregators._input import GradsLike, as_matrix, check_f, finite_rows
from byzance.aggregators._registry import Pipeline, Rule, get
from byzance.errors import (
    InvalidParameterError,
    NonFiniteInputError,
    ShapeError,
    ToleranceError,
)

Fill = Literal["auto", "median", "zero"]

#: Rules that aggregate each coordinate on its own and so can use only the values present.
COORDINATE_WISE = frozenset({"average", "median", "trimmed_mean", "meamed"})


def aggregate_with_missing(
    rule: str | Rule,
    grads: GradsLike,
    present: torch.Tensor,
    f: int,
    *,
    fill: Fill = "auto",
    **params: Any,
) -> torch.Tensor:
    """Aggregate ``grads`` (n, d) of which only the entries where ``present`` is True arrived.

    Args:
        rule: a registered rule name (``"krum"``, ``"nnm>median"``) or a :class:`Rule`.
        grads: shape (n, d); the values at missing entries are ignored.
        present: boolean, shape (n, d): True where the coordinate arrived.
        f: Byzantine inputs tolerated (among all n workers, crashed ones included).
        fill: ``"auto"``: coordinate-wise rules use the present values and every
            other rule gets missing coordinates filled with the coordinate-wise
            median of the present values (see the module docstring);
            ``"median"``: that fill for every rule; ``"zero"``: fill with 0.
        **params: the rule's parameters (e.g. ``tau`` for centered clipping).

    Returns:
        Shape (d,), on the input's device and dtype.

    Raises:
        ToleranceError: fewer live workers (rows with anything present and no
            NaN/inf) than the rule needs to tolerate f.

    Example:
        >>> x = torch.tensor([[1.0, 5.0], [2.0, 0.0], [3.0, 7.0]])
        >>> present = torch.tensor([[True, True], [True, False], [True, True]])
        >>> aggregate_with_missing("median", x, present, f=0)
        tensor([2., 6.])
    """
    r = get(rule)
    who = f"{r.name} (with missing coordinates)"
    f = check_f(f, who)
    x = as_matrix(grads, who)
    mask = _check_present(present, x, who)
    if fill not in ("auto", "median", "zero"):
        raise InvalidParameterError(
            f"{who}: fill must be 'auto', 'median' or 'zero'; got {fill!r}."
        )
    x, mask, f, crashed, nonfinite = _live_rows(x, mask, f, who)
    try:
        r.check(x.shape[0], f, dropped=nonfinite)
    except ToleranceError as err:
        raise ToleranceError(
            f"{err} ({crashed} worker{'s' if crashed != 1 else ''} whose whole gradient was "
            "lost were dropped as crashed before this check.)"
        ) from None
    if bool(mask.all()):
        return r(x, f, **params)
    with torch.no_grad():
        if fill == "zero":
            return r(
                torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)), f, **params
            )
        if fill == "auto" and not isinstance(r, Pipeline) and r.name in COORDINATE_WISE:
            r._merge(params)  # the same unknown-parameter error as the rule itself
            return masked_coordinate_rule(r.name, x, mask, f)
        return r(fill_with_median(x, mask, f), f, **params)


def masked_coordinate_rule(
    name: str, x: torch.Tensor, present: torch.Tensor, f: int
) -> torch.Tensor:
    """A coordinate-wise rule on the values of ``x`` (n, d) where ``present`` (n, d); shape (d,).

    ``name`` is one of :data:`COORDINATE_WISE`. Vectorized: one sort along dim
    0 with the missing entries pushed to +inf, then per-coordinate counts and
    index arithmetic (``gather``), never a loop over d. When every entry is
    present the result equals the rule's (up to the order of a floating sum).
    """
    if name == "average":
        count = present.sum(dim=0)
        total = torch.where(present, x, 0.0).sum(dim=0)
        return torch.where(count > 0, total / count.clamp(min=1).to(x.dtype), 0.0)
    s, m = _sorted_present(x, present)
    # Fewer than 2f + 1 values at a coordinate: the f Byzantine ones may be a majority
    # there, so that coordinate carries no trustworthy information and aggregates to 0.
    trusted = m >= 2 * f + 1
    if name == "median":
        return torch.where(trusted, _masked_median(s, m), 0.0)
    t = torch.minimum(torch.full_like(m, f), ((m - 1) // 2).clamp(min=0))
    if name == "trimmed_mean":
        kept = m - 2 * t
        # Rows t .. m - t - 1 of each column, shifted to start at row 0: with nothing
        # missing this is exactly the slice the trimmed mean sums, in the same order.
        r = torch.arange(max(int(kept.max()), 1), device=s.device)[:, None]
        rows = s.gather(0, (t[None, :] + r).clamp(max=s.shape[0] - 1))
        total = torch.where(r < kept, rows, 0.0).sum(dim=0)
        return torch.where(trusted, total / kept.clamp(min=1).to(s.dtype), 0.0)
    if name == "meamed":
        return torch.where(trusted, _masked_mean_around_median(s, m, m - t), 0.0)
    raise InvalidParameterError(
        f"masked_coordinate_rule: {name!r} is not coordinate-wise; use one of {sorted(COORDINATE_WISE)}."
    )


def fill_with_median(x: torch.Tensor, present: torch.Tensor, f: int = 0) -> torch.Tensor:
    """``x`` (n, d) with each missing entry replaced by its coordinate's median of present values.

    A coordinate with fewer than 2f + 1 present values (where the f Byzantine
    ones could be a majority of what arrived) is filled with 0. Shape (n, d).
    """
    s, m = _sorted_present(x, present)
    fill = torch.where(m >= 2 * f + 1, _masked_median(s, m), 0.0)
    return torch.where(present, x, fill[None, :])


def crashed_workers(present: torch.Tensor) -> torch.Tensor:
    """Indices of the rows of ``present`` (n, d) with no coordinate present; shape (k,)."""
    return (~present.any(dim=1)).nonzero().flatten()


# -- helpers ---------------------------------------------------------------------
def _check_present(present: Any, x: torch.Tensor, who: str) -> torch.Tensor:
    mask = torch.as_tensor(present, device=x.device)
    if mask.dtype != torch.bool:
        raise ShapeError(f"{who}: present must be a boolean mask; got dtype {mask.dtype}.")
    if mask.shape != x.shape:
        raise ShapeError(
            f"{who}: present must have the shape of grads {tuple(x.shape)} (one flag per "
            f"coordinate of each worker); got {tuple(mask.shape)}."
        )
    return mask


def _live_rows(
    x: torch.Tensor, mask: torch.Tensor, f: int, who: str
) -> tuple[torch.Tensor, torch.Tensor, int, int, int]:
    """Drop crashed rows (nothing present) and rows with a present non-finite value.

    Returns ``(x, mask, f_left, crashed, nonfinite)``; each non-finite row counts
    as one of the f faulty inputs, as in every rule.
    """
    alive = mask.any(dim=1)
    crashed = int(x.shape[0] - int(alive.sum()))
    finite = finite_rows(torch.where(mask, x, 0.0))
    bad = int((alive & ~finite).sum())
    if bad > f:
        raise NonFiniteInputError(
            f"{who}: {bad} workers sent NaN or inf but only f={f} faulty inputs are "
            "tolerated; raise f or find why those workers fail."
        )
    keep = alive & finite
    if bool(keep.all()):
        return x, mask, f, crashed, bad
    return x[keep], mask[keep], f - bad, crashed, bad


def _sorted_present(x: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinate-wise sort with missing entries last (+inf) and the counts m (d,) present."""
    keyed = torch.where(present, x, torch.full((), float("inf"), dtype=x.dtype, device=x.device))
    return torch.sort(keyed, dim=0).values, present.sum(dim=0)


def _take(s: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``s[idx[j], j]`` for every column j, with idx clamped into range; shape (d,)."""
    return s.gather(0, idx.clamp(0, s.shape[0] - 1)[None, :]).squeeze(0)


def _masked_median(s: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    lo = _take(s, (m - 1) // 2)
    hi = _take(s, m // 2)
    med = torch.where(m % 2 == 1, lo, lo * 0.5 + hi * 0.5)  # halves first, as the median rule
    return torch.where(m > 0, med, 0.0)


def _masked_mean_around_median(s: torch.Tensor, m: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Mean of the k_j present values closest to the median, lowest window on ties.

    The same window test as :func:`byzance.aggregators._order.mean_around_median_of_sorted`,
    with a window length and a count of values that vary by coordinate.
    """
    n = s.shape[0]
    med = _masked_median(s, m)
    best = (m - k).clamp(min=0)
    for i in range(n - 1, -1, -1):  # descending: the lowest valid start is kept
        end = i + k  # one past the window
        valid = end <= m
        if i > 0:
            valid &= med - s[i - 1] >= _take(s, end - 1) - med
        valid &= (end >= m) | (_take(s, end) - med >= med - s[i])
        best = torch.where(valid, i, best)
    j = torch.arange(n, device=s.device)[:, None]
    inside = (j >= best) & (j < best + k)
    total = torch.where(inside, s, 0.0).sum(dim=0)
    return torch.where(m > 0, total / k.clamp(min=1).to(s.dtype), 0.0)
