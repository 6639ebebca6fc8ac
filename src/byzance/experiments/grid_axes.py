"""A grid's axes: reading them, applying a cell's values to ``[base]``, naming its columns.

An axis is a config key and a list of values. Three forms::

    [axes]
    aggregator = ["krum", "median"]                 # a key: each value replaces [base]'s
    where = [{ mode = "async", byzantine = 1 }]     # a table: sets several keys together
    "attack_params.sigma" = [1.0, 1e3, 1e6]         # one parameter of a table-valued key
    aggregator_params.tau = [1.0, 10.0]             # the same, as a TOML dotted key
    "preaggregator_params.bucketing.s" = [2, 4]     # a pre-aggregator's parameter

A *parameter axis* (``KEY.PARAM``, with KEY a table-valued config key such as
``attack_params``, ``aggregator_params``, ``preaggregator_params`` (then
``KEY.PREAGGREGATOR.PARAM``), ``dataset_params`` or ``model_params``) sets one
entry of that table and keeps the rest of it: ``[base]``'s other parameters,
and those a table axis set. A list of tables under such a key
(``attack_params = [{ sigma = 1.0 }, { sigma = 1e3 }]``) is merged the same
way. Parameter axes are applied after the other axes, whatever their order.

In results, a parameter is one column named after the component, not the
config key: ``attack.sigma``, ``aggregator.tau``, ``bucketing.s``,
``dataset.samples`` (see :func:`param_columns`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

from byzance.runs.config import KEYS, ConfigError, RunConfig

PRE = "preaggregator_params"  # its entries are tables: one per pre-aggregator


def _table_keys() -> tuple[str, ...]:
    """The config keys whose value is a table (``attack_params``, ``aggregator_params``, ...)."""
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    return tuple(
        name
        for name in KEYS
        if fields[name].default_factory is not dataclasses.MISSING
        and isinstance(fields[name].default_factory(), dict)
    )


TABLE_KEYS = _table_keys()


def _check_path(key: str) -> list[str]:
    """The parts of a parameter axis ``KEY.PARAM``; one-line :class:`ConfigError` if malformed."""
    head, *rest = parts = key.split(".")
    example = '"attack_params.sigma" = [1.0, 1e3]'
    if any(not p for p in parts):
        raise ConfigError(f"grid axis {key!r}: an empty name between dots; write e.g. {example}.")
    if head not in TABLE_KEYS:
        what = "takes one value, not parameters" if head in KEYS else "is not a config key"
        if f"{head}_params" in TABLE_KEYS:
            what += f" (did you mean '{head}_params.{'.'.join(rest)}'?)"
        raise ConfigError(
            f"grid axis {key!r}: {head!r} {what}; a dotted axis sets one parameter of "
            f"{', '.join(TABLE_KEYS)}, e.g. {example}."
        )
    if head == PRE and len(rest) != 2:
        raise ConfigError(
            f"grid axis {key!r}: name the pre-aggregator and its parameter, "
            f'e.g. "{PRE}.bucketing.s" = [2, 4].'
        )
    return parts


def read_axes(raw: dict[str, Any]) -> dict[str, list[Any]]:
    """The ``[axes]`` table as ``{axis: values}``, parameter axes as dotted keys.

    TOML reads ``attack_params.sigma = [...]`` (unquoted) as a nested table
    ``{"attack_params": {"sigma": [...]}}``: it is flattened back to the
    dotted key, so the quoted and unquoted spellings are the same axis.
    """
    axes: dict[str, list[Any]] = {}

    def add(key: str, values: Any) -> None:
        if isinstance(values, dict) and values and key.split(".")[0] in TABLE_KEYS:
            for inner, more in values.items():
                add(f"{key}.{inner}", more)
            return
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"grid axis {key!r} must be a non-empty list of values; got {values!r}."
            )
        if "." in key:
            _check_path(key)
        if key in axes:
            raise ConfigError(f"grid axis {key!r} is given twice; give it once.")
        axes[key] = values

    for key, values in raw.items():
        add(key, values)
    return axes


def _merge(target: dict[str, Any], update: dict[str, Any]) -> None:
    """Deep-merge ``update`` into ``target`` (in place): tables merge, other values replace."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def is_params_value(key: str, value: Any) -> bool:
    """Whether ``value`` of axis ``key`` is a table of ``key``'s parameters, not of config keys.

    Under a table-valued key, a table is that key's parameters
    (``attack_params = [{sigma = 1.0}]``) unless it names the key itself
    (``{attack_params = {...}, attack = "ipm"}`` sets several keys).
    """
    return isinstance(value, dict) and key in TABLE_KEYS and key not in value


def cell_spec(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``[base]`` with a cell's axis values applied: keys and tables first, then parameters."""
    spec = copy.deepcopy(base)
    params: list[tuple[str, Any]] = []
    for key, value in values.items():
        if "." in key or is_params_value(key, value):
            params.append((key, value))
        elif isinstance(value, dict):  # a table sets several keys together
            spec.update(copy.deepcopy(value))
        else:
            spec[key] = copy.deepcopy(value)
    for key, value in params:
        head, *rest = key.split(".")
        current = spec.get(head, {})
        if not isinstance(current, dict):
            raise ConfigError(
                f"grid axis {key!r}: {head} is {current!r} in [base], not a table of parameters."
            )
        update: Any = value
        for part in reversed(rest):
            update = {part: update}
        merged = copy.deepcopy(current)
        _merge(merged, update)
        spec[head] = merged
    return spec


def column(key: str) -> str:
    """A parameter's column: ``attack_params.sigma`` -> ``attack.sigma``, ``PRE.bucketing.s`` ->
    ``bucketing.s``, ``faults.x`` unchanged."""
    head, _, rest = key.partition(".")
    if head == PRE:
        return rest
    return f"{head.removesuffix('_params')}.{rest}" if rest else head.removesuffix("_params")


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` under ``prefix`` as ``{"prefix.a.b": 1}``."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flat(f"{prefix}.{key}", inner))
        return out
    return {prefix: value}


def _swept_tables(values: dict[str, Any]) -> set[str]:
    """The table-valued keys a cell's axis values set (by a parameter axis or inside a table)."""
    heads = set()
    for key, value in values.items():
        if "." in key or is_params_value(key, value):
            heads.add(key.split(".")[0])
        elif isinstance(value, dict):
            heads |= {k for k in value if k in TABLE_KEYS}
    return heads


def _cell_value(value: Any) -> Any:
    """A value as one CSV cell: lists and tables as JSON."""
    return json.dumps(value) if isinstance(value, list | dict) else value


def param_columns(config: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """One column per parameter a cell's rule and attack use, and per parameter its axes set.

    ``config``: the cell's config (flat keys); ``values``: its axis values.
    The rule's, its pre-aggregators' and the attack's parameters always get a
    column (``aggregator.tau``, ``bucketing.s``, ``attack.sigma``); the other
    tables (``dataset_params``, ...) where an axis sets them.
    """
    heads = _swept_tables(values) | {"aggregator_params", "attack_params", PRE}
    out: dict[str, Any] = {}
    for head in TABLE_KEYS:
        if head in heads:
            for key, value in _flat(head, config.get(head) or {}).items():
                if key != head:
                    out[column(key)] = _cell_value(value)
    return out


def axis_columns(values: dict[str, Any]) -> dict[str, Any]:
    """A cell's axis values as columns: a table axis gives one column per key it sets.

    Parameter axes and tables of parameters are left out (see :func:`param_columns`).
    """
    out: dict[str, Any] = {}
    for key, value in values.items():
        if "." in key or is_params_value(key, value):
            continue
        if isinstance(value, dict):
            out.update({k: _cell_value(v) for k, v in value.items() if k not in TABLE_KEYS})
        else:
            out[key] = _cell_value(value)
    return out


def describe(key: str, value: Any) -> str:
    """An axis value for a title: ``byzantine = 2``, ``attack.sigma = 1.0``, a table's keys."""
    if "." in key:
        return f"{column(key)} = {value}"
    if is_params_value(key, value):
        value = {f"{column(key)}.{k}": v for k, v in value.items()}
    if isinstance(value, dict):
        return ", ".join(f"{column(k)} = {v}" for k, v in _flat_items(value))
    return f"{key} = {value}"


def _flat_items(table: dict[str, Any]) -> list[tuple[str, Any]]:
    """A table's entries, nested tables as dotted keys."""
    return [item for key, value in table.items() for item in _flat(key, value).items()]
