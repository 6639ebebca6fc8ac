"""Pairwise squared Euclidean distances from one Gram product.

``|x_i - x_j|^2 = |x_i|^2 + |x_j|^2 - 2 <x_i, x_j>`` costs one (n x d) by
(d x n) product instead of an (n, n, d) tensor. When the vectors share a large
common offset the subtraction cancels: its absolute error is about
``eps * (|x_i|^2 + |x_j|^2)``. We detect that case (some nearest-neighbour
distance within the error bound) and recompute after subtracting the
coordinate-wise median, a translation that leaves distances unchanged and that
a minority of huge inputs cannot drag away.
"""

from __future__ import annotations

import torch

# A distance within this many ulps of the squared norms involved is not trusted.
_CANCELLATION_ULPS = 256.0


def _gram_sq_distances(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances (n, n) and squared norms (n,) from the Gram matrix of ``x`` (n, d)."""
    gram = x @ x.T
    sq = gram.diagonal().clone()
    dist = sq[:, None] + sq[None, :] - 2.0 * gram
    dist = (dist + dist.T) * 0.5  # BLAS need not return an exactly symmetric Gram matrix
    dist.clamp_(min=0.0)
    dist.fill_diagonal_(0.0)
    return dist, sq


def _cancellation_suspected(dist: torch.Tensor, sq: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether some row's nearest-neighbour distance is within rounding error of zero.

    Exact duplicates (common: Byzantine workers sending the same vector) are
    set to distance zero and need no recomputation.
    """
    if dist.shape[0] < 2:
        return False
    off = dist.clone()
    off.fill_diagonal_(float("inf"))
    nearest, j = off.min(dim=1)
    bound = _CANCELLATION_ULPS * torch.finfo(dist.dtype).eps * (sq + sq[j])
    for i in (nearest <= bound).nonzero().flatten().tolist():
        k = int(j[i])
        if not torch.equal(x[i], x[k]):
            return True
        dist[i, k] = dist[k, i] = 0.0
    return False


def sq_distances(x: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between the rows of ``x`` (n, d), shape (n, n).

    Symmetric, zero on the diagonal, non-negative; accurate relative to the
    spread of the vectors rather than to their norms (see the module docstring).
    """
    dist, sq = _gram_sq_distances(x)
    if _cancellation_suspected(dist, sq, x):
        from byzance.aggregators._order import coordinate_median

        dist, _ = _gram_sq_distances(x - coordinate_median(x))
    return dist
