"""Values as TOML text: the one writer of inline TOML values and keys for the config system.

:func:`toml_value` writes a value as ``dumps`` and error messages show it
(``{ drop = 0.1 }``, ``[1, 2]``, ``"text"``); reading TOML is
:func:`byzance.runs.schema.read_toml`'s.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["toml_value", "toml_value_or_repr"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _toml_string(name)


def _toml_string(text: str) -> str:
    # JSON's string escapes are TOML's, but for DEL, which TOML wants escaped too.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: Any) -> str:
    """``value`` as an inline TOML value (tables inline: ``{ drop = 0.1 }``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str | os.PathLike):
        return _toml_string(os.fspath(value))
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        inner = ", ".join(f"{_toml_key(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"{value!r} has no TOML form")


def toml_value_or_repr(value: Any) -> str:
    try:
        return toml_value(value)
    except TypeError:
        return repr(value)
