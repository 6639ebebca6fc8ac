"""Robust aggregation of the metrics clients report, and validation of their weights.

A client's reported metrics (training loss, accuracy) and its weight (the
number of examples it trained on, ``num-examples``) are untrusted input: with
Flower's weighted average, one client reporting ``num-examples = 1e15`` decides
the round's loss, a negative weight flips it, and a reply without the weight
key stops the aggregation of everyone's metrics. Here:

- :func:`check_weight` accepts a weight only if it is a finite number in
  ``(0, max_weight]``; a client whose weight (or metric record) is refused is
  left out of the metrics and reported, never fatal.
- :func:`aggregate_metrics` combines the accepted clients' metrics with the
  coordinate-wise **median** (default; unweighted, since weights are claims:
  fewer than half of the clients cannot move it outside the honest range) or
  the weighted mean (``how="weighted_mean"``, Flower's behaviour, with the
  validated weights). Non-finite or non-numeric metric values are ignored.

It imports numpy only, like :mod:`byzance.flower.aggregation`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from byzance.errors import InvalidParameterError

MetricsHow = Literal["median", "weighted_mean"]
METRICS_HOW: tuple[str, ...] = ("median", "weighted_mean")

#: Largest weight (examples per client per round) accepted by default.
DEFAULT_MAX_WEIGHT = 10**9

Entry = tuple[Hashable, Any, Mapping[str, Any]]


def check_how(how: str) -> MetricsHow:
    """``how`` if it names a metrics aggregation, else a clear error."""
    if how not in METRICS_HOW:
        raise InvalidParameterError(
            f"metrics aggregation must be one of {METRICS_HOW}; got {how!r}."
        )
    return how  # type: ignore[return-value]


def check_max_weight(max_weight: float, name: str = "max_weight") -> float:
    """``max_weight`` if it is a finite number > 0, else a clear error naming ``name``."""
    if (
        isinstance(max_weight, bool)
        or not isinstance(max_weight, int | float)
        or not math.isfinite(max_weight)
        or max_weight <= 0
    ):
        raise InvalidParameterError(f"{name} must be a finite number > 0; got {max_weight!r}.")
    return max_weight


def check_weight(
    value: Any, max_weight: float = DEFAULT_MAX_WEIGHT, key: str = "weight"
) -> str | None:
    """Why the reported weight ``value`` is refused, or None when it is a finite number in (0, max_weight]."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return f"{key} {value!r} is not a number"
    number = float(value)
    if not math.isfinite(number):
        return f"{key} {value!r} is not finite"
    if number <= 0:
        return f"{key} {value!r} is not positive"
    if number > max_weight:
        return f"{key} {value!r} is over the bound {max_weight:g}"
    return None


def _scalar(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _vector(value: Any) -> tuple[float, ...] | None:
    if not isinstance(value, list | tuple) or not value:
        return None
    numbers = [_scalar(v) for v in value]
    if any(v is None for v in numbers):
        return None
    return tuple(numbers)  # type: ignore[arg-type]


def aggregate_metrics(
    entries: Sequence[Entry],
    *,
    how: MetricsHow = "median",
    weight_key: str | None = None,
) -> dict[str, float | list[float]]:
    """Combine the metrics of ``entries`` ((client, weight, metrics), weights already checked).

    Each metric key is aggregated over the clients that report a finite
    number for it (or a list of finite numbers, of the length most clients
    report): the median (``how="median"``) or the weighted mean with the
    clients' weights (``"weighted_mean"``). ``weight_key`` is left out of the
    result. Keys no client reports usably are left out.
    """
    check_how(how)
    scalars: dict[str, list[tuple[float, float]]] = {}
    vectors: dict[str, list[tuple[float, tuple[float, ...]]]] = {}
    order: list[str] = []
    for _, weight, metrics in entries:
        for key, value in metrics.items():
            if key == weight_key:
                continue
            if key not in order:
                order.append(key)
            number = _scalar(value)
            if number is not None:
                scalars.setdefault(key, []).append((float(weight), number))
                continue
            vector = _vector(value)
            if vector is not None:
                vectors.setdefault(key, []).append((float(weight), vector))
    out: dict[str, float | list[float]] = {}
    for key in order:
        if key in scalars:
            weights = np.array([w for w, _ in scalars[key]])
            values = np.array([v for _, v in scalars[key]])
            out[key] = _combine(values, weights, how)
        elif key in vectors:
            length = Counter(len(v) for _, v in vectors[key]).most_common(1)[0][0]
            rows = [(w, v) for w, v in vectors[key] if len(v) == length]
            weights = np.array([w for w, _ in rows])
            values = np.array([v for _, v in rows])
            out[key] = [_combine(values[:, j], weights, how) for j in range(length)]
    return out


def _combine(values: np.ndarray, weights: np.ndarray, how: MetricsHow) -> float:
    if how == "median":
        return float(np.median(values))
    return float(np.sum(values * (weights / weights.sum())))


def robust_metrics(
    entries: Sequence[Entry],
    *,
    how: MetricsHow = "median",
    max_weight: float = DEFAULT_MAX_WEIGHT,
    weight_key: str = "num-examples",
) -> tuple[dict[str, float | list[float]], dict[Hashable, str]]:
    """Validate each client's weight, then :func:`aggregate_metrics` the accepted ones.

    Returns the aggregated metrics and the refused clients (client -> why).
    """
    accepted: list[Entry] = []
    refused: dict[Hashable, str] = {}
    for client, weight, metrics in entries:
        why = check_weight(weight, max_weight, weight_key)
        if why is None:
            accepted.append((client, weight, metrics))
        else:
            refused[client] = why
    return aggregate_metrics(accepted, how=how, weight_key=weight_key), refused
