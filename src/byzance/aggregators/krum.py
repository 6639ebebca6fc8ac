"""Krum and Multi-Krum."""

from __future__ import annotations

import torch

from byzance.aggregators._pairwise import sq_distances
from byzance.aggregators._registry import Requirement, Rule, register
from byzance.errors import InvalidParameterError

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


def _lowest(scores: torch.Tensor, m: int) -> torch.Tensor:
    """Indices (m,) of the m lowest scores; ties go to the lower index."""
    return torch.sort(scores, stable=True).indices[:m]


def _krum(x: torch.Tensor, f: int) -> torch.Tensor:
    """The input with the lowest Krum score.

    score(i) = sum of squared distances from x_i to its n - f - 2 nearest
    other inputs (Blanchard et al., NeurIPS 2017). Ties go to the lower index.

    Args:
        x: inputs, shape (n, d).
        f: Byzantine inputs tolerated; requires n >= 2f + 3.

    Returns:
        Shape (d,): one of the inputs.

    Example:
        >>> krum(torch.tensor([[0.0], [1.0], [2.0], [3.0], [90.0]]), f=1)
        tensor([1.])
    """
    scores = krum_scores(sq_distances(x), f)
    return x[int(torch.argmin(scores))].clone()


def _multi_krum(x: torch.Tensor, f: int, *, m: int | None = None) -> torch.Tensor:
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
    m = n - f if m is None else m
    if not 1 <= m <= n:
        raise InvalidParameterError(f"multi_krum: m must be in [1, n={n}]; got m={m}.")
    chosen = _lowest(krum_scores(sq_distances(x), f), m)
    weights = torch.zeros(n, dtype=x.dtype, device=x.device)
    weights[chosen] = 1.0 / m
    return weights @ x


krum = register(
    Rule(
        name="krum",
        impl=_krum,
        requirement=Requirement(2, 3),
        paper=PAPER,
        summary="the input closest to its n - f - 2 nearest neighbours",
    )
)
multi_krum = register(
    Rule(
        name="multi_krum",
        impl=_multi_krum,
        requirement=Requirement(2, 3),
        paper=PAPER,
        summary="average of the m inputs with the best Krum scores",
    )
)
