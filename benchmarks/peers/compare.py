"""Run each shared rule through both libraries on the same inputs: times and agreement."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .rules import SHARED_RULES, Case, SharedRule, make_case
from .timing import Agreement, Timed, Timing, agreement, measure, measure_interleaved, warm_up

FLOOR_PASS = "floor: one pass, x.sum(0)"
FLOOR_GRAM = "floor: Gram product, x @ x.T"


@dataclass(frozen=True)
class Settings:
    """How long to time each call."""

    repeat: int = 5  # timed calls per case, at most
    budget_s: float = 2.0  # stop repeating once this much time is spent
    slow_s: float = 2.0  # a ByzFL warm-up call slower than this is the measurement
    seed: int = 0


@dataclass(frozen=True)
class RuleRow:
    """One rule at one size: both times, the speed-up and whether the outputs agree."""

    rule: str
    n: int
    d: int
    f: int
    ours: Timing | None
    theirs: Timing | None
    ours_note: str = ""
    theirs_note: str = ""
    agreement: Agreement | None = None

    @property
    def speedup(self) -> float | None:
        """ByzFL's time over byzance's (> 1: byzance is faster)."""
        if self.ours is None or self.theirs is None or self.ours.median_ms <= 0:
            return None
        return self.theirs.median_ms / self.ours.median_ms


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def prepare_theirs(
    rule: SharedRule, byzfl: Any, case: Case, settings: Settings
) -> tuple[Timed | None, str]:
    """ByzFL's call on ``case``, warmed up: on torch tensors, or on numpy arrays if torch's fails.

    Returns:
        The call to time (None if not run or failed both ways) and a note.
    """
    skip = rule.theirs_skip(case.n, case.d, case.f)
    if skip:
        return None, skip

    def call(x: Any) -> Any:
        return rule.theirs(byzfl, x, case)

    try:
        return Timed(call, case.x.clone, settings.slow_s, warm_up(call, case.x.clone)), ""
    except Exception as torch_error:
        why = _first_line(torch_error)

    def numpy_input() -> Any:
        return case.x.numpy().copy()

    try:
        warm = warm_up(call, numpy_input)
    except Exception as numpy_error:
        return None, f"fails on torch ({why}) and numpy ({_first_line(numpy_error)})"
    return Timed(
        call, numpy_input, settings.slow_s, warm
    ), f"numpy path (its torch path raises {why})"


def prepare_ours(rule: SharedRule, case: Case) -> tuple[Timed | None, str]:
    """byzance's call on ``case``, warmed up (its first call compiles kernels), or why it refuses."""

    def call(x: Any) -> Any:
        return rule.ours(x, case)

    try:
        return Timed(call, case.x.clone, None, warm_up(call, case.x.clone)), ""
    except Exception as error:
        return None, f"refuses: {_first_line(error)}"


def compare_rule(rule: SharedRule, byzfl: Any, case: Case, settings: Settings) -> RuleRow:
    """Both libraries' times for ``rule`` on ``case`` (interleaved), and whether they agree."""
    ours, ours_note = prepare_ours(rule, case)
    theirs, theirs_note = (
        prepare_theirs(rule, byzfl, case, settings) if byzfl is not None else (None, "")
    )
    racing = [timed for timed in (ours, theirs) if timed is not None]
    results = iter(measure_interleaved(racing, repeat=settings.repeat, budget_s=settings.budget_s))
    ours_timing, ours_out = next(results) if ours is not None else (None, None)
    theirs_timing, theirs_out = next(results) if theirs is not None else (None, None)
    agreed = None
    if ours_out is not None and theirs_out is not None:
        reference = rule.compare_with(case, ours_out)
        if reference is not None:
            agreed = agreement(reference, theirs_out)
            if not agreed.agree and not agreed.detail:
                agreed = agreed.against(reference, theirs_out, float64_reference(rule, case))
    return RuleRow(
        rule.name,
        case.n,
        case.d,
        case.f,
        ours_timing,
        theirs_timing,
        ours_note,
        theirs_note,
        agreed,
    )


def float64_reference(rule: SharedRule, case: Case) -> torch.Tensor:
    """byzance computing the definition ByzFL is compared with, in float64: which side is closer?

    ByzFL casts every input to float32, so only byzance can run in float64; on
    a disagreement the report gives each side's error against this.
    """
    wide = dataclasses.replace(case, x=case.x.double())
    out = rule.ours(wide.x, wide)
    reference = rule.compare_with(wide, out)
    return out if reference is None else reference


def floor_rows(case: Case, settings: Settings) -> list[RuleRow]:
    """The two floors at this size: reading the input once, and one Gram product."""
    rows = []
    for name, call in ((FLOOR_PASS, lambda x: x.sum(0)), (FLOOR_GRAM, lambda x: x @ x.T)):
        timing, _ = measure(call, case.x.clone, repeat=settings.repeat, budget_s=settings.budget_s)
        rows.append(RuleRow(name, case.n, case.d, case.f, timing, None))
    return rows


def run_comparison(
    byzfl: Any,
    ns: Iterable[int],
    ds: Iterable[int],
    *,
    rules: Sequence[SharedRule] = SHARED_RULES,
    settings: Settings = Settings(),
    progress: Callable[[str], None] = lambda line: None,
) -> list[RuleRow]:
    """Every rule at every (n, d), floors first; ``byzfl`` None times byzance alone."""
    rows: list[RuleRow] = []
    for d in ds:
        for n in ns:
            case = make_case(n, d, seed=settings.seed)
            rows.extend(floor_rows(case, settings))
            for rule in rules:
                row = compare_rule(rule, byzfl, case, settings)
                rows.append(row)
                progress(_progress_line(row))
            del case
    return rows


def _progress_line(row: RuleRow) -> str:
    def ms(t: Timing | None) -> str:
        return "-" if t is None else f"{t.median_ms:.2f} ms"

    ratio = "" if row.speedup is None else f"x{row.speedup:.1f}"
    return (
        f"n={row.n:>3} d={row.d:>8} {row.rule:<18} byzfl {ms(row.theirs):>12} "
        f"byzance {ms(row.ours):>12} {ratio:>8} {row.agreement or ''} "
        f"{row.theirs_note or row.ours_note}"
    )


def geometric_mean(values: Iterable[float]) -> float:
    values = [v for v in values if v > 0 and math.isfinite(v)]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")


__all__ = [
    "FLOOR_GRAM",
    "FLOOR_PASS",
    "RuleRow",
    "Settings",
    "compare_rule",
    "floor_rows",
    "prepare_ours",
    "prepare_theirs",
    "run_comparison",
]
