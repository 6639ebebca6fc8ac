"""The config system's keys and type rules: one declaration per key, one rule per type.

A config key is a dataclass field declared with :func:`key`: a type (the
annotation), a default, a section, an optional range or set of accepted
values, and a one-line description (its :class:`Spec`). The type rules are
the same for every config: booleans are ``true``/``false`` (and, from the
command line only, ``1/0/yes/no``), integers are integral, numbers are finite,
lists and tables hold what their type says (:func:`convert`, :func:`matches`,
:func:`describe`). :func:`check_params` holds a component's parameter table
(a rule's, an attack's, ...) to the same rules.

:class:`byzance.runs.schema.Schema` reads such declarations into a config's
reading, checking, writing and ``--help``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from byzance.errors import ByzanceError, did_you_mean
from byzance.runs.toml_text import toml_value, toml_value_or_repr

__all__ = [
    "ConfigError",
    "Spec",
    "check_params",
    "checkable",
    "convert",
    "describe",
    "key",
    "matches",
    "short_type",
]

SPEC = "byzance"  # the dataclass field-metadata entry that holds a key's Spec
TRUE = ("true", "1", "yes")
FALSE = ("false", "0", "no")


class ConfigError(ByzanceError):
    """A configuration key or value is invalid; the message names the key, the value and what works."""


@dataclass(frozen=True)
class Spec:
    """What a config key accepts, beyond its type, and what it means.

    ``ge``/``gt``/``le``/``lt`` bound a number (or every number of a list);
    ``choices`` lists the accepted strings (or a function giving them, for
    registries); ``special`` maps values accepted outside the range to their
    meaning (``{-1: "the data set's own"}``).
    """

    section: str
    help: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] | Callable[[], Iterable[str]] | None = None
    special: Mapping[Any, str] = dataclasses.field(default_factory=dict)

    def accepted(self) -> tuple[str, ...] | None:
        """The accepted strings (calling the registry for dynamic ones), or None."""
        if self.choices is None:
            return None
        return tuple(self.choices) if isinstance(self.choices, tuple) else tuple(self.choices())

    def range_text(self) -> str:
        """``">= 1"``, ``"in [0, 1)"``, ... or ``""``."""
        low = ("[", self.ge) if self.ge is not None else ("(", self.gt)
        high = ("]", self.le) if self.le is not None else (")", self.lt)
        if low[1] is not None and high[1] is not None:
            return f"in {low[0]}{_num(low[1])}, {_num(high[1])}{high[0]}"
        if low[1] is not None:
            return f"{'>=' if low[0] == '[' else '>'} {_num(low[1])}"
        if high[1] is not None:
            return f"{'<=' if high[0] == ']' else '<'} {_num(high[1])}"
        return ""

    def in_range(self, x: float) -> bool:
        return (
            (self.ge is None or x >= self.ge)
            and (self.gt is None or x > self.gt)
            and (self.le is None or x <= self.le)
            and (self.lt is None or x < self.lt)
        )

    def special_text(self) -> str:
        return "; ".join(f"{toml_value(v)}: {meaning}" for v, meaning in self.special.items())


def _num(x: float) -> str:
    """A bound as people write it: 3, 0.5, 1e+07 (no 31-digit integers)."""
    if float(x).is_integer() and abs(x) < 1e6:
        return str(int(x))
    return f"{x:g}" if abs(x) >= 1e6 else repr(x)


def key(
    default: Any,
    section: str,
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[str, ...] | Callable[[], Iterable[str]] | None = None,
    special: Mapping[Any, str] | None = None,
) -> Any:
    """A dataclass field for a config key (a list or table default is copied per instance)."""
    spec = Spec(section, help, ge, gt, le, lt, choices, dict(special or {}))
    metadata = {SPEC: spec}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


# -- type rules ---------------------------------------------------------------------------


class _NotThisTypeError(Exception):
    """A value does not have the type asked for (internal; becomes a ConfigError)."""


def _is_union(kind: Any) -> bool:
    return typing.get_origin(kind) in (typing.Union, types.UnionType)


def _is_sequence(kind: Any) -> bool:
    origin = typing.get_origin(kind) or kind
    return origin in (list, tuple, Sequence, typing.Sequence)


def _is_mapping(kind: Any) -> bool:
    origin = typing.get_origin(kind) or kind
    return origin in (dict, Mapping, typing.Mapping)


def checkable(kind: Any) -> bool:
    """Whether the type rules know ``kind`` (parameters of other types are not checked)."""
    if kind is Any or kind in (bool, int, float, str, type(None)):
        return True
    if _is_union(kind):
        return all(checkable(a) for a in typing.get_args(kind))
    if _is_sequence(kind) or _is_mapping(kind):
        return all(checkable(a) for a in typing.get_args(kind) if a is not Ellipsis)
    return False


def describe(kind: Any) -> str:
    """What a value of ``kind`` is, in words: ``"an integer"``, ``"a list of numbers"``."""
    if kind is Any:
        return "any value"
    if kind is bool:
        return "true or false"
    if kind is int:
        return "an integer"
    if kind is float:
        return "a finite number"
    if kind is str:
        return "a string"
    if kind is type(None):
        return "nothing"
    if _is_union(kind):
        return " or ".join(describe(a) for a in typing.get_args(kind) if a is not type(None))
    if _is_sequence(kind):
        args = [a for a in typing.get_args(kind) if a is not Ellipsis]
        if not args or args[0] is Any:
            return "a list"
        return f"a list of {_plural(args[0])}"
    if _is_mapping(kind):
        args = typing.get_args(kind)
        if len(args) == 2 and args[1] is not Any:
            return f"a table of {_plural(args[1])}"
        return "a table ({name = value, ...})"
    return getattr(kind, "__name__", str(kind))


def _plural(kind: Any) -> str:
    words = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
    if kind in words:
        return words[kind]
    text = describe(kind)
    return text[2:] + "s" if text.startswith("a ") else text


def short_type(kind: Any) -> str:
    """The type as ``--help`` shows it: ``int``, ``float``, ``list[str]``, ``table``."""
    if kind in (bool, int, float, str):
        return kind.__name__
    if _is_union(kind):
        return " | ".join(short_type(a) for a in typing.get_args(kind))
    if kind is type(None):
        return "none"
    if _is_sequence(kind):
        args = [a for a in typing.get_args(kind) if a is not Ellipsis]
        return f"list[{short_type(args[0])}]" if args and args[0] is not Any else "list"
    if _is_mapping(kind):
        return "table"
    return "any" if kind is Any else getattr(kind, "__name__", str(kind))


def convert(kind: Any, value: Any, *, text: bool = False) -> Any:
    """``value`` as a ``kind``, by byzance's type rules; raises ``_NotThisTypeError`` otherwise.

    ``text``: the value came from the command line, where everything is a
    string: ``"3"`` may be an integer, ``"yes"`` a boolean, ``"a,b"`` a list,
    ``"{s = 2}"`` a table. Values from TOML must have their type already.
    Types the rules do not know are passed through unchecked.
    """
    if kind is Any:
        return value
    if _is_union(kind):
        args = typing.get_args(kind)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(arg, value, text=text)
            except _NotThisTypeError:
                continue
        raise _NotThisTypeError
    if kind is bool:
        if isinstance(value, bool):
            return value
        if text and isinstance(value, str):
            word = value.strip().lower()
            if word in TRUE:
                return True
            if word in FALSE:
                return False
        raise _NotThisTypeError
    if kind is int:
        if isinstance(value, bool):
            raise _NotThisTypeError
        if isinstance(value, int):
            return int(value)
        if text and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise _NotThisTypeError from None
        raise _NotThisTypeError
    if kind is float:
        if isinstance(value, bool):
            raise _NotThisTypeError
        if isinstance(value, int | float):
            number = float(value)
        elif text and isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                raise _NotThisTypeError from None
        else:
            raise _NotThisTypeError
        if not math.isfinite(number):
            raise _NotThisTypeError
        return number
    if kind is str:
        if isinstance(value, str):
            return value
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        raise _NotThisTypeError
    if kind is type(None):
        if value is None:
            return None
        raise _NotThisTypeError
    if _is_sequence(kind):
        args = [a for a in typing.get_args(kind) if a is not Ellipsis]
        item = args[0] if args else Any
        items_text = False
        if text and isinstance(value, str):
            stripped = value.strip()
            if stripped.startswith("["):
                value = _parse_inline(stripped)
            else:
                value = [v.strip() for v in stripped.split(",") if v.strip()]
                items_text = True
        if not isinstance(value, list | tuple):
            raise _NotThisTypeError
        return [convert(item, v, text=items_text) for v in value]
    if _is_mapping(kind):
        args = typing.get_args(kind)
        item = args[1] if len(args) == 2 else Any
        if text and isinstance(value, str):
            value = _parse_inline(value.strip())
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise _NotThisTypeError
        return {k: convert(item, v) for k, v in value.items()}
    return value  # a type the rules do not know: checked by whoever uses it


def _parse_inline(text: str) -> Any:
    """A TOML value written on the command line: ``[1, 2]`` or ``{s = 2}``."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        raise _NotThisTypeError from None


def matches(kind: Any, value: Any, *, text: bool = False) -> bool:
    """Whether ``value`` is a ``kind`` by the type rules (``text``: from the command line)."""
    try:
        convert(kind, value, text=text)
    except _NotThisTypeError:
        return False
    return True


def check_params(
    key: str,
    who: str,
    fn: Callable[..., Any],
    params: Mapping[str, Any],
    *,
    skip: int = 0,
    reserved: Iterable[str] = (),
    error: type[ConfigError] = ConfigError,
) -> None:
    """The table ``params`` of config key ``key`` against what ``fn`` (a component) accepts.

    Names: ``fn``'s keyword parameters, less its first ``skip`` parameters (the
    input, f, ...) and the ``reserved`` ones the caller passes itself. Values:
    by the type rules, where ``fn`` annotates the parameter with a type they know
    (others are left to a dry run of the component). ``who`` names the
    component in messages: ``"rule 'krum'"``.
    """
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    plist = list(sig.parameters.values())[skip:]
    reserved = set(reserved)
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    accepted = [p.name for p in plist if p.kind in kinds and p.name not in reserved]
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in plist)
    for name in params:
        if name not in accepted and (not open_ended or name in reserved):
            raise error(
                f"config key {key!r}: {who} has no parameter {name!r}."
                f"{did_you_mean(name, accepted)} It accepts: "
                f"{', '.join(accepted) or 'no parameters'}."
            )
    try:
        target = fn.__init__ if isinstance(fn, type) else fn
        hints = typing.get_type_hints(target)
    except Exception:  # an annotation that does not resolve: the dry run checks the value
        hints = {}
    for name, value in params.items():
        kind = hints.get(name)
        if kind is not None and checkable(kind) and not matches(kind, value):
            raise error(
                f"config key {key!r}: {name} = {toml_value_or_repr(value)} is not "
                f"{describe(kind)} (a parameter of {who})."
            )
