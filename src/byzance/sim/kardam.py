"""The Kardam filter of asynchronous training, with its state.

Damaskinos, El Mhamdi, Guerraoui, Patra, Taziki, "Asynchronous Byzantine
Machine Learning (the case of SGD)", ICML 2018 (Kardam). See
:mod:`byzance.sim.asynchronous` for how the simulator uses it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import torch

from byzance.errors import ToleranceError


class KardamFilter:
    """Kardam's filters: frequency (no worker monopolizes updates), then Lipschitz.

    Frequency: a worker may be the source of at most one of any 2f + 1
    consecutive accepted gradients, so fast (Byzantine) workers cannot flood
    the server. Lipschitz: see the module docstring. Kardam tolerates f < n/3.
    """

    def __init__(
        self,
        n: int,
        f: int,
        *,
        window: int = 50,
        max_rejections: int = 5,
        frequency_filter: bool = True,
    ) -> None:
        if f < 0 or n < 3 * f + 1:
            raise ToleranceError(
                f"kardam requires n >= 3f + 1 workers to tolerate f Byzantine ones: f={f} needs "
                f"at least n={3 * f + 1}, got n={n}. Use more workers or lower f."
            )
        self.quantile = (n - f) / n
        self.warm = n - f  # workers with a coefficient before any gradient is applied
        self.last_sources: deque[int] = deque(maxlen=2 * f if frequency_filter else 0)
        self.recent: deque[tuple[int, float]] = deque(maxlen=window)
        self.max_rejections = max_rejections
        self.previous: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.last_received: tuple[torch.Tensor, torch.Tensor] | None = None
        self.last_accepted: tuple[torch.Tensor, torch.Tensor] | None = None
        self.norms: dict[int, float] = {}
        self.rejections: dict[int, int] = {}

    def __call__(
        self, worker: int, grad: torch.Tensor, at: torch.Tensor
    ) -> tuple[bool, torch.Tensor]:
        """Whether to apply ``grad`` (d,), computed by ``worker`` at model ``at`` (d,), and what.

        What is applied is ``grad`` itself, except for a gradient let through by
        the no-starvation rule: its jump from the reference gradient is clipped
        to the filter's bound (our addition: otherwise a Byzantine worker gets a
        free pass every ``max_rejections + 1`` tries).
        """
        if self.last_sources.maxlen and worker in self.last_sources:
            return False, grad  # frequency filter
        # The worker's previous gradient, or for its first one the last received from anyone.
        reference = self.previous.get(worker, self.last_received)
        self.previous[worker] = self.last_received = (grad.clone(), at.clone())
        self.norms[worker] = float(grad.norm())
        threshold = self._threshold()
        moved = 0.0 if reference is None else float((at - reference[1]).norm())
        if moved <= 1e-12 * (1.0 + float(at.norm())) or threshold is None:
            # k is undefined (the model has not moved since the reference) or nothing to
            # compare with yet: apply the gradient clipped to the median of the workers'
            # latest norms, which f < n/2 Byzantine workers cannot raise.
            if reference is not None and moved > 1e-12 * (1.0 + float(at.norm())):
                self.recent.append((worker, float((grad - reference[0]).norm()) / moved))
            if len(self.norms) < self.warm:
                return False, grad  # the median of fewer than n - f workers' norms proves nothing
            bound = float(torch.tensor(list(self.norms.values())).median())
            clipped = grad * min(1.0, bound / max(self.norms[worker], 1e-30))
            return self._accepted(worker, (clipped, at)), clipped
        k = float((grad - reference[0]).norm()) / moved
        self.recent.append((worker, k))
        if k <= threshold:
            return self._accepted(worker, (grad, at)), grad
        self.rejections[worker] = self.rejections.get(worker, 0) + 1
        starving = 0 <= self.max_rejections < self.rejections[worker]
        if not starving or self.last_accepted is None:
            return False, grad
        # Forced through: clipped around the last accepted gradient (a trusted reference,
        # unlike the worker's own history), to the filter's bound.
        g_acc, x_acc = self.last_accepted
        moved = max(float((at - x_acc).norm()), 1e-12)
        jump = float((grad - g_acc).norm())
        scale = min(1.0, threshold * moved / max(jump, 1e-30))
        clipped = g_acc + (grad - g_acc) * scale
        return self._accepted(worker, (clipped, at)), clipped

    def _threshold(self) -> float | None:
        """(n - f)/n quantile of the latest coefficient of each worker in the window.

        One value per worker, so that fast workers (Byzantine ones may lie about
        timing) cannot fill the window; None until n - f workers are measured.
        """
        latest = dict(self.recent)  # later entries win
        if len(latest) < self.warm:
            return None
        values = torch.tensor(list(latest.values()), dtype=torch.float64)
        # An order statistic, not an interpolation: with f Byzantine values on top,
        # interpolating would reach into them.
        return float(torch.quantile(values, self.quantile, interpolation="lower"))

    def _accepted(self, worker: int, applied: tuple[torch.Tensor, torch.Tensor]) -> bool:
        self.rejections[worker] = 0
        self.last_accepted = applied  # fresh tensors, never modified in place
        if self.last_sources.maxlen:
            self.last_sources.append(worker)
        return True

    # -- state (tensors and plain values: checkpoints load with weights_only) ----------------
    def state_dict(self) -> dict[str, Any]:
        """Everything the filter remembers, so that a resumed run filters the same way."""
        return {
            "recent": [list(item) for item in self.recent],
            "last_sources": list(self.last_sources),
            "previous": {int(w): list(pair) for w, pair in self.previous.items()},
            "last_received": None if self.last_received is None else list(self.last_received),
            "last_accepted": None if self.last_accepted is None else list(self.last_accepted),
            "norms": dict(self.norms),
            "rejections": dict(self.rejections),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""

        def pair(value: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
            return None if value is None else (value[0], value[1])

        self.recent.clear()
        self.recent.extend((int(w), float(k)) for w, k in state["recent"])
        self.last_sources.clear()
        self.last_sources.extend(int(w) for w in state["last_sources"])
        self.previous = {int(w): (p[0], p[1]) for w, p in state["previous"].items()}
        self.last_received = pair(state["last_received"])
        self.last_accepted = pair(state["last_accepted"])
        self.norms = {int(w): float(v) for w, v in state["norms"].items()}
        self.rejections = {int(w): int(v) for w, v in state["rejections"].items()}
