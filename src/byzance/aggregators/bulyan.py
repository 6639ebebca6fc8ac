"""Bulyan, a meta-rule over any selection rule."""

from __future__ import annotations

import torch

from byzance.aggregators._order import coordinate_mean_around_median
from byzance.aggregators._pairwise import sq_distances
from byzance.aggregators._registry import Requirement, Rule, get, register
from byzance.aggregators._shard import norms as whole_norms
from byzance.aggregators.krum import krum_ranking
from byzance.errors import InvalidParameterError


def bulyan_selection(x: torch.Tensor, f: int, selection: str | Rule = "krum") -> torch.Tensor:
    """Indices (theta,), theta = n - 2f, chosen by applying ``selection`` repeatedly.

    Each round applies the rule to the inputs not yet chosen and moves the
    input closest to its output (Krum's output is an input) to the chosen set;
    Krum's equal scores are decided as in :func:`~byzance.aggregators.krum.krum_ranking`.
    Krum reuses one distance matrix across rounds; in the last rounds fewer
    than 2f + 3 inputs remain and its neighbour count n - f - 2 is floored at
    one, as the paper's recursion leaves it undefined there.
    """
    n = x.shape[0]
    theta = n - 2 * f
    rule = get(selection)
    stage_names = [s.name for s in getattr(rule, "stages", ())] or [rule.name]
    if rule.kind != "aggregator" or "bulyan" in stage_names:
        raise InvalidParameterError(
            f"bulyan: the selection rule must be an aggregation rule other than bulyan; got {rule.name}."
        )
    if any(rule.defaults.get(p) is not None for p in rule.row_params):
        raise InvalidParameterError(
            f"bulyan: the selection rule {rule.name} has per-input parameters "
            f"({', '.join(rule.row_params)}), which do not follow the shrinking set of inputs."
        )
    # The remaining inputs' indices stay on x's device, in increasing order: each round
    # removes one by a device index, so no round synchronizes with the host.
    remaining = torch.arange(n, device=x.device)
    chosen: list[torch.Tensor] = []
    if rule.name == "krum" and not rule.defaults:
        dist = sq_distances(x)
        for _ in range(theta):
            sub = dist.index_select(0, remaining).index_select(1, remaining)
            best = krum_ranking(sub, f)[0]
            chosen.append(remaining[best])
            remaining = _without(remaining, best)
        return torch.stack(chosen)
    for _ in range(theta):
        rest = x.index_select(0, remaining)
        out = _apply(rule, rest, f)
        acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        nearest = torch.argmin(whole_norms(rest - out, dtype=acc))
        chosen.append(remaining[nearest])
        remaining = _without(remaining, nearest)
    return torch.stack(chosen)


def _without(indices: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """``indices`` (m,) without the entry at ``position`` (a 0-d device tensor); shape (m - 1,)."""
    keep = torch.arange(indices.shape[0] - 1, device=indices.device)
    return indices[keep + (keep >= position)]


def _apply(rule: Rule, x: torch.Tensor, f: int) -> torch.Tensor:
    """The selection rule on the remaining inputs; its requirement may fail in the last rounds."""
    stages = getattr(rule, "stages", None) or (rule,)
    for stage in stages:
        x = stage.impl(x, f, **stage.defaults)
    return x


def _bulyan(x: torch.Tensor, f: int, *, selection: str | Rule = "krum") -> torch.Tensor:
    """Bulyan over a selection rule (Krum by default).

    El Mhamdi, Guerraoui, Rouault, "The Hidden Vulnerability of Distributed
    Learning in Byzantium", ICML 2018. Phase 1: select theta = n - 2f inputs by
    applying the selection rule repeatedly (see :func:`bulyan_selection`).
    Phase 2: coordinate-wise, average the beta = theta - 2f selected values
    closest to the coordinate's median. Any registered aggregation rule can
    select (the input nearest to its output is taken).

    Args:
        x: inputs, shape (n, d).
        f: Byzantine inputs tolerated; requires n >= 4f + 3.
        selection: name (or Rule) of the selection rule.

    Returns:
        Shape (d,).
    """
    theta = x.shape[0] - 2 * f
    chosen = bulyan_selection(x, f, selection)
    # The selected rows read in place (no (theta, d) copy: peak extra memory O(n^2 + d)).
    return coordinate_mean_around_median(x, theta - 2 * f, rows=chosen)


bulyan = register(
    Rule(
        name="bulyan",
        impl=_bulyan,
        selector=lambda x, f, selection="krum": bulyan_selection(x, f, selection),
        requirement=Requirement(4, 3),
        paper="El Mhamdi, Guerraoui, Rouault, The Hidden Vulnerability of Distributed "
        "Learning in Byzantium, ICML 2018",
        summary="repeated selection (Krum), then the mean around the coordinate-wise median",
        cost=(
            "Phase 1, n - 2f selection rounds: with Krum, one Gram product, O(n^2 d), "
            "reused by every round (then O(n^2) per round); with another rule, one "
            "application of it per round. Phase 2: one fused coordinate-wise pass over "
            "the n - 2f selected rows (radix descent in C on the CPU, as meamed)."
        ),
        missing="whole_vectors",
        speed_floor="gram",
    )
)
