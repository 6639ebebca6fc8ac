"""A rule's requirement on the number of inputs, n >= a f + b, and its error when it fails."""

from __future__ import annotations

from dataclasses import dataclass

from byzance.errors import ToleranceError


@dataclass(frozen=True)
class Requirement:
    """A linear requirement ``n >= a * f + b`` on the number of inputs n."""

    a: int
    b: int

    def min_n(self, f: int) -> int:
        """Smallest number of inputs that tolerates ``f`` Byzantine ones."""
        return self.a * f + self.b

    def max_f(self, n: int) -> int:
        """Largest f tolerated with ``n`` inputs (-1 when none is)."""
        if self.a == 0:
            return n if n >= self.b else -1
        return (n - self.b) // self.a if n >= self.b else -1

    def __str__(self) -> str:
        if self.a == 0:
            return f"n >= {self.b}"
        af = "f" if self.a == 1 else f"{self.a}f"
        return f"n >= {af} + {self.b}" if self.b else f"n >= {af}"

    def check(self, who: str, n: int, f: int, *, dropped: int = 0) -> None:
        """Raise :class:`ToleranceError` naming rule ``who`` unless n inputs tolerate f."""
        need = self.min_n(f)
        if n >= need:
            return
        after = (
            f" (after dropping {dropped} non-finite input{'s' if dropped > 1 else ''}, "
            "each counted as one of the faulty ones)"
            if dropped
            else ""
        )
        max_f = self.max_f(n)
        lower = f", lower f to {max_f}" if max_f >= 0 else ""
        weaker = (
            ", or choose a rule with a weaker requirement (median and trimmed_mean "
            "need n >= 2f + 1)"
            if self.min_n(f) > 2 * f + 1
            else ""
        )
        raise ToleranceError(
            f"{who} requires {self} to tolerate f Byzantine inputs: "
            f"f={f} needs at least n={need} inputs, got n={n}{after}. "
            f"Use at least {need} inputs{lower}{weaker}."
        )
