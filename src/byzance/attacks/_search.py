"""Search for the strongest scale of an attack against the rule in use."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

_GOLDEN = (math.sqrt(5) - 1) / 2


@dataclass(frozen=True)
class ScaleSearch:
    """The best scale found and the objective there, with the evaluations made."""

    scale: float
    value: float
    evaluations: int


def maximize_scale(
    objective: Callable[[float], float],
    reference: float,
    *,
    span: float = 1e3,
    grid_points: int = 25,
    refine_steps: int = 25,
    include: tuple[float, ...] = (),
) -> ScaleSearch:
    """Maximize ``objective(scale)`` over scales > 0 around ``reference``.

    A geometric grid from reference / span to reference * span (plus the
    ``include`` scales), then a golden-section search in log-scale between
    the best grid point's neighbours. Golden section needs only unimodality
    there, which covers the usual shapes: a smooth peak, and the cliff of a
    selection rule that keeps the attacker's vector up to some scale and drops
    it beyond. Non-finite objective values count as -inf.
    """
    if not reference > 0 or not math.isfinite(reference):
        reference = 1.0
    lo_exp, hi_exp = math.log(reference / span), math.log(reference * span)
    grid = sorted(
        {math.exp(lo_exp + (hi_exp - lo_exp) * i / (grid_points - 1)) for i in range(grid_points)}
        | {s for s in include if s > 0}
    )
    count = 0

    def value(scale: float) -> float:
        nonlocal count
        count += 1
        v = objective(scale)
        return v if math.isfinite(v) else -math.inf

    values = [value(s) for s in grid]
    i = max(range(len(grid)), key=lambda k: (values[k], k))
    best_scale, best_value = grid[i], values[i]
    a = math.log(grid[max(i - 1, 0)])
    b = math.log(grid[min(i + 1, len(grid) - 1)])
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    vc, vd = value(math.exp(c)), value(math.exp(d))
    for _ in range(refine_steps):
        for s, v in ((c, vc), (d, vd)):
            if v > best_value or (v == best_value and math.exp(s) > best_scale):
                best_scale, best_value = math.exp(s), v
        if vc > vd:
            b, d, vd = d, c, vc
            c = b - _GOLDEN * (b - a)
            vc = value(math.exp(c))
        else:
            a, c, vc = c, d, vd
            d = a + _GOLDEN * (b - a)
            vd = value(math.exp(d))
    for s, v in ((c, vc), (d, vd)):
        if v > best_value:
            best_scale, best_value = math.exp(s), v
    return ScaleSearch(best_scale, best_value, count)
