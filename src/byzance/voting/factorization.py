"""Matrix factorization trained on robustly aggregated per-user gradients (a federated recommender).

Prediction r_uj = mu + b_j + c_u + <p_u, q_j>. Every user keeps their own
factors (p_u, c_u) and updates them locally; the server owns the items'
(q_j, b_j) and updates them with the aggregate of the users' gradients, as a
parameter server aggregates workers' gradients. User u's gradient on item j's
parameters is e_uj (p_u, 1), e_uj = r_uj_hat - r_uj, and exists only when u
rated j: the aggregation is sparse (:mod:`byzance.voting.sparse`): per item
over its raters for the coordinate-wise rules, one unit force per user's whole
gradient for the geometric median. Fake accounts are users with fake ratings:
their gradients are honestly computed from them (data poisoning).

Full-batch gradient descent; mu is the median of the training ratings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from byzance.errors import InvalidParameterError
from byzance.voting import sparse
from byzance.voting.data import Ratings


@dataclass
class Factorization:
    """Trained parameters: user factors (n, k) and biases (n,), item factors (m, k) and biases (m,)."""

    mu: float
    user_factors: torch.Tensor
    user_bias: torch.Tensor
    item_factors: torch.Tensor
    item_bias: torch.Tensor

    def predict(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """(N,) predicted ratings of the pairs (user[k], item[k]), clipped to 1..5."""
        dot = (self.user_factors[user] * self.item_factors[item]).sum(1)
        return (self.mu + self.item_bias[item] + self.user_bias[user] + dot).clamp(1.0, 5.0)

    def rmse(self, ratings: Ratings) -> float:
        """Root mean squared error on ``ratings`` (users and items must be known to the model)."""
        err = self.predict(ratings.user, ratings.item) - ratings.rating
        return float(err.square().mean().sqrt())

    def item_scores(self, users: torch.Tensor) -> torch.Tensor:
        """(m,) mean predicted rating of every item over ``users`` (their recommendation score)."""
        u = self.user_factors[users]
        dot = self.item_factors @ u.mean(0)
        return self.mu + self.item_bias + self.user_bias[users].mean() + dot


def train_factorization(
    ratings: Ratings,
    rule: str = "average",
    *,
    rank: int = 8,
    steps: int = 150,
    lr: float = 0.5,
    l2: float = 0.05,
    trim: float = 0.1,
    weights: Any = None,
    gm_iter: int = 10,
    seed: int = 0,
) -> Factorization:
    """Train on ``ratings`` with the items' gradients aggregated by ``rule`` (see :data:`sparse.RULES`).

    Each step: every user computes its errors e_uj; the server aggregates,
    for every item, the users' gradients e_uj (p_u, 1) with ``rule`` (user
    ``weights`` for the weighted rules) and steps its item parameters by
    ``lr`` (plus L2 ``l2``); every user steps its own parameters by the mean
    of its gradients. The geometric median runs ``gm_iter`` Weiszfeld
    iterations per step from the previous step's aggregate. Deterministic
    given ``seed``.
    """
    if rule not in sparse.RULES:
        raise InvalidParameterError(
            f"factorization: rule must be one of {', '.join(sparse.RULES)}; got {rule!r}."
        )
    if rank < 1 or steps < 1 or lr <= 0 or l2 < 0:
        raise InvalidParameterError(
            f"factorization: need rank >= 1, steps >= 1, lr > 0, l2 >= 0; got {rank}, {steps}, {lr}, {l2}."
        )
    gen = torch.Generator().manual_seed(seed)
    n, m = ratings.num_users, ratings.num_items
    user, item, r = ratings.user, ratings.item, ratings.rating
    model = Factorization(
        mu=float(r.median()),
        user_factors=0.1 * torch.randn(n, rank, generator=gen, dtype=torch.float64),
        user_bias=torch.zeros(n, dtype=torch.float64),
        item_factors=0.1 * torch.randn(m, rank, generator=gen, dtype=torch.float64),
        item_bias=torch.zeros(m, dtype=torch.float64),
    )
    previous = None  # the geometric median starts from the last step's aggregate
    per_user = torch.bincount(user, minlength=n).clamp(min=1).to(torch.float64)[:, None]
    for _ in range(steps):
        p, q = model.user_factors[user], model.item_factors[item]
        err = model.mu + model.item_bias[item] + model.user_bias[user] + (p * q).sum(1) - r
        grads = torch.cat([err[:, None] * p, err[:, None]], dim=1)  # (N, rank + 1): item params
        agg = sparse.aggregate(
            rule,
            grads,
            item,
            user,
            m,
            n,
            weights=weights,
            trim=trim,
            gm_init=previous,
            gm_iter=gm_iter,
        )
        agg = torch.nan_to_num(agg)  # items without ratings get no gradient
        previous = agg
        user_grad = (
            torch.zeros(n, rank + 1, dtype=torch.float64).index_add_(
                0, user, torch.cat([err[:, None] * q, err[:, None]], dim=1)
            )
            / per_user
        )
        model.item_factors -= lr * (agg[:, :rank] + l2 * model.item_factors)
        model.item_bias -= lr * agg[:, rank]
        model.user_factors -= lr * (user_grad[:, :rank] + l2 * model.user_factors)
        model.user_bias -= lr * user_grad[:, rank]
    return model
