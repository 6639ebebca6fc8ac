"""A name registry shared by rules and attacks: register, look up, list, suggest."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import operator
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import torch

from byzance.errors import InvalidParameterError, UnknownNameError, did_you_mean


class Named(Protocol):
    name: str


T = TypeVar("T", bound=Named)


class Registry(Generic[T]):
    """Items by unique name; unknown names get the closest known name as a hint."""

    def __init__(self, what: str) -> None:
        self.what = what  # e.g. "aggregation rule", used in messages
        self._items: dict[str, T] = {}

    def register(self, item: T) -> T:
        if item.name in self._items:
            raise ValueError(f"a {self.what} named {item.name!r} is already registered")
        self._items[item.name] = item
        return item

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            hint = did_you_mean(name, self._items)
            raise UnknownNameError(
                f"no {self.what} named {name!r}.{hint} Known: {', '.join(self.names())}."
            ) from None

    def names(self, keep: Callable[[T], bool] | None = None) -> list[str]:
        return sorted(n for n, item in self._items.items() if keep is None or keep(item))

    def __iter__(self) -> Iterator[T]:
        return (self._items[n] for n in self.names())


def bind_params(
    impl: Callable[..., Any],
    defaults: dict[str, Any],
    params: dict[str, Any],
    who: str,
    *,
    reserved: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """``defaults`` updated by ``params``, refusing names ``impl`` does not accept.

    The first two positional parameters of ``impl`` (the input and f) and the
    ``reserved`` keywords are not user parameters. Each value given is checked
    against ``impl``'s annotation (see :func:`check_param_types`).
    """
    accepted = _accepted_params(impl, reserved)
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise InvalidParameterError(
            f"{who} has no parameter {', '.join(map(repr, unknown))}; "
            f"it accepts: {', '.join(sorted(accepted)) or 'no parameters'}."
        )
    return {**defaults, **check_param_types(impl, params, who)}


@functools.cache
def _accepted_params(impl: Callable[..., Any], reserved: frozenset[str]) -> frozenset[str]:
    """The keyword parameters of ``impl`` after the input and f, less ``reserved``
    (cached: ``inspect.signature`` costs about 0.1 ms, on every rule call)."""
    params = list(inspect.signature(impl).parameters.values())[2:]
    return frozenset(
        p.name
        for p in params
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in reserved
    )


# -- parameter types, checked where parameters are bound ------------------------------
_NO_HINT = object()


@dataclasses.dataclass(frozen=True)
class Bound:
    """A number's range, checked where the parameter is bound: ``Annotated[int, Bound(1)]``.

    ``low``/``high`` are inclusive unless ``open_low``/``open_high``; None is unbounded.
    """

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def holds(self, v: float) -> bool:
        if self.low is not None and (v <= self.low if self.open_low else v < self.low):
            return False
        return not (self.high is not None and (v >= self.high if self.open_high else v > self.high))

    def text(self, name: str) -> str:
        """The range as a condition on ``name``: ``"tau > 0"``, ``"p >= 0 and p <= 1"``."""
        parts = []
        if self.low is not None:
            parts.append(f"{name} {'>' if self.open_low else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{name} {'<' if self.open_high else '<='} {self.high:g}")
        return " and ".join(parts)


@functools.cache
def _annotated(impl: Callable[..., Any]) -> dict[str, tuple[Any, tuple[Bound, ...]]]:
    """``impl``'s evaluated annotations, without ``Annotated``, and their bounds ({} when
    they cannot be evaluated)."""
    try:
        hints = typing.get_type_hints(impl, include_extras=True)
    except Exception:  # an annotation naming something its module does not import
        return {}
    return {name: (_strip(h), tuple(_bounds(h))) for name, h in hints.items()}


def _strip(hint: Any) -> Any:
    if typing.get_origin(hint) is typing.Annotated:
        return _strip(typing.get_args(hint)[0])
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return functools.reduce(operator.or_, (_strip(h) for h in typing.get_args(hint)))
    return hint


def _bounds(hint: Any) -> Iterator[Bound]:
    if typing.get_origin(hint) is typing.Annotated:
        yield from (m for m in hint.__metadata__ if isinstance(m, Bound))
    elif typing.get_origin(hint) in (types.UnionType, typing.Union):
        for h in typing.get_args(hint):
            yield from _bounds(h)


def _describe(hint: Any) -> str:
    if hint is type(None):
        return "None"
    if typing.get_origin(hint) is typing.Literal:
        return " or ".join(map(repr, typing.get_args(hint)))
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if hint is torch.Tensor:
        return "a tensor (or array, or list of numbers)"
    if typing.get_origin(hint) is not None and issubclass(typing.get_origin(hint), Sequence):
        (item,) = typing.get_args(hint) or (Any,)
        return "a list or tuple" + ("" if item is Any else f" of {_describe(item)}s")
    return f"a {getattr(hint, '__name__', str(hint))}"


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` has the type ``hint`` names (a number's NaN does not fit)."""
    if hint is Any or hint is _NO_HINT:
        return True
    return any(_fits_one(value, member, origin) for member, origin in _members(hint))


def _members(hint: Any) -> tuple[tuple[Any, Any], ...]:
    """``hint``'s alternatives (a union's, flattened), each with its typing origin; cached,
    since every rule call checks its parameters (typing's introspection costs microseconds)."""
    try:
        return _members_cached(hint)
    except TypeError:  # an unhashable annotation
        return _members_of(hint)


def _members_of(hint: Any) -> tuple[tuple[Any, Any], ...]:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return tuple(m for h in typing.get_args(hint) for m in _members(h))
    return ((hint, origin),)


_members_cached = functools.cache(_members_of)


def _fits_one(value: Any, hint: Any, origin: Any) -> bool:
    """``_fits`` for one alternative ``hint`` (not a union) of typing origin ``origin``."""
    if hint is Any:
        return True
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if isinstance(value, bool | np.bool_):
        return hint is bool
    if hint is int:
        if isinstance(value, int | np.integer):
            return True
        return (
            isinstance(value, torch.Tensor)
            and value.ndim == 0
            and not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool)
        )
    if hint is float:
        if isinstance(value, int | np.integer):
            return True
        if isinstance(value, float | np.floating):
            return not math.isnan(value)
        if isinstance(value, torch.Tensor) and value.ndim == 0:  # a 0-d real tensor
            real = not (value.is_complex() or value.dtype == torch.bool)
            return real and (value.device.type == "meta" or not bool(torch.isnan(value)))
        return False
    if hint is torch.Tensor:
        if isinstance(value, torch.Tensor | np.ndarray):
            return True
        return isinstance(value, list | tuple) and _numbers(value)
    if origin is not None and isinstance(origin, type) and issubclass(origin, Sequence):
        if isinstance(value, str | bytes):
            return False
        if isinstance(value, torch.Tensor | np.ndarray | range):
            return True
        if not isinstance(value, list | tuple):
            return False
        (item,) = typing.get_args(hint) or (Any,)
        return all(_fits(v, item) for v in value)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # an annotation this check does not understand


def _numbers(value: Any) -> bool:
    return all(
        _numbers(v)
        if isinstance(v, list | tuple)
        else isinstance(v, int | float | np.number) and not isinstance(v, bool)
        for v in value
    )


def check_param_types(impl: Callable[..., Any], params: dict[str, Any], who: str) -> dict[str, Any]:
    """``params``, each value checked against ``impl``'s annotation.

    An int refuses bools, strings and non-integral floats (an integral float
    such as 3.0, or a numpy integer, becomes a Python int); a float refuses
    bools, strings and NaN; a Literal its other values; a tensor anything that
    is not a tensor, array or (nested) list of numbers; a class other
    instances. Raises :class:`InvalidParameterError` naming ``who``, the
    parameter, the value and what is accepted.
    """
    hints = _annotated(impl)
    out = dict(params)
    for name, value in params.items():
        hint, bounds = hints.get(name, (_NO_HINT, ()))
        if _fits(value, hint):
            if isinstance(value, np.integer) and _allows(hint, int):
                out[name] = int(value)
        elif (
            isinstance(value, float | np.floating)
            and _allows(hint, int)
            and math.isfinite(value)
            and float(value).is_integer()
        ):
            out[name] = int(value)
        else:
            raise InvalidParameterError(
                f"{who}: parameter {name} must be {_describe(hint)}; got {value!r} "
                f"of type {type(value).__name__}."
            )
        v = out[name]
        number = isinstance(v, int | float | np.number) and not isinstance(v, bool)
        for bound in bounds if number else ():
            if not bound.holds(float(v)):
                raise InvalidParameterError(
                    f"{who}: parameter {name} out of range: need {bound.text(name)}; got {v!r}."
                )
    return out


def _allows(hint: Any, kind: type) -> bool:
    if hint is kind:
        return True
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return any(_allows(h, kind) for h in typing.get_args(hint))
    return False
