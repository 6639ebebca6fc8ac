"""Failures injected into a rank by config, to test and demonstrate what a run survives.

A run's ``faults`` table maps a rank to one spec:

- ``"crash@T"``: the process kills itself with SIGKILL at step T (no cleanup,
  no goodbye: exactly what a machine failure looks like to the others);
- ``"sleep@T:S"``: at step T the process stops for S seconds (a hung worker);
- ``"slow:S"``: every step takes S seconds longer (a straggler);
- ``"wrong_size"`` (or ``"wrong_size@T"`` from step T on): the rank sends a
  gradient with 7 coordinates too many (a misconfigured or lying worker).
"""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass

from byzance.errors import ByzanceError


class FaultSpecError(ByzanceError):
    """A fault spec in a run's ``faults`` table is not one of the known forms."""


_FORMS = (
    (re.compile(r"crash@(\d+)"), "crash"),
    (re.compile(r"sleep@(\d+):([0-9.]+)"), "sleep"),
    (re.compile(r"slow:([0-9.]+)"), "slow"),
    (re.compile(r"wrong_size(?:@(\d+))?"), "wrong_size"),
)
EXTRA_COORDINATES = 7


@dataclass(frozen=True)
class Fault:
    """A parsed fault: its kind, the step it starts at, and a duration in seconds."""

    kind: str
    step: int = 1
    seconds: float = 0.0

    def before_step(self, step: int) -> None:
        """Act at the start of ``step``: crash, sleep or lag as the spec says."""
        if self.kind == "crash" and step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
        elif (self.kind == "sleep" and step == self.step) or self.kind == "slow":
            time.sleep(self.seconds)

    def sends_wrong_size(self, step: int) -> bool:
        """Whether this rank's gradient of ``step`` has the wrong size."""
        return self.kind == "wrong_size" and step >= self.step


def parse_fault(spec: str) -> Fault:
    """``"crash@5"`` -> Fault("crash", 5); raises :class:`FaultSpecError` on anything else."""
    spec = spec.strip()
    for pattern, kind in _FORMS:
        match = pattern.fullmatch(spec)
        if not match:
            continue
        groups = match.groups()
        if kind == "crash":
            return Fault(kind, int(groups[0]))
        if kind == "sleep":
            return Fault(kind, int(groups[0]), float(groups[1]))
        if kind == "slow":
            return Fault(kind, 1, float(groups[0]))
        return Fault(kind, int(groups[0]) if groups[0] else 1)
    raise FaultSpecError(
        f"unknown fault {spec!r}: use 'crash@STEP', 'sleep@STEP:SECONDS', 'slow:SECONDS' or "
        "'wrong_size' / 'wrong_size@STEP'."
    )
