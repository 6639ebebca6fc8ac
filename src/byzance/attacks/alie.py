"""A little is enough (ALIE)."""

from __future__ import annotations

from statistics import NormalDist

import torch

from byzance.attacks._registry import GradientAttack, register


def alie_z(n: int, f: int) -> float:
    """The paper's z for n participants of which f are Byzantine.

    s = floor(n / 2 + 1) - f correct workers must be "won over", so
    z = Phi^{-1}((n - s) / n), with Phi the standard normal CDF.
    """
    s = (n // 2 + 1) - f
    p = min(max((n - s) / n, 1e-12), 1 - 1e-12)
    return NormalDist().inv_cdf(p)


def _alie(
    honest: torch.Tensor, f: int, *, rule=None, generator=None, z: float | None = None
) -> torch.Tensor:
    """All f send mean - z * std, per coordinate, of the honest vectors.

    Baruch, Baruch, Goldberg, "A Little Is Enough: Circumventing Defenses For
    Distributed Learning", NeurIPS 2019. Small per-coordinate shifts stay
    within the honest spread, so median-, trimmed-mean- and distance-based
    rules keep them, while they add up to a consistent bias. z defaults to the
    paper's :func:`alie_z` with n = h + f; std is the sample standard deviation
    (zero when h = 1).

    Returns:
        Shape (f, d).
    """
    h = honest.shape[0]
    if z is None:
        z = alie_z(h + f, f)
    # float16/bfloat16: the squares are summed in float32 (they overflow float16 above 256).
    acc = torch.float32 if honest.dtype in (torch.float16, torch.bfloat16) else honest.dtype
    mean = honest.mean(dim=0, dtype=acc)
    # From the centered rows: torch.std(dim=0) reduces along a strided dimension, ~10x slower.
    std = ((honest - mean).square().sum(dim=0) / max(h - 1, 1)).sqrt()
    return (mean - z * std).to(honest.dtype).expand(f, -1).clone()


alie = register(
    GradientAttack(
        name="alie",
        impl=_alie,
        paper="Baruch, Baruch, Goldberg, A Little Is Enough: Circumventing Defenses For "
        "Distributed Learning, NeurIPS 2019",
        summary="mean - z * std per coordinate, z from n and f",
        strength="z",
    )
)
