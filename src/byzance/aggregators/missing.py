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
- coordinate-wise rules (those registered with ``missing="coordinate_wise"``:
  ``average``, ``median``, ``trimmed_mean``, ``meamed``) run on the values
  present at each coordinate: with m_j values present at coordinate j, the
  rule itself on those m_j values (the median is the median of them, the
  trimmed mean trims f values at each end, MeaMed averages the m_j - f values
  closest to the median). A coordinate where fewer values arrived than the
  rule needs to tolerate f (2f + 1 for the robust ones) aggregates to 0 (no
  step there): the f Byzantine values could be a majority of what arrived,
  so nothing there can be trusted. The average (not robust, n >= 1) averages
  whatever arrived;
- every other rule (``missing="whole_vectors"``: Krum, Multi-Krum, geometric
  median, MDA, Bulyan, centered clipping, pipelines with pre-aggregators)
  needs whole vectors: each missing coordinate is filled with the
  coordinate-wise median of the values present at that coordinate, then the
  rule runs unchanged. The median of the present
  values is itself robust when at least 2f + 1 arrived (fewer than half of
  them Byzantine: it stays within the honest values' range), so a fill cannot
  be steered by the Byzantine workers beyond what they control anyway; with
  fewer, the fill is 0;
- ``fill="zero"`` instead fills every missing coordinate with 0 before the rule
  runs: the naive baseline (averaging with zero-filled losses biases the
  aggregate towards 0 by the loss rate).

Non-finite values that did arrive are faulty input, as for every robust rule:
the worker is dropped and counted as one of the f faulty ones. The average
(not robust) keeps them: a NaN in, a NaN out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import torch

from byzance.aggregators._input import GradsLike, as_matrix, check_f, finite_rows
from byzance.aggregators._registry import Rule, get, rules
from byzance.errors import (
    InvalidParameterError,
    NonFiniteInputError,
    ShapeError,
    ToleranceError,
)

Fill = Literal["auto", "median", "zero"]


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
    x, mask, f, crashed, nonfinite = _live_rows(x, mask, f, who, drop=r.robust)
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
        if fill == "auto" and r.missing == "coordinate_wise":
            return masked_coordinate_rule(r, x, mask, f, **params)
        return r(fill_with_median(x, mask, f), f, **params)


def masked_coordinate_rule(
    rule: str | Rule, x: torch.Tensor, present: torch.Tensor, f: int, **params: Any
) -> torch.Tensor:
    """A coordinate-wise rule on the values of ``x`` (n, d) where ``present`` (n, d); shape (d,).

    ``rule`` must be registered with ``missing="coordinate_wise"``. At each
    coordinate the rule's own implementation runs on the m values present
    there (in row order), with the same f; a coordinate with fewer values than
    the rule needs to tolerate f (no value at all, or fewer than 2f + 1 for a
    robust rule) gives 0. One call of the rule per distinct m (see
    :func:`columns_by_count`), never a loop over d. When every entry is
    present this is the rule itself.
    """
    r = get(rule)
    if r.missing != "coordinate_wise":
        coordinate_wise = [q.name for q in rules() if q.missing == "coordinate_wise"]
        raise InvalidParameterError(
            f"masked_coordinate_rule: {r.name} needs whole vectors (missing={r.missing!r}); "
            f"use aggregate_with_missing, or one of {', '.join(coordinate_wise)}."
        )
    params = r._merge(params)  # the same unknown-parameter error as the rule itself
    out = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
    need = r.min_n(f)
    for m, cols, values in present_columns(x, present):
        if m >= need:
            out[cols] = r.impl(values, f, **params)
    return out


def fill_with_median(x: torch.Tensor, present: torch.Tensor, f: int = 0) -> torch.Tensor:
    """``x`` (n, d) with each missing entry replaced by its coordinate's median of present values.

    A coordinate with fewer than 2f + 1 present values (where the f Byzantine
    ones could be a majority of what arrived) is filled with 0. Shape (n, d).
    """
    fill = masked_coordinate_rule("median", x, present, f)
    return torch.where(present, x, fill[None, :])


def columns_by_count(counts: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """Each distinct count m > 0 of ``counts`` (d,), increasing, with the columns (k,) that have it.

    A coordinate-wise kernel takes a fixed number of rows; grouping ragged
    columns (missing coordinates, items rated by different numbers of users)
    by how many values they hold runs the kernel once per distinct count,
    never once per column.
    """
    ordered, columns = torch.sort(counts, stable=True)  # stable: each group's columns ascend
    distinct, sizes = torch.unique_consecutive(ordered, return_counts=True)
    for m, cols in zip(distinct.tolist(), columns.split(sizes.tolist()), strict=True):
        if m > 0:
            yield m, cols


def present_columns(
    x: torch.Tensor, present: torch.Tensor
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(m, cols, values)`` for each group of :func:`columns_by_count`.

    ``values`` (m, len(cols)) holds, for each column of ``cols``, the entries
    of ``x`` (n, d) where ``present`` (n, d), in row order.
    """
    n = x.shape[0]
    counts = present.view(torch.uint8).sum(dim=0, dtype=torch.int32)  # faster than a bool sum
    for m, cols in columns_by_count(counts):
        values = x.index_select(1, cols)
        if m < n:
            sub = present.index_select(1, cols)
            # Present entries fill rows 0 .. m - 1 in row order; missing ones go to row m, dropped.
            rows = torch.where(sub, sub.cumsum(dim=0, dtype=torch.int32) - 1, m).long()
            values = x.new_empty((m + 1, len(cols))).scatter_(0, rows, values)[:m]
        yield m, cols, values


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
    x: torch.Tensor, mask: torch.Tensor, f: int, who: str, *, drop: bool = True
) -> tuple[torch.Tensor, torch.Tensor, int, int, int]:
    """Drop crashed rows (nothing present) and rows with a present non-finite value.

    Returns ``(x, mask, f_left, crashed, nonfinite)``; each non-finite row counts
    as one of the f faulty inputs, as in every robust rule. With ``drop=False``
    (a rule that is not robust: the average) non-finite rows are kept: a NaN in,
    a NaN out.
    """
    alive = mask.any(dim=1)
    crashed = int(x.shape[0] - int(alive.sum()))
    if not drop:
        return (x, mask, f, crashed, 0) if crashed == 0 else (x[alive], mask[alive], f, crashed, 0)
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
