"""Item-score recommenders: an item's score aggregates its ratings; items are ranked by score.

The non-personalized recommender ("top rated"): score_j = rule(ratings of
item j), ranked among the eligible items (those with at least a minimum
number of honest ratings, so that one lucky 5 does not top the list). The
rules come from :mod:`byzance.voting.sparse`: mean, median, trimmed mean per
item over its raters, or the geometric median of the users' rating vectors
(one unit force per user).
"""

from __future__ import annotations

from typing import Any

import torch

from byzance.voting import sparse
from byzance.voting.data import Ratings


def item_scores(
    ratings: Ratings, rule: str, *, weights: Any = None, trim: float = 0.1
) -> torch.Tensor:
    """(num_items,) score of every item under ``rule`` (NaN for an item nobody rated)."""
    out = sparse.aggregate(
        rule,
        ratings.rating[:, None],
        ratings.item,
        ratings.user,
        ratings.num_items,
        ratings.num_users,
        weights=weights,
        trim=trim,
    )
    return out[:, 0]


def ranking(scores: torch.Tensor, eligible: torch.Tensor) -> torch.Tensor:
    """Eligible item indices, best first (ties: lower index first)."""
    idx = eligible.nonzero().flatten()
    order = torch.sort(-scores[idx], stable=True).indices  # idx ascending: ties keep index order
    return idx[order]


def rank_of(scores: torch.Tensor, item: int, eligible: torch.Tensor) -> int:
    """Competition rank of ``item`` among the eligible items: 1 + items with a strictly higher score.

    Ties share a rank, so an item tied with many others is not moved by the
    tie-breaking order (ratings are integers: medians tie often).
    """
    return 1 + int((scores[eligible] > scores[item]).sum())


def top_k_overlap(
    scores: torch.Tensor, reference: torch.Tensor, eligible: torch.Tensor, k: int = 10
) -> float:
    """Fraction of the top ``k`` eligible items under ``reference`` that are also top ``k`` under ``scores``."""
    a = set(ranking(scores, eligible)[:k].tolist())
    b = set(ranking(reference, eligible)[:k].tolist())
    return len(a & b) / k
