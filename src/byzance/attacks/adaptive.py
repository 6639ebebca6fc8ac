"""The adaptive attack: the strongest scale of a base attack against the rule in use."""

from __future__ import annotations

import inspect

import torch

from byzance.attacks._registry import AggregateFn, GradientAttack, get, register
from byzance.attacks._search import ScaleSearch, maximize_scale
from byzance.errors import InvalidParameterError


def _base_attack(base: str) -> GradientAttack:
    attack = get(base)
    if not isinstance(attack, GradientAttack) or attack.strength is None or attack.needs_rule:
        raise InvalidParameterError(
            f"adaptive: base must be a gradient attack with a strength parameter and no "
            f"search of its own (e.g. alie, sign_flip, ipm, large_norm, gaussian); got {base!r}."
        )
    return attack


def reference_strength(attack: GradientAttack, honest: torch.Tensor, f: int) -> float:
    """The strength the base attack uses by default (ALIE's z from n and f)."""
    if attack.name == "alie":
        from byzance.attacks.alie import alie_z

        return alie_z(honest.shape[0] + f, f)
    default = inspect.signature(attack.impl).parameters[attack.strength].default
    return float(default)


def adaptive_search(
    honest: torch.Tensor,
    f: int,
    rule: AggregateFn,
    *,
    base: str = "alie",
    seed: int = 0,
    span: float = 1e3,
) -> ScaleSearch:
    """Search the base attack's strength that moves the rule's output furthest from the honest mean.

    Randomized bases redraw the same randomness (``seed``) at every strength,
    so that only the strength varies. The base's default strength is always
    among the candidates: the result is never weaker than the base attack.
    """
    attack = _base_attack(base)
    mean = honest.mean(dim=0)

    def deviation(strength: float) -> float:
        gen = torch.Generator().manual_seed(seed)
        byz = attack.impl(honest, f, rule=None, generator=gen, **{attack.strength: strength})
        return float(torch.linalg.vector_norm(rule(torch.cat([honest, byz])) - mean))

    reference = reference_strength(attack, honest, f)
    return maximize_scale(deviation, abs(reference), span=span, include=(abs(reference),))


def _adaptive(
    honest: torch.Tensor,
    f: int,
    *,
    rule: AggregateFn | None = None,
    generator: torch.Generator | None = None,
    base: str = "alie",
    span: float = 1e3,
) -> torch.Tensor:
    """The base attack at the strength that hurts the rule under attack most.

    A line search (geometric grid over ``span`` decades around the base's
    default strength, then golden section) of the distance between the rule's
    output and the honest mean, in the spirit of the adaptive attacks of
    Shejwalkar and Houmansadr, "Manipulating the Byzantine: Optimizing Model
    Poisoning Attacks and Defenses for Federated Learning", NDSS 2021.

    Args:
        honest: shape (h, d).
        f: number of Byzantine vectors.
        rule: the rule under attack, (n, d) -> (d,).
        base: a gradient attack with a strength (alie, sign_flip, ipm, large_norm, gaussian).
        span: the search covers default / span to default * span.

    Returns:
        Shape (f, d).
    """
    assert rule is not None  # checked by the wrapper (needs_rule)
    attack = _base_attack(base)
    # One draw on the generator's device; the seed is read back (the search runs on the
    # host), and the base attack redraws from a CPU generator: the same on every device.
    device = generator.device if generator is not None else torch.device("cpu")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device))
    best = adaptive_search(honest, f, rule, base=base, seed=seed, span=span)
    gen = torch.Generator().manual_seed(seed)
    return attack.impl(honest, f, rule=None, generator=gen, **{attack.strength: best.scale})


adaptive = register(
    GradientAttack(
        name="adaptive",
        impl=_adaptive,
        paper="Shejwalkar, Houmansadr, Manipulating the Byzantine: Optimizing Model "
        "Poisoning Attacks and Defenses for Federated Learning, NDSS 2021",
        summary="a base attack at the strength that moves the rule's output most",
        needs_rule=True,
    )
)
