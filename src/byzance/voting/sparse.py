"""Robust aggregation with missing entries: each coordinate counts only the participants who have it.

A vote is sparse: a user rates a few items, and their gradient in matrix
factorization touches only the rows of those items. Aggregating such inputs
as dense (n, d) rows, with zeros for what is missing, lets the zeros win (a
coordinate-wise median over 943 users of whom 50 rated the item is 0). Here
the inputs are coordinates: N entries, each a vector ``values[k]`` of size c
for the pair (``user[k]``, ``item[k]``), and

* coordinate-wise rules (mean, median, trimmed mean, and their weighted
  forms) aggregate, for every item, the entries of the users who rated it:
  the registry's rules (:mod:`byzance.aggregators`) applied per item to its
  raters. The mean is a segment sum; the others run the rule's own kernel
  once per distinct number k of raters, on the (k, m * c) matrix of the m
  items rated k times (:func:`byzance.aggregators.missing.columns_by_count`,
  as for coordinates lost in transit), never once per item. So the
  trimmed mean sums the values it keeps, never a difference of cumulative
  sums, in which one huge rating would swallow the small ones of later items;
* the geometric median keeps one unit force per user: it minimizes
  sum_u w_u |M_u (z - x_u)|_2 where M_u masks the items user u rated (the
  geometric median of the users' vectors restricted to what each one gave),
  by Weiszfeld iterations whose sums are segment sums.

Shapes: ``values`` (N, c), ``item`` and ``user`` (N,) int64, user weights
(num_users,). Results are (num_items, c); an item without entries is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from byzance import aggregators
from byzance.aggregators.missing import columns_by_count
from byzance.aggregators.weighted import weighted_median_of_columns
from byzance.errors import InvalidParameterError

RULES = ("average", "median", "trimmed_mean", "geometric_median")
"""The rules that aggregate sparse votes (registry names; weighted where weights are given)."""


def _segment_sum(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    out = values.new_zeros((size, *values.shape[1:]))
    return out.index_add_(0, index, values)


def _counts(item: torch.Tensor, num_items: int) -> torch.Tensor:
    return torch.bincount(item, minlength=num_items)


def _nan_empty(out: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    return out.masked_fill((counts == 0)[:, None], float("nan"))


def _starts(counts: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(counts, 0) - counts


def _per_item(
    values: torch.Tensor,
    item: torch.Tensor,
    num_items: int,
    kernel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """(num_items, c): a coordinate-wise kernel applied to every item's entries; NaN where none.

    The items are grouped by their number k of entries. For the m items of a
    group, ``entries`` (k, m) holds the indices of their entries and ``x``
    (k, m * c) their values, column ``j * c + l`` being coordinate l of the
    group's j-th item; ``kernel(x, entries)`` returns shape (m * c,). One call
    per distinct k, never one per item.
    """
    c = values.shape[1]
    out = values.new_full((num_items, c), float("nan"))
    counts = _counts(item, num_items)
    order = torch.argsort(item, stable=True)  # each item's entries contiguous, in input order
    start = _starts(counts)
    for k, items in columns_by_count(counts):
        rank = torch.arange(k, device=item.device)[:, None]
        entries = order[start[items][None, :] + rank]
        x = values[entries].reshape(k, len(items) * c)
        out[items] = kernel(x, entries).reshape(len(items), c)
    return out


def item_mean(
    values: torch.Tensor, item: torch.Tensor, num_items: int, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """(num_items, c) mean (weighted by the entries' ``weights``, (N,)) of every item's entries."""
    counts = _counts(item, num_items)
    w = torch.ones_like(values[:, 0]) if weights is None else weights.to(values.dtype)
    total = _segment_sum(values * w[:, None], item, num_items)
    mass = _segment_sum(w, item, num_items)
    return _nan_empty(total / mass.clamp(min=torch.finfo(values.dtype).tiny)[:, None], counts)


def item_median(values: torch.Tensor, item: torch.Tensor, num_items: int) -> torch.Tensor:
    """(num_items, c) coordinate-wise median of every item's entries (mean of the middle two if even).

    The registry's ``median`` on each item's entries.
    """
    median = aggregators.get("median").impl
    return _per_item(values, item, num_items, lambda x, _: median(x, 0))


def item_trimmed_mean(
    values: torch.Tensor, item: torch.Tensor, num_items: int, trim: float
) -> torch.Tensor:
    """(num_items, c) trimmed mean: for an item with k entries, floor(trim k) dropped at each end.

    The registry's ``trimmed_mean`` with f = floor(trim k) for each item
    (Yin et al., ICML 2018, trimming parameter beta = trim < 1/2): the kept
    values are summed directly, so a huge value trimmed away cannot swallow
    them.
    """
    if not 0 <= trim < 0.5:
        raise InvalidParameterError(f"trimmed_mean: trim must be in [0, 0.5); got {trim}.")
    trimmed_mean = aggregators.get("trimmed_mean").impl
    return _per_item(
        values, item, num_items, lambda x, _: trimmed_mean(x, math.floor(trim * x.shape[0]))
    )


def item_weighted_median(
    values: torch.Tensor, item: torch.Tensor, num_items: int, weights: torch.Tensor
) -> torch.Tensor:
    """(num_items, c) weighted median of every item's entries, entry weights ``weights`` (N,).

    The kernel of :func:`byzance.aggregators.weighted_median`
    (:func:`~byzance.aggregators.weighted.weighted_median_of_columns`): the
    midpoint of the first value whose cumulative weight reaches half the
    item's total weight and the first that exceeds it.
    """
    c = values.shape[1]

    def kernel(x: torch.Tensor, entries: torch.Tensor) -> torch.Tensor:
        w = weights[entries][:, :, None].expand(-1, -1, c).reshape(x.shape)
        return weighted_median_of_columns(x, w)

    return _per_item(values, item, num_items, kernel)


def masked_geometric_median(
    values: torch.Tensor,
    item: torch.Tensor,
    user: torch.Tensor,
    num_items: int,
    num_users: int,
    weights: torch.Tensor | None = None,
    *,
    init: torch.Tensor | None = None,
    nu: float = 1e-6,
    tol: float = 1e-7,
    max_iter: int = 200,
) -> torch.Tensor:
    """(num_items, c) minimizer of sum_u w_u |M_u (z - x_u)|_2: one unit force per user.

    The geometric median (Weiszfeld 1937; the robust aggregate of Pillutla,
    Kakade, Harchaoui, IEEE TSP 2022) of the users' vectors, where user u's
    distance counts only the items u rated. Weiszfeld's step for this
    objective: with beta_u = w_u / max(|M_u (z - x_u)|, nu), each item's new
    value is the beta-weighted mean of its raters' entries. Starts from the
    per-item median (or ``init``, (num_items, c)); stops when no value moves by more than ``tol`` times
    the largest magnitude, or after ``max_iter`` iterations.
    """
    counts = _counts(item, num_items)
    w_user = (
        torch.ones(num_users, dtype=values.dtype) if weights is None else weights.to(values.dtype)
    )
    z = torch.nan_to_num(item_median(values, item, num_items) if init is None else init.clone())
    scale = float(values.abs().max()) if len(values) else 1.0
    for _ in range(max_iter):
        residual = (values - z[item]).square().sum(1)
        dist = _segment_sum(residual, user, num_users).sqrt()
        beta = (w_user / dist.clamp(min=nu))[user]
        total = _segment_sum(values * beta[:, None], item, num_items)
        mass = _segment_sum(beta, item, num_items).clamp(min=torch.finfo(values.dtype).tiny)
        new = total / mass[:, None]
        moved = float((new - z).abs().max()) if len(z) else 0.0
        z = new
        if moved <= tol * max(scale, 1e-30):
            break
    return _nan_empty(z, counts)


def aggregate(
    rule: str,
    values: torch.Tensor,
    item: torch.Tensor,
    user: torch.Tensor,
    num_items: int,
    num_users: int,
    *,
    weights: Any = None,
    trim: float = 0.1,
    gm_init: torch.Tensor | None = None,
    gm_iter: int = 200,
) -> torch.Tensor:
    """Aggregate sparse votes per item with ``rule`` (one of :data:`RULES`); (num_items, c).

    ``weights`` (num_users,) weights the users (reputation): weighted mean,
    weighted median, weighted geometric median; the trimmed mean takes none.
    ``gm_init`` and ``gm_iter`` are the geometric median's starting point and
    iteration cap (a training loop warm-starts it from the previous step).
    """
    if rule not in RULES:
        raise InvalidParameterError(
            f"sparse votes are aggregated with one of {', '.join(RULES)}; got {rule!r}."
        )
    if values.ndim == 1:
        values = values[:, None]
    w = None
    if weights is not None:
        w = torch.as_tensor(weights, dtype=values.dtype)
        if w.shape != (num_users,) or not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise InvalidParameterError(
                f"weights must be finite and non-negative, one per user (shape ({num_users},)); "
                f"got shape {tuple(w.shape)}."
            )
    if rule == "average":
        return item_mean(values, item, num_items, None if w is None else w[user])
    if rule == "median":
        if w is None:
            return item_median(values, item, num_items)
        return item_weighted_median(values, item, num_items, w[user])
    if rule == "trimmed_mean":
        if w is not None:
            raise InvalidParameterError(
                "trimmed_mean has no weighted form here; use median or geometric_median with weights."
            )
        return item_trimmed_mean(values, item, num_items, trim)
    return masked_geometric_median(
        values, item, user, num_items, num_users, w, init=gm_init, max_iter=gm_iter
    )
