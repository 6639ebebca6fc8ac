"""Nearest-neighbour mixing (NNM), a pre-aggregator."""

from __future__ import annotations

import torch

from byzance.aggregators._alloc import empty_rows
from byzance.aggregators._pairwise import sq_distances
from byzance.aggregators._registry import Requirement, Rule, register


def _nnm(x: torch.Tensor, f: int) -> torch.Tensor:
    """Replace each input by the mean of its n - f nearest inputs, itself included.

    Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan, "Fixing by Mixing:
    A Recipe for Optimal Byzantine ML under Heterogeneity", AISTATS 2023. Costs
    one Gram product and one (n x n) by (n x d) mixing product.

    Args:
        x: inputs, shape (n, d).
        f: Byzantine inputs tolerated; requires n >= 2f + 1.

    Returns:
        Shape (n, d): the mixed inputs, for any aggregation rule with the same f.
    """
    n = x.shape[0]
    dist = sq_distances(x)
    dist.fill_diagonal_(-1.0)  # each input is its own nearest neighbour, even among duplicates
    nearest = torch.topk(dist, n - f, dim=1, largest=False).indices
    mixing = torch.zeros(n, n, dtype=x.dtype, device=x.device)
    mixing.scatter_(1, nearest, 1.0 / (n - f))
    return torch.mm(mixing, x, out=empty_rows((mixing.shape[0], x.shape[1]), like=x))


nnm = register(
    Rule(
        name="nnm",
        impl=_nnm,
        requirement=Requirement(2, 1),
        paper="Allouah et al., Fixing by Mixing: A Recipe for Optimal Byzantine ML under "
        "Heterogeneity, AISTATS 2023",
        summary="each input replaced by the mean of its n - f nearest neighbours",
        cost=(
            "One Gram product, O(n^2 d), and one (n x n) by (n x d) mixing product; output (n, d)."
        ),
        missing="whole_vectors",
        speed_floor="gram",
        speed_target=2.0,
        kind="preaggregator",
        checks_rows=True,
    )
)
