"""Cost curves of the aggregation rules: time and peak extra memory against n and d.

``byzance bench rules --curves`` times every rule (and its floors, as
:func:`~byzance.experiments.bench.run_bench` does, which this module calls
for each size) on float32 ``randn(n, d)``:

- against n in {10, 20, 50, 100, 300, 1000} at n x d = ``max_elements``
  (1e8: a 381 MiB input; d = max_elements // n), with the peak extra memory
  of each rule at each n;
- against d in {1e4, 1e5, 1e6, 1e7} at n = 20 (each d capped so that
  n x d <= max_elements).

Peak extra memory is the resident memory a call needs beyond its input,
measured right after the timing of each n (every case has run at that size,
so compiling and one-time caches are not counted): the input is built
again, then for each case glibc's free memory is returned to the system
(``malloc_trim``, so that no memory freed earlier can be reused unseen),
the peak resident set is reset to the current one (Linux:
``/proc/self/clear_refs``) and the case called once: its peak minus the
resident set before the call, the result it returns included. The resident
set counts every page, whatever allocated it (torch, glibc, a mapping of
its own), under glibc's default allocator as a user runs it: blocks of 32 MiB
and more are unmapped when freed, smaller ones may be kept and, fragmented,
count more than the tensors alive (at n x d = 1e8 those are the (d,) and
(n, n) ones). The kernel keeps its counters per CPU: the resolution is about
1 MiB. On CUDA: ``max_memory_allocated`` during the call minus
``memory_allocated`` before it. Elsewhere it is not measured.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from byzance.experiments.bench import BenchRow, bench_cases, run_bench

__all__ = [
    "CURVE_DS",
    "CURVE_NS",
    "CurveRow",
    "Curves",
    "curve_ds",
    "measure_memory",
    "memory_method",
    "run_curves",
]

CURVE_NS = (10, 20, 50, 100, 300, 1000)
CURVE_DS = (10_000, 100_000, 1_000_000, 10_000_000)
D_CURVE_N = 20
MAX_ELEMENTS = 100_000_000
CURVES_REPEAT = 3
ONCE_OVER_MS = 1000.0  # a case whose call takes longer than this is timed once

Axis = Literal["n", "d"]


@dataclass(frozen=True)
class CurveRow:
    """One point of a curve: a timed case (``bench``) and its peak extra memory.

    ``axis``: which curve the point belongs to (``"n"``: n x d fixed;
    ``"d"``: n fixed). ``extra_bytes``: peak memory beyond the input during
    one call, output included (None where not measured; ``memory_note`` says
    why or how).
    """

    axis: Axis
    bench: BenchRow
    extra_bytes: int | None = None
    memory_note: str = ""

    @property
    def input_bytes(self) -> int:
        """Size of the float32 (n, d) input."""
        return self.bench.n * self.bench.d * 4

    @property
    def extra_mib(self) -> float | None:
        """Peak extra memory in MiB."""
        return None if self.extra_bytes is None else self.extra_bytes / 2**20

    @property
    def extra_ratio(self) -> float | None:
        """Peak extra memory over the input's size."""
        return None if self.extra_bytes is None else self.extra_bytes / self.input_bytes


@dataclass(frozen=True)
class Curves:
    """The rows of both curves and how they were measured."""

    rows: list[CurveRow]
    max_elements: int
    repeat: int
    threads: int
    device: str
    memory_method: str
    seconds: float
    meta: dict[str, str] = field(default_factory=dict)
    once_over_ms: float | None = None


def curve_ds(max_elements: int, n: int = D_CURVE_N, ds: Sequence[int] = CURVE_DS) -> list[int]:
    """The d of ``ds`` with n x d <= max_elements, ascending; larger ones give way to the cap.

    The cap (max_elements // n) is the last point when some d exceeds half
    of it; a d within a factor 2 below the cap is then dropped (it would
    nearly repeat the cap's point).
    """
    cap = max(1, max_elements // n)
    kept = sorted({d for d in ds if 2 * d <= cap})
    return [*kept, min(max(ds), cap)] if max(ds) * 2 > cap else kept


# -- peak extra memory ----------------------------------------------------------------
def _status_kib(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise OSError(f"{key} not in /proc/self/status")


def _can_reset_peak() -> bool:
    """Whether this process can reset its peak resident set (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        _status_kib("VmHWM")
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    """Return glibc's free heap memory to the system (elsewhere: nothing).

    Without it, memory freed by an earlier call and kept by glibc could be
    reused by the measured call without growing the resident set.
    """
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None).malloc_trim(0)


def _measure_case(run: Callable[[torch.Tensor], Any], x: torch.Tensor, how: str) -> int:
    """Peak bytes beyond what is resident (or allocated) before one call of ``run(x)``."""
    gc.collect()
    _malloc_trim()
    if how == "cuda":
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        before = torch.cuda.memory_allocated(x.device)
        out = run(x)
        torch.cuda.synchronize(x.device)
        peak = torch.cuda.max_memory_allocated(x.device)
    else:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # the peak resident set becomes the current one
        before = 1024 * _status_kib("VmRSS")
        out = run(x)
        peak = 1024 * _status_kib("VmHWM")
    del out
    return max(0, peak - before)


def memory_method(device: str = "cpu") -> str:
    """How peak memory is measured on ``device``: ``"cuda"``, ``"rss"`` or ``"none"``."""
    from byzance.devices import resolve_device

    if resolve_device(device).type == "cuda":
        return "cuda"
    return "rss" if _can_reset_peak() else "none"


def measure_memory(
    n: int,
    d: int,
    rules: Sequence[str] | None = None,
    *,
    seed: int = 0,
    threads: int | None = None,
    device: str = "cpu",
    warm_up: bool = True,
) -> dict[str, tuple[int | None, str]]:
    """Peak extra memory (bytes, or None) and a note for each case at (n, d), by case name.

    The cases are :func:`~byzance.experiments.bench.bench_cases` (floors
    included), on the benchmark's input (``randn(n, d)`` seeded with
    ``seed``). ``warm_up``: call each case once first (not needed right
    after timing the same size). See the module's docstring.
    """
    from byzance.devices import resolve_device
    from byzance.errors import ByzanceError

    how = memory_method(device)
    cases = bench_cases(n, rules)
    if how == "none":
        note = "peak memory not measured: needs Linux (/proc/self/clear_refs) or CUDA"
        return {case.name: (None, note) for case in cases}
    where = resolve_device(device)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed)).to(where)
        results: dict[str, tuple[int | None, str]] = {}
        for case in cases:
            if case.run is None:
                results[case.name] = (None, case.note)
                continue
            try:
                if warm_up:
                    case.run(x)  # compiling and one-time caches are not the rule's memory
                results[case.name] = (_measure_case(case.run, x, how), "")
            except ByzanceError as err:  # e.g. a rule refusing this size, as in the timing
                results[case.name] = (None, f"{type(err).__name__}: {err}")
        return results
    finally:
        torch.set_num_threads(previous)


# -- the sweep ------------------------------------------------------------------------
def run_curves(
    ns: Sequence[int] = CURVE_NS,
    ds: Sequence[int] | None = None,
    *,
    max_elements: int = MAX_ELEMENTS,
    d_curve_n: int = D_CURVE_N,
    repeat: int = CURVES_REPEAT,
    once_over_ms: float | None = ONCE_OVER_MS,
    rules: Sequence[str] | None = None,
    memory: bool = True,
    seed: int = 0,
    threads: int | None = None,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> Curves:
    """Time the floors and rules along both curves; peak extra memory along n.

    n curve: each n in ``ns`` at d = max_elements // n. d curve: n =
    ``d_curve_n``, each d of ``ds`` (default 1e4 ... 1e7) capped so that
    n x d <= max_elements. A size on both curves is timed once. Timing is
    :func:`~byzance.experiments.bench.run_bench` (warm-up, then ``repeat``
    rounds, median and minimum; a case whose first timed call takes more than
    ``once_over_ms`` is timed once). ``memory=False`` skips the memory process.
    """
    say = progress or (lambda _: None)
    start = time.perf_counter()
    bench_cases(ns[0] if ns else d_curve_n, rules)  # unknown names raise before any timing
    points: list[tuple[Axis, int, int]] = [("n", n, max(1, max_elements // n)) for n in ns]
    points += [("d", d_curve_n, d) for d in curve_ds(max_elements, d_curve_n, ds or CURVE_DS)]
    timed: dict[tuple[int, int], list[BenchRow]] = {}
    extra: dict[tuple[int, int], dict[str, tuple[int | None, str]]] = {}
    how = memory_method(device) if memory else "none"
    for axis, n, d in points:
        if (n, d) not in timed:
            say(f"timing n={n}, d={d:,}")
            timed[n, d] = run_bench(
                ns=(n,),
                ds=(d,),
                repeat=repeat,
                rules=rules,
                seed=seed,
                threads=threads,
                device=device,
                once_over_ms=once_over_ms,
            )
        if axis == "n" and memory and (n, d) not in extra:  # every case has just run here
            say(f"peak memory n={n}, d={d:,}")
            extra[n, d] = measure_memory(
                n, d, rules, seed=seed, threads=threads, device=device, warm_up=False
            )
    rows = [
        CurveRow(axis, b, *extra.get((n, d), {}).get(b.rule, (None, "")))
        if axis == "n"
        else CurveRow(axis, b)
        for axis, n, d in points
        for b in timed[n, d]
    ]
    return Curves(
        rows=rows,
        max_elements=max_elements,
        repeat=repeat,
        threads=threads or torch.get_num_threads(),
        device=device,
        memory_method=how,
        seconds=time.perf_counter() - start,
        once_over_ms=once_over_ms,
        meta={
            "torch": torch.__version__,
            "cpus": str(os.cpu_count()),
            "machine": platform.machine(),
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
        },
    )


def curves_cli(
    ns: Sequence[int] | None,
    ds: Sequence[int] | None,
    repeat: int | None,
    rules: Sequence[str] | None,
    threads: int | None,
    device: str,
    max_elements: int,
    out: Path | None,
    console: Any,
) -> None:
    """``byzance bench rules --curves``: run the sweep, print it, and write it to ``out``."""
    from byzance.experiments.bench_render import MARK_START, curves_markdown, write_curves

    args = ["byzance bench rules --curves"]
    args += [f"--n {n}" for n in ns or ()] + [f"--d {d}" for d in ds or ()]
    args += [f"--rule {r}" for r in rules or ()]
    if repeat is not None:
        args.append(f"--repeat {repeat}")
    if threads is not None:
        args.append(f"--threads {threads}")
    if device != "cpu":
        args.append(f"--device {device}")
    if max_elements != MAX_ELEMENTS:
        args.append(f"--max-elements {max_elements}")
    if out is not None:
        args.append(f"--out {out}")
    curves = run_curves(
        tuple(ns or CURVE_NS),
        tuple(ds) if ds else None,
        max_elements=max_elements,
        repeat=CURVES_REPEAT if repeat is None else repeat,
        rules=tuple(rules) if rules else None,
        threads=threads,
        device=device,
        progress=lambda text: console.print(f"[dim]{text}[/dim]", highlight=False),
    )
    command = " ".join(args)
    if out is None:
        text = curves_markdown(curves, command, "")
        console.print(text, markup=False, highlight=False, soft_wrap=True)
        console.print("(no --out: the plot is not drawn)", highlight=False)
        return
    image = write_curves(curves, out, command)
    console.print(f"wrote {out} (section {MARK_START}) and {image}", highlight=False)
