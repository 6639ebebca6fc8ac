"""Benchmark of the aggregation rules against their floors.

For float32 inputs ``torch.randn(n, d)`` (seeded), every registered rule (and
pre-aggregator) is timed in the same process as two floors:

- ``pass``: ``x.sum(0)``, reading the input once;
- ``gram``: ``x @ x.T``, one Gram product.

Each rule is compared to the floor it declares (``rule.speed_floor``, set
where it is registered; a pipeline's is the dearest of its stages'): one
pass for the coordinate-wise rules and those that read the input a few
times, the Gram product for the distance-based ones. Bulyan's selection
phase is compared to Krum's floor, its second phase to MeaMed's (each is
that rule's computation).

Each case is called once as a warm-up (reported as "first call": it includes
compiling the coordinate-wise kernels the first time a rule meets an n and
a large input), then ``repeat`` times, in rounds over all the cases of a size
(so a rule and its floor see the same load); the median of the repetitions is
reported, and their minimum beside it (the median says what a call costs on
this machine as it is, the minimum what it costs undisturbed). Rules are called
through the registry (``get(name)(x, f)``), so their time includes the input
checks every user call pays. Bulyan is also timed by phase: its selection
(``bulyan_selection``) and its second phase on theta = n - 2f rows.

f is ``max(1, n // 5)``, lowered to the largest f the rule tolerates at that n;
for MDA further to the largest f with C(n, f) <= 2e5 subsets (it examines
them all). Targets (``rule.speed_target``: distance-based rules within 2x of
one Gram product, coordinate-wise rules within 5x of one pass) are checked
at n = 20, d = 1e6.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from byzance.experiments.bench_render import render_bench

if TYPE_CHECKING:
    from byzance.aggregators._registry import Floor

__all__ = ["BenchRow", "Case", "bench_cases", "bench_f", "render_bench", "run_bench"]

Kind = Literal["floor", "aggregator", "preaggregator", "phase"]

TARGET_N = 20
TARGET_D = 1_000_000
MDA_MAX_SUBSETS = 200_000
CENTERED_CLIPPING_ITERATIONS = 10

PASS = "floor: x.sum(0)"
GRAM = "floor: x @ x.T"
BULYAN_SELECTION = "bulyan selection"
BULYAN_PHASE_2 = "bulyan phase 2"
CC_ITERATED = f"centered_clipping, iterations={CENTERED_CLIPPING_ITERATIONS}"


@dataclass(frozen=True)
class BenchRow:
    """One timed case: a floor, a rule or a phase, at one (n, d).

    Times in milliseconds; ``ms`` is the median of the timed repetitions,
    ``min_ms`` their minimum, ``first_ms`` the warm-up call. ``ms`` is None
    when the case was skipped (``note`` says why). Ratios to the floor
    compare medians.
    """

    rule: str
    kind: Kind
    n: int
    d: int
    f: int | None
    ms: float | None
    first_ms: float | None
    floor: Floor | None = None
    floor_ms: float | None = None
    target: float | None = None
    iterations: int | None = None
    ms_per_iteration: float | None = None
    note: str = ""
    threads: int | None = None  # torch's intra-op threads when timed
    min_ms: float | None = None  # the fastest of the timed repetitions

    @property
    def ratio(self) -> float | None:
        """Time over the floor's time (None for floors and skipped cases)."""
        if self.ms is None or not self.floor_ms:
            return None
        return self.ms / self.floor_ms

    @property
    def met(self) -> bool | None:
        """Whether the target ratio is met (None where there is no target)."""
        ratio = self.ratio
        if self.target is None or ratio is None:
            return None
        return ratio <= self.target


@dataclass(frozen=True)
class Case:
    """What to time: ``run(x)`` on the (n, d) input, or nothing (skipped, see ``note``)."""

    name: str
    kind: Kind
    f: int | None
    floor: Floor | None
    run: Callable[[torch.Tensor], Any] | None
    note: str = ""
    iterations: int | None = None
    target: float | None = None  # largest time / floor ratio, checked at the target size


# -- choosing f ----------------------------------------------------------------------
def bench_f(rule: Any, n: int) -> int:
    """``max(1, n // 5)`` lowered to the largest f ``rule`` tolerates with n inputs; -1 if none."""
    from byzance.errors import ToleranceError

    f = max(1, n // 5)
    while f >= 0:
        try:
            rule.check(n, f)
            return f
        except ToleranceError:
            f -= 1
    return -1


def _mda_f(n: int, f: int) -> tuple[int, str]:
    """The largest f' <= f with C(n, f') <= MDA_MAX_SUBSETS, and a note when f' < f."""
    lowered = f
    while lowered > 0 and math.comb(n, lowered) > MDA_MAX_SUBSETS:
        lowered -= 1
    if lowered == f:
        return f, ""
    return lowered, (
        f"f lowered from {f}: C({n},{f}) = {math.comb(n, f):.1e} subsets to examine; "
        f"C({n},{lowered}) = {math.comb(n, lowered):,}"
    )


# -- the cases -----------------------------------------------------------------------
def _floor_cases() -> list[Case]:
    return [
        Case(PASS, "floor", None, None, lambda x: x.sum(0)),
        Case(GRAM, "floor", None, None, lambda x: x @ x.T),
    ]


def _rule_cases(name: str, n: int) -> list[Case]:
    from byzance import aggregators

    rule = aggregators.get(name)
    kind: Kind = rule.kind
    case = functools.partial(Case, name, kind, floor=rule.speed_floor, target=rule.speed_target)
    f = bench_f(rule, n)
    if f < 0:
        return [case(None, run=None, note=f"needs n >= {rule.min_n(0)}")]
    if rule.takes_generator:  # its own generator: the benchmark leaves torch's global one alone
        rule = rule.with_generator(torch.Generator().manual_seed(0))
    if name == "mda":
        f, note = _mda_f(n, f)
        return [case(f, run=lambda x: rule(x, f), note=note)]
    if name == "centered_clipping":
        k = CENTERED_CLIPPING_ITERATIONS
        return [
            case(f, run=lambda x: rule(x, f), iterations=1),
            Case(
                CC_ITERATED,
                kind,
                f,
                rule.speed_floor,
                lambda x: rule(x, f, iterations=k),
                iterations=k,
            ),
        ]
    cases = [case(f, run=lambda x: rule(x, f))]
    if name == "bulyan":
        cases += _bulyan_phases(f)
    return cases


def _bulyan_phases(f: int) -> list[Case]:
    from byzance import aggregators
    from byzance.aggregators._order import coordinate_mean_around_median
    from byzance.aggregators.bulyan import bulyan_selection

    def phase_2(x: torch.Tensor) -> torch.Tensor:
        theta = x.shape[0] - 2 * f
        return coordinate_mean_around_median(x[:theta], theta - 2 * f)

    # Phase 1 is repeated Krum (one Gram product); phase 2 is MeaMed's kernel.
    krum, meamed = aggregators.get("krum"), aggregators.get("meamed")
    return [
        Case(
            BULYAN_SELECTION,
            "phase",
            f,
            krum.speed_floor,
            lambda x: bulyan_selection(x, f),
            target=krum.speed_target,
        ),
        Case(
            BULYAN_PHASE_2,
            "phase",
            f,
            meamed.speed_floor,
            phase_2,
            "on the first n - 2f rows",
            target=meamed.speed_target,
        ),
    ]


def bench_cases(n: int, rules: Iterable[str] | None = None) -> list[Case]:
    """The floors, then the cases of ``rules`` (default: every registered rule) at n inputs.

    A rule name may be a pipeline (``"nnm>trimmed_mean"``); ``"bulyan"`` brings
    its two phases, which may also be asked for by name.
    """
    from byzance import aggregators

    cases = _floor_cases()
    for name in aggregators.names() if rules is None else dict.fromkeys(rules):
        if name in (BULYAN_SELECTION, BULYAN_PHASE_2):
            bulyan = aggregators.get("bulyan")
            f = bench_f(bulyan, n)
            phases = _bulyan_phases(f) if f >= 0 else []
            cases += [c for c in phases if c.name == name]
        elif name == CC_ITERATED:
            cases += [c for c in _rule_cases("centered_clipping", n) if c.name == name]
        else:
            cases += _rule_cases(name, n)
    return cases


# -- timing --------------------------------------------------------------------------
def _elapsed_ms(fn: Callable[[], Any], device: torch.device | None = None) -> float:
    """Wall time of ``fn()`` in ms; on CUDA, from a synchronized start to a synchronized end."""
    cuda = device is not None and device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()  # the result is dropped at once: no copies pile up
    if cuda:
        torch.cuda.synchronize(device)
    return 1e3 * (time.perf_counter() - start)


def run_bench(
    ns: Sequence[int] = (10, 20, 50),
    ds: Sequence[int] = (10_000, 1_000_000),
    repeat: int = 5,
    rules: Sequence[str] | None = None,
    *,
    seed: int = 0,
    threads: int | None = None,
    device: str = "cpu",
    once_over_ms: float | None = None,
) -> list[BenchRow]:
    """Time the floors and every rule (or ``rules``) on float32 ``randn(n, d)`` for each n and d.

    Returns the rows in order: for each (n, d), the two floors, then the rules.
    At each size every case is called once (the warm-up, "first call"), then
    ``repeat`` rounds call every case in turn; each reports the median of its
    times (``ms``) and their minimum (``min_ms``): the repetitions of a rule and of its floor are spread over the same span,
    so that a burst of load on the machine does not favour one of them. An
    unknown rule name raises :class:`~byzance.errors.UnknownNameError` before
    anything is timed. ``threads`` sets torch's intra-op threads for the run
    (default: as they are); on a loaded machine one thread times more steadily.
    ``device``: where the inputs live (``"cuda"``: every time is synchronized).
    ``once_over_ms``: a case whose first timed call takes longer is timed once
    (its note says so), so that slow cases do not dominate a long sweep.
    """
    from byzance.devices import resolve_device

    where = resolve_device(device)
    cases_by_n = {n: bench_cases(n, rules) for n in ns}  # validates the names first
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        rows: list[BenchRow] = []
        for n, cases in cases_by_n.items():
            for d in ds:
                rows += _bench_size(cases, n, d, max(1, repeat), seed, where, once_over_ms)
        return rows
    finally:
        torch.set_num_threads(previous)


def _bench_size(
    cases: list[Case],
    n: int,
    d: int,
    repeat: int,
    seed: int,
    device: torch.device,
    once_over_ms: float | None = None,
) -> list[BenchRow]:
    from byzance.errors import ByzanceError

    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed)).to(device)
    measured: dict[str, dict[str, Any]] = {}
    jobs: dict[tuple[str, str], Callable[[], Any]] = {}
    for case in cases:
        out = measured[case.name] = {"note": case.note}
        if case.run is None:
            continue
        job = functools.partial(case.run, x)
        try:
            out["first_ms"] = _elapsed_ms(job, device)
        except ByzanceError as err:  # e.g. a rule refusing this size: reported, not fatal
            out["note"] = f"{type(err).__name__}: {err}"
            continue
        jobs[(case.name, "ms")] = job
        if case.iterations:
            out["iterations"] = case.iterations
        elif case.name == "geometric_median":
            out["iterations"], extra = _weiszfeld_jobs(x)
            jobs.update({(case.name, key): fn for key, fn in extra.items()})
    times: dict[tuple[str, str], list[float]] = {key: [] for key in jobs}
    for i in range(repeat):
        for key, job in jobs.items():
            if i and once_over_ms is not None and times[key][0] > once_over_ms:
                continue  # a slow case: its first timed call stands for it
            times[key].append(_elapsed_ms(job, device))
    if repeat > 1 and once_over_ms is not None:
        for name in {name for (name, key), t in times.items() if len(t) == 1 and key == "ms"}:
            once = f"timed once (a call over {once_over_ms / 1000:g} s)"
            measured[name]["note"] = "; ".join(filter(None, (measured[name]["note"], once)))
    for (name, key), values in times.items():
        measured[name][key] = statistics.median(values)
        if key == "ms":
            measured[name]["min_ms"] = min(values)
    for case in cases:
        out = measured[case.name]
        if case.iterations and "ms" in out:
            out["ms_per_iteration"] = out["ms"] / case.iterations
        elif "one" in out:  # the geometric median: K iterations minus one, over K - 1
            k, one, many = out["iterations"], out.pop("one"), out.pop("many", None)
            per = one if many is None else (many - one) / (k - 1)
            out["ms_per_iteration"] = per if per > 0 else (many or one) / k
    floors = {
        floor: measured[name]["ms"]
        for floor, name in (("pass", PASS), ("gram", GRAM))
        if "ms" in measured.get(name, {})
    }
    return [_row(case, measured[case.name], n, d, floors) for case in cases]


def _weiszfeld_jobs(x: torch.Tensor) -> tuple[int, dict[str, Callable[[], Any]]]:
    """Iterations of the geometric median to converge (default settings), and what to time.

    Per iteration: the difference between running K and 1 iterations from the
    same start, over K - 1, so that the start (a coordinate-wise median) and
    the first distances are not counted.
    """
    from byzance.aggregators._order import coordinate_median
    from byzance.aggregators.geometric_median import weiszfeld

    _, iterations = weiszfeld(x)
    start = coordinate_median(x)
    jobs = {"one": functools.partial(weiszfeld, x, init=start, max_iter=1)}
    if iterations >= 2:
        jobs["many"] = functools.partial(weiszfeld, x, init=start, max_iter=iterations)
    for job in jobs.values():
        job()  # warm-up
    return iterations, jobs


def _row(
    case: Case, measured: dict[str, Any], n: int, d: int, floors: dict[str, float]
) -> BenchRow:
    times = {
        key: measured.get(key)
        for key in ("ms", "min_ms", "first_ms", "iterations", "ms_per_iteration", "note")
    }
    times["threads"] = torch.get_num_threads()
    if case.kind == "floor":
        return BenchRow(rule=case.name, kind=case.kind, n=n, d=d, f=None, **times)
    return BenchRow(
        rule=case.name,
        kind=case.kind,
        n=n,
        d=d,
        f=case.f,
        floor=case.floor,
        floor_ms=floors.get(case.floor) if case.floor else None,
        target=case.target if (n, d) == (TARGET_N, TARGET_D) else None,
        **times,
    )
