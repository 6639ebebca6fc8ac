"""Timing of one call and agreement of two outputs."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Timing:
    """Wall time of a call: the median of ``reps`` timed calls, and the first (warm-up) call."""

    median_ms: float
    first_ms: float
    reps: int


@dataclass(frozen=True)
class Timed:
    """A call to time: ``call(make_input())``.

    Every call gets a fresh input from ``make_input`` (untimed), because some
    implementations modify their input in place. With ``slow_s``, a warm-up
    call slower than that is itself the one measurement (for slow calls with
    nothing to compile or cache). ``warm`` holds the time (s) and output of
    a warm-up call already made (see :func:`warm_up`); None: make one.
    """

    call: Callable[[Any], Any]
    make_input: Callable[[], Any]
    slow_s: float | None = None
    warm: tuple[float, Any] | None = None


def warm_up(call: Callable[[Any], Any], make_input: Callable[[], Any]) -> tuple[float, Any]:
    """Call once (untimed input); the seconds it took and its output. Exceptions propagate."""
    x = make_input()
    start = time.perf_counter()
    out = call(x)
    return time.perf_counter() - start, out


def measure_interleaved(
    calls: Sequence[Timed], *, repeat: int = 5, budget_s: float = 3.0
) -> list[tuple[Timing, Any]]:
    """Time several calls in rounds (a, b, a, b, ...) so that they share the machine's load.

    Each call is made once as a warm-up (compilation, caches), then up to
    ``repeat`` rounds time every call still in the race; rounds stop once
    ``budget_s`` seconds of timed calls are spent (at least one round runs).
    Exceptions propagate.

    Returns:
        For each call, its timing (median of its timed calls) and its last output.
    """
    firsts, outs = [], []
    for timed in calls:
        first, out = timed.warm or warm_up(timed.call, timed.make_input)
        firsts.append(first)
        outs.append(out)
    racing = [
        i for i, timed in enumerate(calls) if timed.slow_s is None or firsts[i] <= timed.slow_s
    ]
    times: list[list[float]] = [[] for _ in calls]
    spent = 0.0
    for _ in range(max(repeat, 1)):
        for i in racing:
            x = calls[i].make_input()
            start = time.perf_counter()
            outs[i] = calls[i].call(x)
            elapsed = time.perf_counter() - start
            times[i].append(elapsed)
            spent += elapsed
        if spent >= budget_s:
            break
    result = []
    for i, first in enumerate(firsts):
        taken = times[i] or [first]
        result.append((Timing(1e3 * statistics.median(taken), 1e3 * first, len(taken)), outs[i]))
    return result


def measure(
    call: Callable[[Any], Any],
    make_input: Callable[[], Any],
    *,
    repeat: int = 5,
    budget_s: float = 3.0,
    first_counts_above_s: float | None = None,
) -> tuple[Timing, Any]:
    """Time ``call(make_input())`` alone (see :func:`measure_interleaved`)."""
    timed = Timed(call, make_input, first_counts_above_s)
    return measure_interleaved([timed], repeat=repeat, budget_s=budget_s)[0]


def as_tensor(value: Any) -> torch.Tensor:
    """A float64 CPU tensor from a tensor or numpy array (outputs of either library)."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    return torch.as_tensor(value).detach().to("cpu", torch.float64)


@dataclass(frozen=True)
class Agreement:
    """Whether two outputs agree, by how much they differ, and in how many elements."""

    agree: bool
    max_abs_diff: float
    scale: float
    mismatched: int = 0
    total: int = 0
    detail: str = ""
    # Largest errors of each side against a float64 computation, when one was made.
    ours_error: float | None = None
    theirs_error: float | None = None

    def __str__(self) -> str:
        if self.detail:
            return self.detail
        if self.agree:
            return f"yes ({self.max_abs_diff:.1e})"
        text = f"**no**: {self.mismatched:,} of {self.total:,} differ (max {self.max_abs_diff:.1e})"
        if self.ours_error is not None and self.theirs_error is not None:
            text += (
                f"; max error vs float64: byzance {self.ours_error:.1e}, "
                f"ByzFL {self.theirs_error:.1e}"
            )
        return text

    def against(self, ours: Any, theirs: Any, truth: Any) -> Agreement:
        """This agreement with both sides' largest errors against ``truth`` (float64)."""
        exact = as_tensor(truth)
        return dataclasses.replace(
            self,
            ours_error=float((as_tensor(ours) - exact).abs().max()),
            theirs_error=float((as_tensor(theirs) - exact).abs().max()),
        )


# float32 sums of up to 1e6 terms, accumulated in different orders by the two
# libraries, differ by about eps * sqrt(d) ~ 1e-4 relative (more near cancellation);
# a different definition (another input selected, another window) differs by O(1).
RTOL = 1e-3
ATOL_SCALE = 1e-4


def agreement(
    ours: Any, theirs: Any, *, rtol: float = RTOL, atol_scale: float = ATOL_SCALE
) -> Agreement:
    """Compare two outputs elementwise: |a - b| <= atol + rtol |b|, atol = atol_scale * max |b|.

    Different shapes never agree; non-finite values agree only where both hold
    the same one.
    """
    a, b = as_tensor(ours), as_tensor(theirs)
    if a.shape != b.shape:
        return Agreement(
            False, float("inf"), 0.0, detail=f"**no** (shapes {tuple(a.shape)} vs {tuple(b.shape)})"
        )
    scale = float(b.abs().max()) if b.numel() else 0.0
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
        same = bool(torch.equal(a.nan_to_num(), b.nan_to_num()))
        return Agreement(
            same, float("nan"), scale, detail="yes (non-finite)" if same else "**no** (non-finite)"
        )
    diff = (a - b).abs()
    close = diff <= atol_scale * max(scale, 1e-30) + rtol * b.abs()
    mismatched = int((~close).sum())
    largest = float(diff.max()) if diff.numel() else 0.0
    return Agreement(mismatched == 0, largest, scale, mismatched, int(b.numel()))
