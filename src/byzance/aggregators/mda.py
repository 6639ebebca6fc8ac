"""Minimum-diameter averaging (MDA)."""

from __future__ import annotations

import itertools
import math
from typing import Annotated

import torch

from byzance.aggregators._pairwise import sq_distances
from byzance.aggregators._registry import Requirement, Rule, register
from byzance.errors import IntractableError
from byzance.registry import Bound

# Masks of this many subsets, each (n, n), are examined at once.
_BATCH_ELEMENTS = 1 << 22


def _select_mda(x: torch.Tensor, f: int, *, max_subsets: int = 2_000_000) -> torch.Tensor:
    """Indices (n - f,) of the subset of smallest diameter (see :func:`_mda`)."""
    n = x.shape[0]
    count = math.comb(n, f)
    if count > max_subsets:
        raise IntractableError(
            f"mda: exact minimum-diameter averaging must examine C({n}, {f}) = {count:,} "
            f"subsets, above max_subsets={max_subsets:,}. Use a smaller f, raise "
            "max_subsets if you can wait, or use multi_krum or meamed, which scale to large n."
        )
    dist = sq_distances(x)
    batch = max(1, _BATCH_ELEMENTS // (n * n))
    # Smallest diameter first; equal diameters (common: the same pair spans both
    # subsets) go to the smaller sum of squared distances within the subset, which
    # does not depend on the order of the inputs; only exact ties on both keys go
    # to the first subset in lexicographic order.
    # The best subset so far stays on the device (its diameter, spread and kept mask):
    # the chunks are compared there, with no host synchronization per chunk. Only the
    # removed inputs of each chunk, enumerated on the host, are copied to the device.
    best: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    removals = itertools.combinations(range(n), f)
    while chunk := list(itertools.islice(removals, batch)):
        keep = torch.ones(len(chunk), n, dtype=torch.bool, device=x.device)
        if f:
            rows = torch.arange(len(chunk), device=x.device).repeat_interleave(f)
            keep[rows, torch.tensor(chunk, device=x.device).flatten()] = False
        pair = keep[:, :, None] & keep[:, None, :]
        inside = torch.where(pair, dist, 0.0)
        diameters = inside.amax(dim=(1, 2))
        spreads = inside.sum(dim=(1, 2))
        smallest = diameters.min()
        spreads = torch.where(diameters == smallest, spreads, math.inf)
        i = torch.argmin(spreads)  # the first of the smallest: lexicographic order
        candidate = (diameters[i], spreads[i], keep[i])
        if best is None:
            best = candidate
        else:  # strictly better only: an equal later chunk loses, as in lexicographic order
            better = (candidate[0] < best[0]) | (
                (candidate[0] == best[0]) & (candidate[1] < best[1])
            )
            best = (
                torch.where(better, candidate[0], best[0]),
                torch.where(better, candidate[1], best[1]),
                torch.where(better, candidate[2], best[2]),
            )
    assert best is not None  # C(n, f) >= 1
    # The kept inputs in increasing order, n - f of them, without a nonzero() sync.
    return torch.argsort((~best[2]).to(torch.uint8), stable=True)[: n - f]


def _mda(
    x: torch.Tensor, f: int, *, max_subsets: Annotated[int, Bound(1)] = 2_000_000
) -> torch.Tensor:
    """Average of the n - f inputs whose subset has the smallest diameter.

    diameter(S) = max over i, j in S of |x_i - x_j|. Exact: every subset of
    size n - f is examined (C(n, f) of them); equal diameters are decided by
    the sum of squared distances within the subset (order-independent), then
    by the first subset in lexicographic order of the removed inputs. El Mhamdi, Guerraoui, Rouault,
    "Distributed Momentum for Byzantine-resilient Stochastic Gradient Descent",
    ICLR 2021 (MDA, after Rousseeuw's minimum volume estimators, 1985).

    Args:
        x: inputs, shape (n, d).
        f: Byzantine inputs tolerated; requires n >= 2f + 1.
        max_subsets: refuse (IntractableError) above this many subsets.

    Returns:
        Shape (d,).
    """
    kept = _select_mda(x, f, max_subsets=max_subsets)
    weights = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    weights[kept] = 1.0 / len(kept)
    return weights @ x


mda = register(
    Rule(
        name="mda",
        impl=_mda,
        selector=_select_mda,
        requirement=Requirement(2, 1),
        paper="El Mhamdi, Guerraoui, Rouault, Distributed Momentum for Byzantine-resilient "
        "SGD, ICLR 2021 (minimum-diameter averaging)",
        summary="average of the n - f inputs with the smallest diameter (exact)",
        cost=(
            "One Gram product, O(n^2 d), then C(n, f) subsets scored in O((n - f)^2) "
            "each; refused above max_subsets (IntractableError)."
        ),
        missing="whole_vectors",
        speed_floor="gram",
    )
)
