"""Attack objects, their boundary checks, and the name registry.

A :class:`GradientAttack` wraps a pure ``impl(honest, f, *, rule, generator,
**params)`` that may assume ``honest`` is a finite floating tensor (h, d) with
h >= 1 and ``f >= 1``; it returns the (f, d) vectors the Byzantine
participants send. A :class:`DataAttack` corrupts a worker's labels instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch

from byzance import aggregators
from byzance.aggregators._input import GradsLike, as_matrix, check_f, finite_rows
from byzance.errors import InvalidParameterError, NonFiniteInputError, ShapeError
from byzance.registry import Registry, bind_params

AggregateFn = Callable[[torch.Tensor], torch.Tensor]
RuleLike = str | aggregators.Rule | Callable[..., torch.Tensor]

_RESERVED = frozenset({"rule", "generator"})


def as_aggregate_fn(rule: RuleLike | None, f: int) -> AggregateFn | None:
    """The rule under attack as a function (n, d) -> (d,), called with its f.

    ``rule`` is a registered name, a :class:`~byzance.aggregators.Rule`, or any
    callable ``rule(grads, f)``; bind its parameters beforehand
    (``aggregators.get("bulyan", selection="median")``).
    """
    if rule is None:
        return None
    fn = aggregators.get(rule) if isinstance(rule, str) else rule
    if not callable(fn):
        raise InvalidParameterError(f"rule must be a rule name or a callable; got {rule!r}.")
    return lambda grads: fn(grads, f)


@dataclass(frozen=True)
class GradientAttack:
    """An omniscient attack: sees the honest vectors (h, d), returns the f Byzantine ones (f, d).

    Call as ``attack(honest, f, *, rule=None, generator=None, **params)``.
    ``rule`` is the aggregation rule under attack, for attacks that adapt to
    it; ``generator`` a ``torch.Generator`` for reproducible randomness.
    """

    name: str
    impl: Callable[..., torch.Tensor] = field(repr=False)
    paper: str
    summary: str
    strength: str | None = None  # the parameter that scales the attack, for searches
    needs_rule: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)
    kind: Literal["gradient"] = "gradient"

    def __call__(
        self,
        honest: GradsLike,
        f: int,
        *,
        rule: RuleLike | None = None,
        generator: torch.Generator | None = None,
        **params: Any,
    ) -> torch.Tensor:
        f = check_f(f, self.name)
        x = as_matrix(honest, self.name)
        if not bool(finite_rows(x).all()):
            raise NonFiniteInputError(
                f"{self.name}: the honest vectors must be finite; drop or repair the "
                "non-finite ones before simulating an attack."
            )
        params = bind_params(self.impl, self.defaults, params, self.name, reserved=_RESERVED)
        if f == 0:
            return x.new_empty(0, x.shape[1])
        agg_fn = as_aggregate_fn(rule, f)
        if self.needs_rule and agg_fn is None and not self._strength_given(params):
            raise InvalidParameterError(
                f"{self.name} adapts to the rule under attack: pass rule=<name or rule>"
                + (f", or fix its strength with {self.strength}=..." if self.strength else "")
                + "."
            )
        with torch.no_grad():
            out = self.impl(x, f, rule=agg_fn, generator=generator, **params)
        if out.shape != (f, x.shape[1]):
            raise ShapeError(
                f"{self.name} returned shape {tuple(out.shape)}, expected ({f}, {x.shape[1]})."
            )
        return out

    def partial(self, **params: Any) -> GradientAttack:
        """The same attack with new default parameters (validated now)."""
        merged = bind_params(self.impl, self.defaults, params, self.name, reserved=_RESERVED)
        return replace(self, defaults=merged)

    def _strength_given(self, params: dict[str, Any]) -> bool:
        return self.strength is not None and params.get(self.strength) is not None


@dataclass(frozen=True)
class DataAttack:
    """An attack on a worker's data: ``attack(labels, num_classes=C, **params)`` -> new labels."""

    name: str
    impl: Callable[..., torch.Tensor] = field(repr=False)
    paper: str
    summary: str
    defaults: dict[str, Any] = field(default_factory=dict)
    kind: Literal["data"] = "data"

    def __call__(self, labels: torch.Tensor, *, num_classes: int, **params: Any) -> torch.Tensor:
        labels = torch.as_tensor(labels)
        if labels.dtype in (
            torch.float16,
            torch.bfloat16,
            torch.float32,
            torch.float64,
            torch.bool,
        ):
            raise ShapeError(
                f"{self.name}: labels must be integer class indices; got {labels.dtype}."
            )
        if (
            isinstance(num_classes, bool)
            or not isinstance(num_classes, int | np.integer)
            or num_classes < 2
        ):
            raise InvalidParameterError(
                f"{self.name}: num_classes must be an integer >= 2; got {num_classes!r}."
            )
        num_classes = int(num_classes)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ShapeError(
                f"{self.name}: labels must lie in [0, {num_classes - 1}]; got values in "
                f"[{int(labels.min())}, {int(labels.max())}]."
            )
        params = bind_params(self.impl, self.defaults, params, self.name)
        return self.impl(labels, num_classes, **params)


Attack = GradientAttack | DataAttack

_REGISTRY: Registry[Attack] = Registry("attack")


def register(attack: Attack) -> Attack:
    """Add ``attack`` to the registry under its name and return it."""
    return _REGISTRY.register(attack)


def names(kind: Literal["gradient", "data"] | None = None) -> list[str]:
    """Registered attack names, sorted; ``kind`` keeps gradient or data attacks."""
    return _REGISTRY.names(None if kind is None else (lambda a: a.kind == kind))


def get(name: str, **params: Any) -> Attack:
    """The attack registered under ``name``, with ``params`` bound as defaults."""
    attack = _REGISTRY.get(name)
    if params:
        if isinstance(attack, DataAttack):
            merged = bind_params(attack.impl, attack.defaults, params, attack.name)
            return replace(attack, defaults=merged)
        return attack.partial(**params)
    return attack


def attacks() -> list[Attack]:
    """Every registered attack, in name order."""
    return list(_REGISTRY)
