"""Fake accounts: new users whose ratings serve an attacker.

Three behaviours (shilling attacks on recommenders; Lam, Riedl, "Shilling
recommender systems for fun and profit", WWW 2004; Mobasher et al., ACM TOIT
2007), each for ``count`` accounts created for the attack:

- ``push``: rate the target item 5 and its neighbours (the items it must
  overtake, e.g. those ranked just above it) 1;
- ``bury``: rate a competitor 1 and its neighbours 5 (so that they overtake it);
- ``hyperactive``: rate every item with an extreme value, 5 for the target and
  1 for all the others.
"""

from __future__ import annotations

import torch

from byzance.errors import InvalidParameterError
from byzance.voting.data import Ratings

KINDS = ("push", "bury", "hyperactive")


def fake_ratings(
    kind: str, count: int, num_items: int, target: int, neighbours: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(user, item, rating) of ``count`` fake accounts, users numbered from 0.

    ``target`` is the pushed item (``push``, ``hyperactive``) or the buried
    competitor (``bury``); ``neighbours`` (k,) the items rated opposite to it.
    """
    if kind not in KINDS:
        raise InvalidParameterError(
            f"fake accounts: kind must be one of {', '.join(KINDS)}; got {kind!r}."
        )
    if count < 0 or not 0 <= target < num_items:
        raise InvalidParameterError(
            f"fake accounts: need count >= 0 and 0 <= target < {num_items}; got {count}, {target}."
        )
    neighbours = neighbours[neighbours != target]
    if kind == "hyperactive":
        items = torch.arange(num_items)
        values = torch.where(items == target, 5.0, 1.0).to(torch.float64)
    else:
        items = torch.cat([torch.tensor([target]), neighbours])
        high, low = (5.0, 1.0) if kind == "push" else (1.0, 5.0)
        values = torch.full((len(items),), low, dtype=torch.float64)
        values[0] = high
    user = torch.arange(count).repeat_interleave(len(items))
    return user, items.repeat(count), values.repeat(count)


def with_fake_accounts(
    ratings: Ratings, kind: str, fraction: float, target: int, neighbours: torch.Tensor
) -> tuple[Ratings, int]:
    """``ratings`` plus round(fraction * num_users) fake accounts; also returns their number.

    The fake accounts are the last users (indices ``ratings.num_users`` on).
    """
    if not 0 <= fraction < 1:
        raise InvalidParameterError(f"fake accounts: fraction must be in [0, 1); got {fraction}.")
    count = round(fraction * ratings.num_users)
    if count == 0:
        return ratings, 0
    user, item, rating = fake_ratings(kind, count, ratings.num_items, target, neighbours)
    return ratings.add_users(user, item, rating), count
