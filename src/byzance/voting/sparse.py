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
  raters, computed for all items at once (sorts and segment sums, no loop
  over items);
* the geometric median keeps one unit force per user: it minimizes
  sum_u w_u |M_u (z - x_u)|_2 where M_u masks the items user u rated (the
  geometric median of the users' vectors restricted to what each one gave),
  by Weiszfeld iterations whose sums are segment sums.

Shapes: ``values`` (N, c), ``item`` and ``user`` (N,) int64, user weights
(num_users,). Results are (num_items, c); an item without entries is NaN.
"""

from __future__ import annotations

from typing import Any

import torch

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


def _sorted_by_item(
    values: torch.Tensor, item: torch.Tensor, weights: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each column sorted by (item, value): the entries of an item are contiguous and ascending.

    Returns the sorted (N, c) values and, when given, the (N, c) entry weights
    in the same order.
    """
    # Sorting rows of the (c, N) transpose is faster than strided columns of (N, c).
    by_value, order = torch.sort(values.T.contiguous(), dim=1)
    _, order2 = torch.sort(item[order], dim=1, stable=True)  # stable: values stay ascending
    sorted_values = by_value.gather(1, order2).T
    if weights is None:
        return sorted_values, None
    return sorted_values, weights[order].gather(1, order2).T


def _starts(counts: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(counts, 0) - counts


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
    """(num_items, c) coordinate-wise median of every item's entries (mean of the middle two if even)."""
    counts = _counts(item, num_items)
    sorted_values, _ = _sorted_by_item(values, item, None)
    start = _starts(counts)
    lo = (start + (counts - 1).clamp(min=0) // 2).clamp(max=len(values) - 1)
    hi = (start + counts // 2).clamp(max=len(values) - 1)
    out = (sorted_values[lo] + sorted_values[hi]) / 2
    return _nan_empty(out, counts)


def item_trimmed_mean(
    values: torch.Tensor, item: torch.Tensor, num_items: int, trim: float
) -> torch.Tensor:
    """(num_items, c) trimmed mean: for an item with k entries, floor(trim k) dropped at each end.

    The registry's ``trimmed_mean`` with f = floor(trim k) for each item
    (Yin et al., ICML 2018, trimming parameter beta = trim < 1/2).
    """
    if not 0 <= trim < 0.5:
        raise InvalidParameterError(f"trimmed_mean: trim must be in [0, 0.5); got {trim}.")
    counts = _counts(item, num_items)
    sorted_values, _ = _sorted_by_item(values, item, None)
    cum = torch.cat([sorted_values.new_zeros(1, values.shape[1]), torch.cumsum(sorted_values, 0)])
    start = _starts(counts)
    cut = torch.floor(trim * counts.to(torch.float64)).to(torch.int64)
    kept = (counts - 2 * cut).clamp(min=1)
    out = (cum[start + counts - cut] - cum[start + cut]) / kept[:, None].to(values.dtype)
    return _nan_empty(out, counts)


def item_weighted_median(
    values: torch.Tensor, item: torch.Tensor, num_items: int, weights: torch.Tensor
) -> torch.Tensor:
    """(num_items, c) weighted median of every item's entries, entry weights ``weights`` (N,).

    Same definition as :func:`byzance.aggregators.weighted_median`: the
    midpoint of the first value whose cumulative weight reaches half the
    item's total weight and the first that exceeds it.
    """
    counts = _counts(item, num_items)
    sorted_values, w = _sorted_by_item(values, item, weights.to(torch.float64))
    assert w is not None
    n, c = values.shape
    seg_item = _item_of_sorted(counts, n)  # (N,): the item of each sorted position
    cum = torch.cumsum(w, 0)  # cumulative weight over all positions (N, c)
    start = _starts(counts)
    before = torch.where(start[:, None] > 0, cum[(start - 1).clamp(min=0)], 0.0)  # (m, c)
    within = cum - before[seg_item]  # cumulative weight within each item
    total = _segment_sum(w, seg_item, num_items)[seg_item]
    half, slack = total / 2, 1e-12 * total
    position = torch.arange(n)[:, None].expand(n, c)
    last = torch.full_like(position, n - 1)
    index = seg_item[:, None].expand(n, c)

    def first(condition: torch.Tensor) -> torch.Tensor:
        """(m, c) first position of each item where ``condition`` holds."""
        hits = torch.where(condition, position, last)
        out = torch.full((num_items, c), n - 1, dtype=torch.int64)
        return out.scatter_reduce_(0, index, hits, "amin")

    lower, upper = first(within >= half - slack), first(within > half + slack)
    out = (sorted_values.gather(0, lower) + sorted_values.gather(0, upper)) / 2
    return _nan_empty(out, counts)


def _item_of_sorted(counts: torch.Tensor, n: int) -> torch.Tensor:
    """(N,) item of each position once entries are sorted by item."""
    return torch.repeat_interleave(torch.arange(len(counts)), counts, output_size=n)


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
