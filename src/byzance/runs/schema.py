"""The config system: every key declared once, TOML in, flags over it, one-line errors.

A config is a dataclass whose fields are declared with :func:`key`: a type (the
annotation), a default, a section, an optional range or set of accepted
values, and a one-line description. :class:`Schema` reads such a dataclass and
gives, from those declarations only:

- reading: a TOML file with ``[section]`` tables or flat keys (both, mixed), then
  overrides (command-line flags as strings, or typed values);
- the type rules, the same for every config: booleans are ``true``/``false``
  (and, from the command line only, ``1/0/yes/no``), integers are integral,
  numbers are finite, lists and tables hold what their type says;
- ranges and accepted values, checked key by key, before any cross-key check;
- writing (:meth:`Schema.dumps`: sectioned TOML that reading gives back), and
  the listing of every key by section that ``--help`` shows.

Every error is a :class:`ConfigError`: one line naming the key, the value and
what is accepted.

:func:`key`, :class:`Spec` and the type rules (:func:`convert`, :func:`matches`,
:func:`describe`, :func:`check_params`, ...) live in :mod:`byzance.runs.keytypes`,
inline TOML values (:func:`toml_value`) in :mod:`byzance.runs.toml_text`; both are
importable from here too.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from byzance.errors import did_you_mean

# The keys and their type rules live in keytypes, TOML values in toml_text; every name
# stays importable from here.
from byzance.runs.keytypes import FALSE as FALSE
from byzance.runs.keytypes import (
    SPEC,
    ConfigError,
    Spec,
    _NotThisTypeError,
    check_params,
    convert,
    describe,
    key,
    matches,
    short_type,
)
from byzance.runs.keytypes import TRUE as TRUE
from byzance.runs.keytypes import checkable as checkable
from byzance.runs.toml_text import toml_value
from byzance.runs.toml_text import toml_value_or_repr as toml_value_or_repr

__all__ = [
    "ConfigError",
    "Schema",
    "Spec",
    "check_params",
    "describe",
    "key",
    "matches",
    "read_toml",
    "toml_value",
]


# -- the schema ---------------------------------------------------------------------------


def read_toml(path: str | Path, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """The TOML file at ``path`` as a dict; a missing or broken file is an ``error``."""
    path = Path(path)
    if not path.is_file():
        raise error(f"config file {str(path)!r} does not exist.")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise error(f"config file {str(path)!r} is not valid TOML: {err}") from None
    except UnicodeDecodeError as err:
        raise error(f"config file {str(path)!r} is not UTF-8 text: {err}") from None
    except OSError as err:
        raise error(f"config file {str(path)!r} cannot be read: {err}") from None


class Schema:
    """The keys of a config dataclass, read from its fields' :func:`key` declarations.

    Args:
        cls: the dataclass; every field declared with :func:`key`.
        error: the exception raised (a :class:`ConfigError` subclass).
        what: the config's name in messages and in the written file's header.
    """

    def __init__(self, cls: type, *, error: type[ConfigError] = ConfigError, what: str) -> None:
        self.cls, self.error, self.what = cls, error, what
        hints = typing.get_type_hints(cls)
        self.specs: dict[str, Spec] = {}
        self.types: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if SPEC not in f.metadata:
                raise TypeError(f"{cls.__name__}.{f.name} is not declared with key(...)")
            self.specs[f.name] = f.metadata[SPEC]
            self.types[f.name] = hints[f.name]
        self.sections: dict[str, list[str]] = {}
        for name, spec in self.specs.items():
            self.sections.setdefault(spec.section, []).append(name)
        clash = set(self.sections) & set(self.specs)
        if clash:
            raise TypeError(
                f"sections and keys share names {sorted(clash)}: a table would be ambiguous"
            )

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.specs)

    def default(self, name: str) -> Any:
        f = next(f for f in dataclasses.fields(self.cls) if f.name == name)
        if f.default is not dataclasses.MISSING:
            return f.default
        return f.default_factory()  # type: ignore[misc]

    # -- names ----------------------------------------------------------------------------
    def key_name(self, raw: str) -> str:
        """A key as written (``--test-fraction``'s ``test-fraction``) to its name; unknown: error."""
        name = raw.replace("-", "_")
        if name in self.specs:
            return name
        if name in self.sections:
            raise self.error(
                f"{name!r} is a section of the {self.what}, not a key; its keys: "
                f"{', '.join(self.sections[name])}."
            )
        raise self.error(
            f"unknown config key {raw!r}.{did_you_mean(name, self.specs)} "
            f"Keys: {', '.join(self.specs)}."
        )

    def flatten(self, table: Mapping[str, Any], *, where: str, strict: bool) -> dict[str, Any]:
        """``{section: {key: value}}`` and flat ``{key: value}`` entries as one flat dict.

        A key in the wrong section is an error naming the right one. ``strict``
        (a file): a key given twice (flat and in its section) is an error;
        otherwise (overrides) the later entry wins, in the mapping's order.
        """
        out: dict[str, Any] = {}
        seen: dict[str, str] = {}

        def put(name: str, value: Any, place: str) -> None:
            if strict and name in out:
                raise self.error(
                    f"{where}: config key {name!r} is given twice ({seen[name]} and {place})."
                )
            out.pop(name, None)
            out[name], seen[name] = value, place

        for raw, value in table.items():
            if raw in self.sections and isinstance(value, Mapping):
                for inner, item in value.items():
                    name = inner.replace("-", "_")
                    if name not in self.specs:
                        if name in self.sections:
                            raise self.error(
                                f"{where}: [{raw}] holds [{name}], but sections do not nest; "
                                f"put [{name}] at the top level."
                            )
                        raise self.error(
                            f"{where}: unknown config key {inner!r} in [{raw}]."
                            f"{did_you_mean(name, self.sections[raw] or self.specs)} "
                            f"Keys of [{raw}]: {', '.join(self.sections[raw])}."
                        )
                    right = self.specs[name].section
                    if right != raw:
                        raise self.error(
                            f"{where}: config key {name!r} belongs in section [{right}], "
                            f"not [{raw}]."
                        )
                    put(name, item, f"[{raw}]")
                continue
            if raw in self.sections:
                raise self.error(
                    f"{where}: {raw!r} is a section: give it as a table ([{raw}]) of its keys "
                    f"{', '.join(self.sections[raw])}; got {value!r}."
                )
            if raw.replace("-", "_") not in self.specs:
                self.key_name(raw)  # raises, with the closest key
            put(raw.replace("-", "_"), value, "flat")
        return out

    # -- values ---------------------------------------------------------------------------
    def convert(self, name: str, value: Any, *, text: bool = False) -> Any:
        """``value`` for key ``name``: type, range and accepted values checked (one-line errors)."""
        kind, spec = self.types[name], self.specs[name]
        try:
            out = convert(kind, value, text=text)
        except _NotThisTypeError:
            raise self.error(
                f"config key {name!r}: {value!r} is not {self.expected(name)}."
            ) from None
        if _special(spec, out):
            return out
        self._check_range(name, value, out)
        self._check_choices(name, out)
        return out

    def expected(self, name: str) -> str:
        """What key ``name`` accepts, in words: ``"an integer >= 1"``."""
        kind, spec = self.types[name], self.specs[name]
        text = describe(kind)
        rng = spec.range_text()
        if rng:
            text += f" {rng}"
        if kind is bool:
            text += " (on the command line also 1/0, yes/no)"
        if spec.special:
            text += f" (or {spec.special_text()})"
        return text

    def _check_range(self, name: str, raw: Any, value: Any) -> None:
        spec = self.specs[name]
        if not spec.range_text():
            return
        for x in _numbers(value):
            if not spec.in_range(x):
                where = "" if x == value else f" ({x!r} in {raw!r})"
                raise self.error(
                    f"config key {name!r}: {raw!r} is not {self.expected(name)}{where}."
                )

    def _check_choices(self, name: str, value: Any) -> None:
        accepted = self.specs[name].accepted()
        if accepted is None:
            return
        for word in [value] if isinstance(value, str) else list(_strings(value)):
            if word not in accepted:
                raise self.error(
                    f"config key {name!r}: unknown value {word!r}.{did_you_mean(word, accepted)} "
                    f"Accepted: {', '.join(accepted)}."
                )

    # -- reading --------------------------------------------------------------------------
    def read(
        self, path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The keys of a TOML file (if any) with ``overrides`` over them, each one checked.

        A file's values must have their TOML type; the overrides' strings are
        read as command-line text (``"3"``, ``"yes"``, ``"a,b"``, ``"{s = 2}"``).
        Keys are checked in declaration order, so that a key others depend on
        (``workers``) is reported before them.
        """
        given: dict[str, tuple[Any, bool]] = {}
        if path is not None:
            raw = read_toml(path, self.error)
            where = f"config file {str(path)!r}"
            for name, value in self.flatten(raw, where=where, strict=True).items():
                given[name] = (value, False)
        if overrides:
            flat = self.flatten(overrides, where="overrides", strict=False)
            for name, value in flat.items():
                given[name] = (value, isinstance(value, str))
        out = {}
        for name in self.specs:
            if name in given:
                value, text = given[name]
                out[name] = self.convert(name, value, text=text)
        return out

    def check(self, config: Any) -> None:
        """Check every key of ``config`` (built in code, or read) in place: 1 becomes 1.0, ..."""
        for name in self.specs:
            setattr(config, name, self.convert(name, getattr(config, name)))

    # -- writing --------------------------------------------------------------------------
    def dumps(self, config: Any, *, comments: bool = True) -> str:
        """``config`` as sectioned TOML, every key with its one-line description."""
        lines = [
            f"# {self.what}: every key, by section (flat keys load too).",
        ]
        for section, names in self.sections.items():
            lines += ["", f"[{section}]"]
            for name in names:
                line = f"{name} = {toml_value(getattr(config, name))}"
                if comments:
                    line += f"  # {self.specs[name].help}"
                lines.append(line)
        return "\n".join(lines) + "\n"

    def describe_keys(self) -> list[tuple[str, list[tuple[str, str, str, str]]]]:
        """Per section: (key, type, default, description with range/accepted values)."""
        out = []
        for section, names in self.sections.items():
            rows = []
            for name in names:
                spec = self.specs[name]
                extra = []
                rng = spec.range_text()
                if rng:
                    extra.append(rng)
                if isinstance(spec.choices, tuple):
                    extra.append("one of " + ", ".join(spec.choices))
                if spec.special:
                    extra.append(spec.special_text())
                help_text = spec.help + (f" ({'; '.join(extra)})" if extra else "")
                rows.append(
                    (name, short_type(self.types[name]), toml_value(self.default(name)), help_text)
                )
            out.append((section, rows))
        return out


def _special(spec: Spec, value: Any) -> bool:
    """Whether ``value`` is one of the key's special values (``-1``: automatic, ...)."""
    return not isinstance(value, bool | list | dict) and any(value == v for v in spec.special)


def _numbers(value: Any) -> Iterable[float]:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield value
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _numbers(v)


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)
