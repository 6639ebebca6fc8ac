"""Centered clipping, the stateful rule that learns from history."""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch

from byzance.aggregators import _native_rows
from byzance.aggregators._input import all_finite, first_pass, first_pass_armed
from byzance.aggregators._pairwise import distances_from_squares, distances_to
from byzance.aggregators._registry import Requirement, Rule, register
from byzance.aggregators._shard import any_block, is_sharded
from byzance.errors import InvalidParameterError
from byzance.registry import Bound


def _centered_clipping(
    x: torch.Tensor,
    f: int,
    *,
    center: torch.Tensor | None = None,
    tau: Annotated[float, Bound(0, open_low=True)] | None = None,
    iterations: Annotated[int, Bound(1)] = 1,
) -> torch.Tensor:
    """Iterate v <- v + (1/n) sum_i clip(x_i - v, tau) from ``center``.

    clip(u, tau) = u * min(1, tau / |u|). Karimireddy, He, Jaggi, "Learning
    from History for Byzantine Robust Optimization", ICML 2021: the workers
    send their momentum m_i (m <- beta m + (1 - beta) g in the paper), the
    server runs L clipping iterations starting from the previous step's
    aggregate, and the result is the next step's center. The state is
    explicit: the result is the next call's ``center``; with no center (the
    first step) the iterations start from zero, as in the authors' code.

    The radius must be on the scale of the honest vectors' distances to the
    center: the paper's analysis takes tau of order sqrt(rho^2 + B^2), rho^2
    the honest variance and B the center's distance to the honest mean, both
    unknown to the server. A fixed radius far above that scale (the authors'
    CIFAR-10 code uses tau = 100, L = 1) lets each Byzantine input move the
    center by tau / n per iteration; far below, honest inputs are cut to tau
    and the aggregate lags. Where byzance differs: by default (``tau=None``)
    each iteration uses tau = the median of the distances |x_i - v|, an
    estimate of sqrt(rho^2 + B^2) that f < n / 2 Byzantine inputs cannot
    inflate, so the rule is scale-equivariant (the same for gradients, moving
    averages or heavy-ball momentum, 1 / (1 - beta) times larger) and a
    Byzantine input moves the center by at most that median / n per
    iteration. Pass a number to fix tau, as in the paper's experiments.

    Args:
        x: inputs, shape (n, d).
        f: Byzantine inputs tolerated; requires n >= 2f + 1.
        center: starting point v_0, shape (d,), usually the previous output.
        tau: clipping radius, > 0; None (default): the median distance from
            the current center to the inputs, recomputed at each iteration.
        iterations: number of clipping iterations L >= 1 (the paper uses 1
            with momentum, more without).

    Returns:
        Shape (d,): the new state v_L.
    """
    if not ((tau is None or tau > 0) and isinstance(iterations, int) and iterations >= 1):
        raise InvalidParameterError(
            f"centered_clipping: need tau > 0 and iterations >= 1; got tau={tau}, "
            f"iterations={iterations}."
        )
    v = _check_center(center, x)
    out, finite = _iterate(x, v, tau, iterations)
    if x.dtype != torch.float64 and not finite:
        # Finite inputs near the dtype's largest value overflow its sums: again in float64.
        out = _iterate(x.double(), v.double(), tau, iterations)[0].to(x.dtype)
    return out


def _iterate(
    x: torch.Tensor, v: torch.Tensor, tau: float | None, iterations: int
) -> tuple[torch.Tensor, bool]:
    """v_L (d,) after ``iterations`` clipping steps from ``v`` (d,), and whether it is finite."""
    n = x.shape[0]
    native = _native_rows.takes(x)
    # The C kernels' distances are float64 sums, kept so for the scales they feed (float32
    # for half-precision inputs, whose norms may exceed float16's range).
    acc = torch.float64 if native else torch.promote_types(x.dtype, torch.float32)
    fused = native and not is_sharded()  # a block's distances would be partial sums
    finite, radius = True, None
    for i in range(iterations):
        if radius is None:
            radius = distances_to(x, v, out_dtype=acc)
        if i == 0 and first_pass_armed():  # a NaN/inf row has a NaN/inf distance
            # One sum for n distances: a finite row whose distances overflow the sum only
            # sends the call to the explicit check, which keeps it.
            first_pass(math.isfinite(float(radius.sum())))
        limit = radius.median() if tau is None else tau
        # min(1, limit / radius), in place (as limit / radius would compute it: 1 / radius * limit)
        scale = radius.clamp(min=torch.finfo(radius.dtype).tiny).reciprocal_()
        scale = scale.mul_(limit).clamp_(max=1.0)
        radius = None
        if fused and i + 1 < iterations:  # the step and the next distances in one pass (C)
            v, sq, finite = _native_rows.step_and_sq_distances(x, scale, v, n)
            radius = distances_from_squares(sq, x, v, out_dtype=acc)
        elif native:  # v + (1/n) sum_i s_i (x_i - v), one pass in C that reports finiteness
            v, finite = _native_rows.weighted_step(x, scale, v, n)
        else:
            # v + (sum_i s_i x_i - S v) / n as one product: (1 - S/n) v + (1/n) x^T s, with
            # S kept on the device (a Python beta would synchronize with the host).
            v = torch.addmv(v * (1.0 - scale.sum() / n), x.T, scale.to(x.dtype), alpha=1.0 / n)
    if not native:
        return v, all_finite(v)
    return v, not any_block(not finite)  # every block of a sharded call takes the same path


def _check_center(center: Any, x: torch.Tensor) -> torch.Tensor:
    if center is None:
        return torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
    v = torch.as_tensor(center).to(device=x.device, dtype=x.dtype)
    if v.shape != x.shape[1:]:
        raise InvalidParameterError(
            f"centered_clipping: center must have shape ({x.shape[1]},) like each input; "
            f"got {tuple(v.shape)}."
        )
    if not all_finite(v):
        raise InvalidParameterError(
            "centered_clipping: center holds NaN or inf; restart from None (zeros)."
        )
    return v


centered_clipping = register(
    Rule(
        name="centered_clipping",
        impl=_centered_clipping,
        requirement=Requirement(2, 1),
        paper="Karimireddy, He, Jaggi, Learning from History for Byzantine Robust "
        "Optimization, ICML 2021",
        summary=(
            "clipped steps from the previous aggregate (radius: the median distance, or tau); "
            "stateful, state passed explicitly"
        ),
        cost="O(nd) per clipping iteration.",
        missing="whole_vectors",
        speed_floor="pass",
        carries_center=True,
        checks_rows=True,
    )
)
