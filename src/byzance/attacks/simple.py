"""Attacks that need no knowledge of the rule: huge, flipped, noisy, broken or stuck vectors."""

from __future__ import annotations

from typing import Annotated

import torch

from byzance.attacks._registry import GradientAttack, register
from byzance.errors import InvalidParameterError
from byzance.registry import Bound

DIRECTIONS = ("against_mean", "fixed", "random")


def _unit_direction(
    direction: str | torch.Tensor,
    honest: torch.Tensor,
    generator: torch.Generator | None,
    seed: int,
) -> torch.Tensor:
    """The unit vector (d,) the large vector points along, in ``honest``'s dtype and device."""
    d = honest.shape[1]
    if isinstance(direction, str):
        if direction not in DIRECTIONS:
            raise InvalidParameterError(
                f"large_norm: direction must be one of {', '.join(DIRECTIONS)} or a vector of "
                f"shape ({d},); got {direction!r}."
            )
        if direction == "against_mean":
            u = -honest.mean(dim=0, dtype=torch.float64)
            if float(u.norm()) > 0:
                return (u / u.norm()).to(honest.dtype)
            direction = "fixed"  # no mean to push against: a fixed direction instead
        if direction == "fixed":
            generator = torch.Generator().manual_seed(_seed(seed))
        # Drawn on the generator's device (the CPU for "fixed"), then moved to honest's.
        u = torch.randn(
            d, generator=generator, dtype=torch.float64, device=_draw_device(generator, honest)
        ).to(honest.device)
    else:
        u = torch.as_tensor(direction).to(device=honest.device, dtype=torch.float64)
        if u.shape != (d,) or not bool(torch.isfinite(u).all()) or float(u.norm()) == 0:
            raise InvalidParameterError(
                f"large_norm: direction must be a finite non-zero vector of shape ({d},); "
                f"got shape {tuple(u.shape)}."
            )
    return (u / u.norm()).to(honest.dtype)


def _draw_device(generator: torch.Generator | None, honest: torch.Tensor) -> torch.device:
    """Where random draws are made: the generator's device, else (torch's global
    generator for that device) the honest vectors' device."""
    return generator.device if generator is not None else honest.device


def _seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidParameterError(
            f"large_norm: seed must be a non-negative integer; got {seed!r}."
        )
    return seed


def _large_norm(
    honest: torch.Tensor,
    f: int,
    *,
    rule=None,
    generator: torch.Generator | None = None,
    scale: Annotated[float, Bound(0)] = 1e9,
    direction: str | torch.Tensor = "against_mean",
    seed: Annotated[int, Bound(0)] = 0,
) -> torch.Tensor:
    """All f send one vector of norm ``scale``: the "billionaire in the room".

    Blanchard, El Mhamdi, Guerraoui, Stainer, NeurIPS 2017 (Lemma 1: a single
    Byzantine vector moves the average anywhere). Their omniscient Byzantine
    worker sends the honest gradients' sum times a large negative factor: the
    default ``direction="against_mean"`` pushes against the honest mean, the
    same way every step, so the average climbs the loss. Other directions:
    ``"fixed"``, one seeded random unit vector (``seed``), the same at every
    step; ``"random"``, a new random unit vector each call drawn from
    ``generator`` (over many steps this is zero-mean noise, which the average
    partly survives); or an explicit vector of shape (d,). When the honest
    mean is zero, ``"against_mean"`` uses the ``"fixed"`` direction.

    The vector saturates rather than overflows: when a coordinate of norm
    ``scale`` would exceed the dtype's largest finite value (1e9 in float16,
    whose largest is 65504), the vector keeps its direction and is shrunk so
    its largest coordinate is that value; its norm is then below ``scale``.

    Returns:
        Shape (f, d).
    """
    if not isinstance(scale, int | float) or isinstance(scale, bool) or not scale >= 0:
        raise InvalidParameterError(f"large_norm: scale must be a number >= 0; got {scale!r}.")
    u = _unit_direction(direction, honest, generator, seed).to(torch.float64)
    v = scale * u
    # Saturate, never overflow: a norm the dtype cannot hold (1e9 in float16) would make
    # coordinates inf, silently the inf attack. The vector is shrunk along the same
    # direction until its largest coordinate is the dtype's largest finite value.
    top = float(v.abs().max())
    largest = torch.finfo(honest.dtype).max
    if top > largest:
        v = v * (largest / top)
        v = v.clamp(-largest, largest)  # rounding of the product must not cross the max
    return v.to(honest.dtype).expand(f, -1).clone()


def _sign_flip(
    honest: torch.Tensor, f: int, *, rule=None, generator=None, scale: float = 1.0
) -> torch.Tensor:
    """All f send ``-scale`` times the honest mean (gradient ascent instead of descent).

    The reversed-gradient attack (e.g. Allen-Zhu et al., ICLR 2021; Karimireddy
    et al., ICML 2021).

    Returns:
        Shape (f, d).
    """
    return (-scale * honest.mean(dim=0)).expand(f, -1).clone()


def _ipm(
    honest: torch.Tensor, f: int, *, rule=None, generator=None, epsilon: float = 0.1
) -> torch.Tensor:
    """Inner-product manipulation: all f send ``-epsilon`` times the honest mean.

    Xie, Koyejo, Gupta, "Fall of Empires: Breaking Byzantine-tolerant SGD by
    Inner Product Manipulation", UAI 2019. A small epsilon (0.1) hides among
    the honest vectors and turns the aggregate's inner product with the true
    gradient negative against median-like rules; a large one (100) targets
    rules that keep outliers.

    Returns:
        Shape (f, d).
    """
    return (-epsilon * honest.mean(dim=0)).expand(f, -1).clone()


def _gaussian(
    honest: torch.Tensor,
    f: int,
    *,
    rule=None,
    generator: torch.Generator | None = None,
    mu: float = 0.0,
    sigma: Annotated[float, Bound(0)] = 200.0,
) -> torch.Tensor:
    """Each of the f sends an independent draw of N(mu, sigma^2 I).

    Blanchard et al., NeurIPS 2017 (Gaussian Byzantine workers, sigma = 200).

    Returns:
        Shape (f, d).
    """
    if sigma < 0:
        raise InvalidParameterError(f"gaussian: sigma must be >= 0; got {sigma}.")
    noise = torch.randn(
        f,
        honest.shape[1],
        generator=generator,
        dtype=torch.float64,
        device=_draw_device(generator, honest),
    )
    return (mu + sigma * noise).to(honest)


def _nan(honest: torch.Tensor, f: int, *, rule=None, generator=None) -> torch.Tensor:
    """All f send NaN in every coordinate: a crashed or buggy worker.

    Returns:
        Shape (f, d).
    """
    return torch.full((f, honest.shape[1]), float("nan"), dtype=honest.dtype, device=honest.device)


def _inf(honest: torch.Tensor, f: int, *, rule=None, generator=None, sign: int = 1) -> torch.Tensor:
    """All f send +inf (or -inf with ``sign=-1``) in every coordinate: an overflowed worker.

    Returns:
        Shape (f, d).
    """
    value = float("inf") if sign >= 0 else -float("inf")
    return torch.full((f, honest.shape[1]), value, dtype=honest.dtype, device=honest.device)


def _zero(honest: torch.Tensor, f: int, *, rule=None, generator=None) -> torch.Tensor:
    """All f send the zero vector: a stale worker that has nothing to report.

    Returns:
        Shape (f, d).
    """
    return honest.new_zeros(f, honest.shape[1])


def _constant(
    honest: torch.Tensor, f: int, *, rule=None, generator=None, value: float = 1.0
) -> torch.Tensor:
    """All f send ``value`` in every coordinate: a stuck worker.

    Returns:
        Shape (f, d).
    """
    return honest.new_full((f, honest.shape[1]), value)


_FAULT = "Fault model of crashed, stale or buggy workers (Lamport, Shostak, Pease 1982)"

large_norm = register(
    GradientAttack(
        name="large_norm",
        impl=_large_norm,
        paper="Blanchard et al., Machine Learning with Adversaries: Byzantine Tolerant "
        "Gradient Descent, NeurIPS 2017",
        summary="one vector of huge norm, against the honest mean (or fixed, random, given)",
        strength="scale",
    )
)
sign_flip = register(
    GradientAttack(
        name="sign_flip",
        impl=_sign_flip,
        paper="Allen-Zhu et al., Byzantine-Resilient Non-Convex SGD, ICLR 2021",
        summary="minus the honest mean, scaled",
        strength="scale",
    )
)
ipm = register(
    GradientAttack(
        name="ipm",
        impl=_ipm,
        paper="Xie, Koyejo, Gupta, Fall of Empires: Breaking Byzantine-tolerant SGD by "
        "Inner Product Manipulation, UAI 2019",
        summary="-epsilon times the honest mean",
        strength="epsilon",
    )
)
gaussian = register(
    GradientAttack(
        name="gaussian",
        impl=_gaussian,
        paper="Blanchard et al., NeurIPS 2017",
        summary="random vectors from N(mu, sigma^2 I)",
        strength="sigma",
    )
)
nan = register(GradientAttack("nan", _nan, _FAULT, "NaN in every coordinate"))
inf = register(GradientAttack("inf", _inf, _FAULT, "inf in every coordinate"))
zero = register(GradientAttack("zero", _zero, _FAULT, "the zero vector (stale worker)"))
constant = register(
    GradientAttack(
        "constant", _constant, _FAULT, "a constant vector (stuck worker)", strength="value"
    )
)
