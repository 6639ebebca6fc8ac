"""Sender-side loss injection: drop, duplicate, reorder and delay datagrams, seeded.

For experiments and tests on loopback, where nothing is ever lost: the sender
passes the datagrams of one step through a :class:`LossModel` before they
reach the socket. The draw depends only on (seed, worker, step), so a run is
reproducible whatever the order in which workers send.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from byzance.errors import InvalidParameterError

T = TypeVar("T")


@dataclass(frozen=True)
class LossModel:
    """What happens to datagrams between the sender and the network.

    Attributes:
        drop: probability that a datagram is never sent (independent per datagram).
        duplicate: probability that a sent datagram is sent twice.
        reorder_window: the datagrams are shuffled within consecutive windows of
            this many (0 or 1: order kept).
        max_delay_s: each datagram is held back a uniform random delay in
            [0, max_delay_s] seconds (which also reorders them); 0: none.
        seed: base seed of the draws.
    """

    drop: float = 0.0
    duplicate: float = 0.0
    reorder_window: int = 0
    max_delay_s: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise InvalidParameterError(
                    f"LossModel.{name} is a probability in [0, 1]; got {p}."
                )
        if self.reorder_window < 0:
            raise InvalidParameterError(
                f"LossModel.reorder_window must be >= 0; got {self.reorder_window}."
            )
        if not 0.0 <= self.max_delay_s <= 10.0:
            raise InvalidParameterError(
                f"LossModel.max_delay_s must be in [0, 10] seconds; got {self.max_delay_s}."
            )

    @property
    def lossless(self) -> bool:
        """Whether this model changes nothing."""
        return (
            self.drop == 0.0
            and self.duplicate == 0.0
            and self.reorder_window <= 1
            and self.max_delay_s == 0.0
        )

    def apply(self, datagrams: Sequence[T], *, worker: int, step: int) -> list[tuple[float, T]]:
        """The datagrams to send, in order, each with its delay in seconds from the start.

        The delays are non-decreasing (sorted); a dropped datagram is absent, a
        duplicated one appears twice (the copy right after the original before
        reordering).
        """
        if self.lossless:
            return [(0.0, d) for d in datagrams]
        rng = random.Random(f"byzance-loss:{self.seed}:{worker}:{step}")
        kept: list[T] = []
        for d in datagrams:
            if rng.random() < self.drop:
                continue
            kept.append(d)
            if rng.random() < self.duplicate:
                kept.append(d)
        w = self.reorder_window
        if w > 1:
            for start in range(0, len(kept), w):
                window = kept[start : start + w]
                rng.shuffle(window)
                kept[start : start + w] = window
        if self.max_delay_s > 0.0:
            timed = [(rng.uniform(0.0, self.max_delay_s), d) for d in kept]
            timed.sort(key=lambda pair: pair[0])
            return timed
        return [(0.0, d) for d in kept]
