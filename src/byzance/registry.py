"""A name registry shared by rules and attacks: register, look up, list, suggest."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, Protocol, TypeVar

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
    ``reserved`` keywords are not user parameters.
    """
    sig = inspect.signature(impl)
    accepted = {
        p.name
        for p in list(sig.parameters.values())[2:]
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in reserved
    }
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise InvalidParameterError(
            f"{who} has no parameter {', '.join(map(repr, unknown))}; "
            f"it accepts: {', '.join(sorted(accepted)) or 'no parameters'}."
        )
    return {**defaults, **params}
