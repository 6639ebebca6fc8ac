"""Geometric median by the smoothed Weiszfeld algorithm."""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch

from byzance.aggregators import _native_rows
from byzance.aggregators._input import all_finite, first_pass
from byzance.aggregators._pairwise import (
    central_point_and_distances,
    distances_from_squares,
    distances_to,
)
from byzance.aggregators._registry import Requirement, Rule, register
from byzance.aggregators._shard import is_sharded
from byzance.aggregators._shard import norms as whole_norms
from byzance.errors import InvalidParameterError
from byzance.registry import Bound


def weiszfeld(
    x: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    nu: float = 1e-6,
    tol: float = 1e-6,
    max_iter: int = 100,
    init: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Weiszfeld iterations with Vardi and Zhang's step off the inputs; (d,) estimate and iterations.

    Away from the inputs: z <- sum_i beta_i x_i / sum_i beta_i with
    beta_i = w_i / |z - x_i|. When z lies within ``nu`` of inputs of total
    weight eta, those inputs are left out of the average T and of the
    resultant r = |sum_i beta_i (x_i - z)|; if r <= eta, z is optimal (stop),
    else z <- (1 - eta/r) T + (eta/r) z, which plain (or smoothed) Weiszfeld
    cannot do: started on an input, it stays there (Vardi, Zhang, "The
    multivariate L1-median and associated data depth", PNAS 2000). Stops when
    the objective sum_i w_i |z - x_i| decreases by less than ``tol`` times
    its value, or after ``max_iter`` iterations; stopped by ``tol`` with an
    input within four of its last steps, it returns that input if its
    objective is no larger (Weiszfeld creeps toward a median that lies on an
    input, see :func:`_nearest_input_if_better`). Each iteration reads the
    input twice (the weighted sum, then the distances to it), or, on the CPU
    with the C kernels, once: each panel of columns gives its part of the
    weighted mean and then, from the cache, its part of the distances to it
    (:func:`~byzance.aggregators._native_rows.step_and_sq_distances`); the
    last iteration skips the distances of its stopping test. Without ``init`` it starts from
    :func:`~byzance.aggregators._pairwise.central_point_and_distances` (robust, no
    sort), whose Gram products also give the first distances.

    Everything stays on ``x``'s device; each iteration synchronizes with the
    host once (the objective, the weight on inputs at z and the weights' sum
    together, which the stopping tests need), twice when z lies on an input.
    float16/bfloat16 inputs are iterated in float32 (the weights 1/|z - x_i|
    reach 1/nu, beyond float16's range) and the estimate is returned in the
    input's dtype.
    """
    dtype = x.dtype
    if dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    n = x.shape[0]
    w = _check_weights(weights, n, x)
    dist = None
    if init is None:  # the start's Gram products give the first distances too
        z, dist = central_point_and_distances(x, w)
    else:
        z = _check_init(init, x)
    if dist is None:
        dist = distances_to(x, z)
    beta, beta_sum, (objective, eta, total) = _weights_at(dist, w, nu)
    first_pass(math.isfinite(objective))  # a NaN/inf row makes its distance, so this, non-finite
    fused = _native_rows.takes(x) and not is_sharded()
    for iteration in range(1, max_iter + 1):
        if total == 0.0:  # every input with weight coincides with z
            return z.to(dtype), iteration
        z_prev, sq = z, None
        if fused and eta == 0.0 and iteration < max_iter:
            # The weighted mean and the distances to it in one pass over memory (C): no
            # input lies at z, so the mean is the next iterate.
            z_next, sq, finite = _native_rows.step_and_sq_distances(x, beta, None, total)
            z, sq = (z_next, sq) if finite else (z, None)
        if sq is None:
            weighted = beta @ x
            average = weighted / beta_sum
            if eta > 0.0:
                r = float(whole_norms(weighted - beta_sum * z))
                if r <= eta:
                    return z.to(dtype), iteration  # optimal at this input (Vardi-Zhang condition)
                z = (1.0 - eta / r) * average + (eta / r) * z
            else:
                z = average
        if iteration == max_iter:
            return z.to(dtype), max_iter  # no stopping test left: skip its distance pass
        dist = distances_to(x, z) if sq is None else distances_from_squares(sq, x, z)
        beta, beta_sum, (new_objective, eta, total) = _weights_at(dist, w, nu)
        if abs(objective - new_objective) <= tol * max(new_objective, 1e-30):
            z = _nearest_input_if_better(x, w, z, z_prev, dist, new_objective)
            return z.to(dtype), iteration
        objective = new_objective
    return z.to(dtype), max_iter


def _nearest_input_if_better(
    x: torch.Tensor,
    w: torch.Tensor,
    z: torch.Tensor,
    z_prev: torch.Tensor,
    dist: torch.Tensor,
    objective: float,
) -> torch.Tensor:
    """z (d,), or the input nearest it when Weiszfeld was creeping toward that input and
    its objective is no larger.

    Weiszfeld approaches a geometric median that lies on an input only linearly
    (Vardi and Zhang's step acts once z is within nu of it, not before), so the
    relative-decrease test stops it short, about a few of its last steps away (1-D
    inputs 0, 0, 0, 1, 1708: stopped at 0.0033, for a median of 0). When the nearest
    input (of positive weight) lies within four last steps of z, one more distance pass
    compares the two objectives; otherwise nothing is computed.
    """
    near = torch.where(w > 0, dist, math.inf).argmin()
    if not bool(dist[near] <= 4.0 * whole_norms(z - z_prev)):
        return z
    candidate = x[near]
    if float(w @ distances_to(x, candidate)) <= objective:
        return candidate.clone()
    return z


def _weights_at(
    dist: torch.Tensor, w: torch.Tensor, nu: float
) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Weiszfeld's weights beta (n,) and their sum at distances ``dist`` (n,), with
    ``[objective, eta, sum of beta]`` read back in one host synchronization."""
    on_input = dist < nu
    beta = torch.where(on_input, 0.0, w / dist.clamp(min=nu))
    beta_sum = beta.sum()
    eta = torch.where(on_input, w, 0.0).sum()
    return beta, beta_sum, torch.stack([w @ dist, eta, beta_sum]).tolist()


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
    if z.shape != x.shape[1:] or not all_finite(z):
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
    nu: Annotated[float, Bound(0, open_low=True)] = 1e-6,
    tol: Annotated[float, Bound(0)] = 1e-6,
    max_iter: Annotated[int, Bound(1)] = 100,
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Approximate minimizer of sum_i w_i |z - x_i| (the geometric median).

    Weiszfeld's algorithm (1937) as used by Pillutla, Kakade, Harchaoui,
    "Robust Aggregation for Federated Learning", IEEE Trans. Signal Processing
    2022 (RFA), with distances floored at ``nu`` and Vardi and Zhang's step
    for iterates that land on an input (see :func:`weiszfeld`). Breakdown
    point 1/2: tolerates f < n/2.
    With ``weights`` it is the weighted (reputation-weighted) geometric median.
    Unless ``init`` is given, starts from a robust central point that costs no
    sort (:func:`~byzance.aggregators._pairwise.central_point`): of the
    weighted mean and rows (every row for n <= 32, else the medoid of each
    group of about sqrt(n) rows), those of least sum of distances, from Gram
    products. Fewer than half Byzantine rows cannot drag it farther than the
    honest rows' spread allows, so a far row costs no extra iterations; the
    fixed point, and the stopping test, are Weiszfeld's as before.

    Args:
        x: inputs, shape (n, d).
        f: Byzantine inputs tolerated; requires n >= 2f + 1.
        weights: non-negative weights, shape (n,); uniform by default.
        nu: distances below nu count as coinciding with the input.
        tol: relative decrease of the objective at which iterations stop.
        max_iter: iteration cap.
        init: starting point, shape (d,).

    Returns:
        Shape (d,).
    """
    if not (isinstance(max_iter, int) and max_iter >= 1 and nu > 0 and tol >= 0):
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
        cost=(
            "O(nd) per Weiszfeld iteration (distances and one weighted sum), up to max_iter; "
            "the start: Gram products, O(n d (k + n / k)) with k ~ sqrt(n), no sort."
        ),
        missing="whole_vectors",
        speed_floor="pass",
        row_params=("weights",),
        checks_rows=True,
    )
)
