"""Krum and Multi-Krum."""

from __future__ import annotations

from typing import Annotated

import torch

from byzance.aggregators._pairwise import sq_distances
from byzance.aggregators._registry import Requirement, Rule, register
from byzance.errors import InvalidParameterError
from byzance.registry import Bound

PAPER = (
    "Blanchard, El Mhamdi, Guerraoui, Stainer, Machine Learning with Adversaries: "
    "Byzantine Tolerant Gradient Descent, NeurIPS 2017"
)


def krum_scores(dist: torch.Tensor, f: int) -> torch.Tensor:
    """Krum scores (n,) from squared distances ``dist`` (n, n).

    score(i) = sum of the squared distances from x_i to its n - f - 2 nearest
    other vectors (at least one neighbour, for Bulyan's last rounds).
    """
    n = dist.shape[0]
    k = max(n - f - 2, 1)
    others = dist.clone()
    others.fill_diagonal_(float("inf"))
    return torch.topk(others, min(k, n - 1), dim=1, largest=False).values.sum(dim=1)


def krum_ranking(dist: torch.Tensor, f: int) -> torch.Tensor:
    """Indices (n,) from the best Krum score to the worst, from squared distances (n, n).

    Equal scores (e.g. two mutually nearest inputs when one neighbour counts)
    are ordered by the sum of squared distances to all inputs, so that the
    choice does not depend on the order of the inputs; only exact ties on both
    keys go to the lower index.
    """
    by_total = torch.sort(dist.sum(dim=1), stable=True).indices
    scores = krum_scores(dist, f)[by_total]
    return by_total[torch.sort(scores, stable=True).indices]


def _select_krum(x: torch.Tensor, f: int) -> torch.Tensor:
    """Index (1,) of the input with the lowest Krum score."""
    return krum_ranking(sq_distances(x), f)[:1]


def _select_multi_krum(
    x: torch.Tensor, f: int, *, m: Annotated[int, Bound(1)] | None = None
) -> torch.Tensor:
    """Indices (m,) of the m inputs with the lowest Krum scores."""
    n = x.shape[0]
    m = n - f if m is None else m
    if not 1 <= m <= n:
        raise InvalidParameterError(f"multi_krum: m must be in [1, n={n}]; got m={m}.")
    return krum_ranking(sq_distances(x), f)[:m]


def _krum(x: torch.Tensor, f: int) -> torch.Tensor:
    """The input with the lowest Krum score.

    score(i) = sum of squared distances from x_i to its n - f - 2 nearest
    other inputs (Blanchard et al., NeurIPS 2017). Equal scores are decided by
    the sum of squared distances to all inputs (see :func:`krum_ranking`).

    Args:
        x: inputs, shape (n, d).
        f: Byzantine inputs tolerated; requires n >= 2f + 3.

    Returns:
        Shape (d,): one of the inputs.

    Example:
        >>> krum(torch.tensor([[0.0], [1.0], [2.0], [3.0], [90.0]]), f=1)
        tensor([1.])
    """
    return x.index_select(0, _select_krum(x, f))[0]  # a device index: no host sync


def _multi_krum(
    x: torch.Tensor, f: int, *, m: Annotated[int, Bound(1)] | None = None
) -> torch.Tensor:
    """Average of the m inputs with the lowest Krum scores.

    Blanchard et al., NeurIPS 2017 (Multi-Krum, Section 5); m = n - f by default
    (El Mhamdi et al., ICML 2018). m = 1 is Krum.

    Args:
        x: inputs, shape (n, d).
        f: Byzantine inputs tolerated; requires n >= 2f + 3.
        m: number of inputs averaged, 1 <= m <= n.

    Returns:
        Shape (d,).
    """
    n = x.shape[0]
    chosen = _select_multi_krum(x, f, m=m)
    m = len(chosen)
    weights = torch.zeros(n, dtype=x.dtype, device=x.device)
    weights[chosen] = 1.0 / m
    return weights @ x


krum = register(
    Rule(
        name="krum",
        impl=_krum,
        selector=_select_krum,
        requirement=Requirement(2, 3),
        paper=PAPER,
        summary="the input closest to its n - f - 2 nearest neighbours",
        cost="One Gram product, O(n^2 d), then O(n^2) for the scores.",
        missing="whole_vectors",
        speed_floor="gram",
        checks_rows=True,
        speed_target=2.0,
    )
)
multi_krum = register(
    Rule(
        name="multi_krum",
        impl=_multi_krum,
        selector=_select_multi_krum,
        requirement=Requirement(2, 3),
        paper=PAPER,
        summary="average of the m inputs with the best Krum scores",
        cost="One Gram product, O(n^2 d), then O(n^2) for the scores and O(md) to average.",
        missing="whole_vectors",
        speed_floor="gram",
        checks_rows=True,
        speed_target=2.0,
    )
)
