"""The rules benchmark as a table (:func:`render_bench`; the timing is in :mod:`.bench`), and
its cost curves as markdown and a plot (:func:`curves_markdown`, :func:`plot_curves`; measured
in :mod:`.bench_curves`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
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


# -- cost curves (byzance bench rules --curves; measured in .bench_curves) -------------
MARK_START = "<!-- bench-curves:start -->"
MARK_END = "<!-- bench-curves:end -->"
IMAGE_NAME = "bench_curves.png"
_MEMORY_HOW = {
    "rss": (
        "peak resident set during one call (after the timed ones), minus the resident set "
        "before it, glibc's free memory returned to the system first (default allocator; "
        "resolution: about 1 MiB)"
    ),
    "cuda": "torch.cuda.max_memory_allocated during a call, minus memory_allocated before it",
    "none": "not measured",
}


def _md_ms(value: float | None) -> str:
    return "-" if value is None else f"{_ms(value)} ms" if value < 1000 else _ms(value)


def _by_rule(rows: Sequence[Any]) -> dict[str, list[Any]]:
    """Curve rows grouped by case name, floors first, in order of first appearance."""
    groups: dict[str, list[Any]] = {}
    for r in sorted(rows, key=lambda r: r.bench.kind != "floor"):
        groups.setdefault(r.bench.rule, []).append(r)
    return groups


def _wide_table(rows: Sequence[Any], axis: str, cell: Any) -> list[str]:
    """One row per case, one column per n (or d), cells from ``cell(row)``."""
    keys = sorted({getattr(r.bench, axis) for r in rows})
    head = [f"{axis}={k if axis == 'n' else _d(k)}" for k in keys]
    lines = [
        "| rule | floor | " + " | ".join(head) + " |",
        "| --- | --- |" + " --- |" * len(keys),
    ]
    for name, group in _by_rule(rows).items():
        at = {getattr(r.bench, axis): r for r in group}
        cells = [cell(at[k]) if k in at else "" for k in keys]
        lines.append(f"| {name} | {group[0].bench.floor or ''} | " + " | ".join(cells) + " |")
    return lines


def _ratio_cell(r: Any) -> str:
    b = r.bench
    if b.kind == "floor":
        return _md_ms(b.ms)
    return _ratio(b.ratio) or "-"


def _ms_ratio_cell(r: Any) -> str:
    b = r.bench
    ratio = _ratio(b.ratio)
    return _md_ms(b.ms) + (f" ({ratio})" if ratio else "")


def curves_markdown(curves: Any, command: str, image: str) -> str:
    """The cost curves (:class:`~byzance.experiments.bench_curves.Curves`) as markdown.

    A header saying how they were measured, the plot (``image``, a path
    relative to the markdown file; none if empty), the ratio to the floor against n, the
    long table (time and peak extra memory, one row per case and n) and the
    d curve.
    """
    n_rows = [r for r in curves.rows if r.axis == "n"]
    d_rows = [r for r in curves.rows if r.axis == "d"]
    meta = curves.meta
    minutes, seconds = divmod(round(curves.seconds), 60)
    once = (
        f"; a case whose call takes over {curves.once_over_ms / 1000:g} s is timed once"
        if curves.once_over_ms is not None and curves.repeat > 1
        else ""
    )
    out = [
        f"## Cost curves: `{command}`",
        "",
        f"float32 `randn(n, d)` on {curves.device}, {curves.threads} torch thread"
        f"{'s' * (curves.threads != 1)} ({meta.get('cpus', '?')} CPUs, "
        f"{meta.get('machine', '?')}, torch {meta.get('torch', '?')}), measured "
        f"{meta.get('date', '?')}. Each time is the median of {curves.repeat} "
        f"call{'s' * (curves.repeat != 1)} after a warm-up call (first call: that warm-up, "
        f"compiling included{once}); the floors, one pass "
        "`x.sum(0)` and one Gram product `x @ x.T`, are timed in the same run, and each rule "
        f"is compared to its own (`speed_floor`). The sweep took {minutes} min {seconds} s. "
        "Times on a loaded machine are noisy; the minimum is beside the median.",
        "",
    ]
    if image:
        out += [f"![cost curves: time against n and against d, log-log]({image})", ""]
    if n_rows:
        elements = _d(curves.max_elements)
        input_mib = n_rows[0].input_bytes / 2**20
        out += [
            f"### Time over the floor against n (n x d = {elements})",
            "",
            "The floors' rows give their time.",
            "",
        ]
        out += _wide_table(n_rows, "n", _ratio_cell)
        out += [
            "",
            f"### Time and peak extra memory against n (n x d = {elements})",
            "",
            f"Peak extra memory: {_MEMORY_HOW.get(curves.memory_method, curves.memory_method)}"
            f"; the result returned is included. x input: over the input's size "
            f"({input_mib:.3g} MiB at n x d = {elements}).",
            "",
            "| rule | n | d | f | ms | min | first call | vs floor | peak extra MiB | x input |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, group in _by_rule(n_rows).items():
            for r in group:
                b = r.bench
                mib = "-" if r.extra_mib is None else f"{r.extra_mib:.1f}"
                ratio = "" if r.extra_ratio is None else f"{r.extra_ratio:.2f}x"
                vs = f"{_ratio(b.ratio)} {b.floor}" if b.ratio is not None else ""
                f = "" if b.f is None else str(b.f)
                out.append(
                    f"| {name} | {b.n} | {_d(b.d)} | {f} | {_ms(b.ms)} | {_ms(b.min_ms)} | "
                    f"{_ms(b.first_ms)} | {vs} | {mib} | {ratio} |"
                )
    if d_rows:
        out += ["", f"### Time against d at n = {d_rows[0].bench.n}", ""]
        out += _wide_table(d_rows, "d", _ms_ratio_cell)
    notes: dict[str, list[str]] = {}
    for r in curves.rows:
        for note in (r.bench.note, r.memory_note):
            if note:
                key = f"{r.bench.rule}: {note}"
                notes.setdefault(key, []).append(f"n={r.bench.n}, d={_d(r.bench.d)}")
    if notes:
        out.append("")
        out += [f"- {key} ({'; '.join(dict.fromkeys(where))})" for key, where in notes.items()]
    return "\n".join(out) + "\n"


def plot_curves(curves: Any, path: Any) -> None:
    """Log-log time against n (n x d fixed) and against d (n fixed), a panel per floor.

    One line per case; the floor the rules of a panel are compared to dashed.
    Saved to ``path`` (PNG).
    """
    from matplotlib import cm
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    from byzance.experiments.bench import GRAM, PASS

    panels = [(axis, floor) for axis in ("n", "d") for floor in ("pass", "gram")]
    panels = [(a, fl) for a, fl in panels if any(r.axis == a for r in curves.rows)]
    fig = Figure(figsize=(13, 4.8 * max(1, len(panels) // 2)), layout="constrained")
    axes = fig.subplots(max(1, len(panels) // 2), 2, squeeze=False).flatten()
    names = list(_by_rule(curves.rows))
    palette = [cm.tab20(i) for i in range(20)]
    markers = "osD^v<>ph*"
    for ax, (axis, floor) in zip(axes, panels, strict=False):
        rows = [r for r in curves.rows if r.axis == axis and r.bench.ms is not None]
        floor_name = PASS if floor == "pass" else GRAM
        for name, group in _by_rule(rows).items():
            if name != floor_name and group[0].bench.floor != floor:
                continue
            pts = sorted((getattr(r.bench, axis), r.bench.ms) for r in group)
            xs, ys = zip(*pts, strict=True)
            i = names.index(name)
            style = (
                {"color": "black", "linestyle": "--", "linewidth": 2.2}
                if name == floor_name
                else {"color": palette[i % 20], "marker": markers[i % len(markers)]}
            )
            ax.plot(xs, ys, label=name, markersize=4, **style)
        fixed = (
            f"n x d = {_d(curves.max_elements)}"
            if axis == "n"
            else f"n = {rows[0].bench.n if rows else '?'}"
        )
        ax.set(xscale="log", yscale="log", xlabel=axis, ylabel="ms")
        ticks = sorted({getattr(r.bench, axis) for r in rows})
        ax.set_xticks(ticks, labels=[str(t) if axis == "n" else _d(t) for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_title(f"rules compared to {floor_name} ({fixed})", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle(
        f"Aggregation rules' time, float32 on {curves.device}, "
        f"{curves.threads} torch thread{'s' * (curves.threads != 1)}"
    )
    fig.savefig(path, dpi=110)


def write_curves(curves: Any, out: Path, command: str, image: Path | None = None) -> Path:
    """Write the curves' markdown section into ``out`` and their plot; returns the image path.

    ``out`` is rewritten between its ``<!-- bench-curves:start -->`` and
    ``<!-- bench-curves:end -->`` markers (a new file holds just the section);
    an existing file without them is refused (:class:`InvalidParameterError`).
    The plot goes to ``image`` (default ``img/bench_curves.png`` beside ``out``)
    and the markdown refers to it relative to ``out``.
    """
    import os

    from byzance.errors import InvalidParameterError

    image = image or out.parent / "img" / IMAGE_NAME
    text = out.read_text() if out.exists() else None
    if text is not None and not (MARK_START in text and MARK_END in text.split(MARK_START)[1]):
        raise InvalidParameterError(
            f"{out} has no '{MARK_START}' ... '{MARK_END}' section to rewrite: add those "
            "two lines where the curves belong, or write to a new file."
        )
    image.parent.mkdir(parents=True, exist_ok=True)
    plot_curves(curves, image)
    rel = os.path.relpath(image.resolve(), out.resolve().parent)
    section = f"{MARK_START}\n{curves_markdown(curves, command, rel)}\n{MARK_END}"
    if text is None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(section + "\n")
    else:
        head, rest = text.split(MARK_START, 1)
        out.write_text(head + section + rest.split(MARK_END, 1)[1])
    return image
