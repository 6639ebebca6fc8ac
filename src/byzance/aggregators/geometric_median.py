"""Geometric median by the smoothed Weiszfeld algorithm."""

from __future__ import annotations

from typing import Any

import torch

from byzance.aggregators._order import coordinate_median
from byzance.aggregators._registry import Requirement, Rule, register
from byzance.errors import InvalidParameterError


def weiszfeld(
    x: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    nu: float = 1e-6,
    tol: float = 1e-6,
    max_iter: int = 100,
    init: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Smoothed Weiszfeld iterations; returns the estimate (d,) and the iterations run.

    z <- sum_i beta_i x_i / sum_i beta_i, beta_i = w_i / max(nu, |z - x_i|),
    stopping when the objective sum_i w_i |z - x_i| decreases by less than
    ``tol`` times its value, or after ``max_iter`` iterations. Each iteration
    reads the input twice (distances, then the weighted sum).
    """
    n = x.shape[0]
    w = _check_weights(weights, n, x)
    z = coordinate_median(x) if init is None else _check_init(init, x)
    dist = torch.linalg.vector_norm(x - z, dim=1)
    objective = float(w @ dist)
    for iteration in range(1, max_iter + 1):
        beta = w / dist.clamp(min=nu)
        z = (beta @ x) / beta.sum()
        dist = torch.linalg.vector_norm(x - z, dim=1)
        new_objective = float(w @ dist)
        if abs(objective - new_objective) <= tol * max(new_objective, 1e-30):
            return z, iteration
        objective = new_objective
    return z, max_iter


def _check_weights(weights: Any, n: int, x: torch.Tensor) -> torch.Tensor:
    if weights is None:
        return torch.ones(n, dtype=x.dtype, device=x.device)
    w = torch.as_tensor(weights).to(device=x.device, dtype=x.dtype)
    if w.shape != (n,):
        raise InvalidParameterError(
            f"geometric_median: weights must have shape ({n},), one per input; got {tuple(w.shape)}."
        )
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise InvalidParameterError(
            "geometric_median: weights must be finite, non-negative and not all zero."
        )
    return w


def _check_init(init: Any, x: torch.Tensor) -> torch.Tensor:
    z = torch.as_tensor(init).to(device=x.device, dtype=x.dtype)
    if z.shape != x.shape[1:] or not bool(torch.isfinite(z).all()):
        raise InvalidParameterError(
            f"geometric_median: init must be a finite vector of shape ({x.shape[1]},); "
            f"got shape {tuple(z.shape)}."
        )
    return z


def _geometric_median(
    x: torch.Tensor,
    f: int,
    *,
    weights: torch.Tensor | None = None,
    nu: float = 1e-6,
    tol: float = 1e-6,
    max_iter: int = 100,
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Approximate minimizer of sum_i w_i |z - x_i| (the geometric median).

    Smoothed Weiszfeld algorithm of Pillutla, Kakade, Harchaoui, "Robust
    Aggregation for Federated Learning", IEEE Trans. Signal Processing 2022
    (RFA), after Weiszfeld 1937. Breakdown point 1/2: tolerates f < n/2.
    With ``weights`` it is the weighted (reputation-weighted) geometric median.
    Starts from the coordinate-wise median unless ``init`` is given.

    Args:
        x: inputs, shape (n, d).
        f: Byzantine inputs tolerated; requires n >= 2f + 1.
        weights: non-negative weights, shape (n,); uniform by default.
        nu: smoothing: distances below nu count as nu (avoids division by zero).
        tol: relative decrease of the objective at which iterations stop.
        max_iter: iteration cap.
        init: starting point, shape (d,).

    Returns:
        Shape (d,).
    """
    if max_iter < 1 or nu <= 0 or tol < 0:
        raise InvalidParameterError(
            f"geometric_median: need max_iter >= 1, nu > 0, tol >= 0; got "
            f"max_iter={max_iter}, nu={nu}, tol={tol}."
        )
    z, _ = weiszfeld(x, weights, nu=nu, tol=tol, max_iter=max_iter, init=init)
    return z


geometric_median = register(
    Rule(
        name="geometric_median",
        impl=_geometric_median,
        requirement=Requirement(2, 1),
        paper="Pillutla, Kakade, Harchaoui, Robust Aggregation for Federated Learning, "
        "IEEE TSP 2022 (smoothed Weiszfeld)",
        summary="minimizer of the sum of distances (smoothed Weiszfeld)",
        row_params=("weights",),
    )
)
