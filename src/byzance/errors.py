"""Exceptions raised at byzance's boundaries.

Every exception is a ``ValueError`` subclass whose message says what was wrong
and what would work instead.
"""

from __future__ import annotations

from collections.abc import Iterable


class ByzanceError(ValueError):
    """Base class of byzance's input errors."""


class InvalidFError(ByzanceError):
    """``f`` (the number of Byzantine inputs tolerated) is negative or not an integer."""


class ToleranceError(ByzanceError):
    """The rule cannot tolerate ``f`` Byzantine inputs among ``n``: more inputs are needed."""


class ShapeError(ByzanceError):
    """The input is empty, not 2-D, or its vectors differ in size."""


class NonFiniteInputError(ByzanceError):
    """More inputs hold NaN or inf than the ``f`` faulty ones the rule tolerates."""


class NonFiniteOutputError(ByzanceError):
    """A pipeline stage turned finite rows into NaN or inf (the message names the stage)."""


class IntractableError(ByzanceError):
    """An exact rule would have to enumerate too many candidates at this size."""


class UnknownNameError(ByzanceError, KeyError):
    """No rule (or attack) is registered under the given name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidParameterError(ByzanceError):
    """A rule parameter is out of its valid range."""


class DataUnavailableError(ByzanceError):
    """A data set's files are not installed here; the message says which package ships them."""


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The choice closest to ``name`` (a likely misspelling of it), or None when none is close."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return close[0] if close else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``" Did you mean 'krum'?"`` (leading space) for the closest choice, or ``""``.

    The one place byzance suggests a name: append it to an error message's
    first sentence, e.g. ``f"no rule named {name!r}.{did_you_mean(name, names)}"``.
    """
    match = closest(name, choices)
    return f" Did you mean {match!r}?" if match is not None else ""
