"""The rules benchmark as a table (:func:`render_bench`); the timing is in :mod:`.bench`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from byzance.experiments.bench import BenchRow


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.1f}"
    return f"{value:.3f}"


def _ratio(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.0f}x" if value >= 100 else f"{value:.1f}x" if value >= 10 else f"{value:.2f}x"


def _d(d: int) -> str:
    exp = round(math.log10(d)) if d > 0 else 0
    return f"1e{exp}" if 10**exp == d and d >= 1000 else str(d)


def render_bench(rows: Sequence[BenchRow], console: Any) -> None:
    """A rich table of ``rows`` (times in ms, ratios to the floor, targets), notes and a summary."""
    from rich.table import Table

    from byzance.experiments.bench import TARGET_D, TARGET_N  # read when called: tests patch them

    threads = sorted({r.threads for r in rows if r.threads is not None})
    threads_text = f"{'/'.join(map(str, threads))} torch thread{'s' * (threads != [1])}, "
    table = Table(
        title=(
            "Aggregation rules against their floors "
            f"(CPU, {threads_text if threads else ''}float32 randn(n, d))"
        ),
        caption=(
            "ms: median of the timed calls (min: the fastest). first call: the warm-up, which includes compiling "
            "a coordinate-wise kernel when a rule is the first to need it (one per statistic, "
            "n and parameters, shared: geometric_median starts from the median, bulyan's "
            "second phase is bulyan's; cached on disk, so later processes start "
            "faster). vs floor: time over pass = x.sum(0) or "
            "gram = x @ x.T, timed in the same run. iters: iterations (geometric_median: to "
            f"converge). Targets at n={TARGET_N}, d={_d(TARGET_D)}: distance-based rules within "
            "2x gram, coordinate-wise within 5x pass."
        ),
    )
    for col in (
        "rule",
        "n",
        "d",
        "f",
        "ms",
        "min",
        "first call",
        "vs floor",
        "target",
        "iters",
        "ms/iter",
    ):
        table.add_column(col, justify="left" if col in ("rule", "target") else "right")
    notes: dict[tuple[str, str], list[str]] = {}
    previous: tuple[int, int] | None = None
    for r in rows:
        if previous is not None and (r.n, r.d) != previous:
            table.add_section()
        previous = (r.n, r.d)
        if r.note:
            notes.setdefault((r.rule, r.note), []).append(f"n={r.n}, d={_d(r.d)}")
        target = ""
        if r.target is not None:
            met = r.met
            mark = "" if met is None else " [green]ok" if met else " [red]missed"
            target = f"<={r.target:g}x{mark}"
        table.add_row(
            r.rule + ("*" if r.note else ""),
            str(r.n),
            _d(r.d),
            "" if r.f is None else str(r.f),
            _ms(r.ms),
            _ms(r.min_ms),
            _ms(r.first_ms),
            f"{_ratio(r.ratio)} {r.floor}" if r.ratio is not None else "",
            target,
            "" if r.iterations is None else str(r.iterations),
            "" if r.ms_per_iteration is None else _ms(r.ms_per_iteration),
            style="dim" if r.kind == "floor" else None,
        )
    console.print(table)
    for (rule, note), where in notes.items():
        console.print(f"* {rule} ({'; '.join(where)}): {note}", highlight=False)
    checked = [r for r in rows if r.met is not None]
    if checked:
        missed = [r for r in checked if not r.met]
        summary = f"Targets: {len(checked) - len(missed)} of {len(checked)} met"
        if missed:
            summary += "; missed: " + ", ".join(f"{r.rule} ({_ratio(r.ratio)})" for r in missed)
        console.print(summary + ".", highlight=False)
