"""The Kardam filter of asynchronous training, with its state.

Damaskinos, El Mhamdi, Guerraoui, Patra, Taziki, "Asynchronous Byzantine
Machine Learning (the case of SGD)", ICML 2018 (Kardam). See
:mod:`byzance.sim.asynchronous` for how the simulator uses it.

As published, two filters in a row:

- Lipschitz filter: with each gradient g from worker w, computed at model x,
  the empirical Lipschitz coefficient k = |g - g'| / |x - x'| against the
  previous gradient g' that w sent (computed at x') joins the latest
  coefficient of every worker; g passes if k is within their (n - f)/n
  quantile. With no Byzantine worker the coefficients are exchangeable, so an
  honest gradient passes with probability (n - f)/n: the paper's slowdown
  bound f/n.
- Frequency filter: a worker may be the source of at most one of any
  2f + 1 consecutive accepted gradients, so fast (Byzantine) workers cannot
  flood the server; it runs on the gradients that passed the Lipschitz filter.

Where byzance differs from the paper:

- The reference g' is w's last gradient that passed the filter, not merely
  its last one: otherwise a Byzantine worker repeating a rejected vector
  (large_norm) shows k = 0 and passes.
- The quantile is an order statistic of rank min(ceil(q m), m - f) among the
  m workers measured in the window (m = n once every worker is), never an
  interpolation: with f Byzantine values on top it stays at or below an honest
  value even while some honest workers have no coefficient in the window.
- Warm-up (fewer than n - f workers measured, which the paper leaves open):
  a gradient is applied if its norm is at most the median of the workers'
  latest norms (at least n - f of them), which f < n/2 Byzantine workers
  cannot raise. After the warm-up a gradient whose coefficient is undefined
  (the worker's first, or the model did not move since its previous one) is
  rejected.
- The no-starvation rule (``max_rejections``, our addition, off with -1):
  after that many Lipschitz rejections in a row a worker's gradient is let
  through, its norm clipped to the median of the workers' latest norms.
- The frequency filter can be switched off (``frequency_filter``): with the
  simulator's exponential delays the arrival order is random, so an honest
  worker is among the last 2f accepted sources about 2f/n of the time, far
  more often than with the near round-robin arrivals of equally fast workers.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import torch

from byzance.errors import ToleranceError


class KardamFilter:
    """Kardam's filters: Lipschitz, then frequency (see the module docstring)."""

    def __init__(
        self,
        n: int,
        f: int,
        *,
        window: int = 50,
        max_rejections: int = -1,
        frequency_filter: bool = True,
    ) -> None:
        if f < 0 or n < 3 * f + 1:
            raise ToleranceError(
                f"kardam requires n >= 3f + 1 workers to tolerate f Byzantine ones: f={f} needs "
                f"at least n={3 * f + 1}, got n={n}. Use more workers or lower f."
            )
        self.n, self.f = n, f
        self.quantile = (n - f) / n
        self.warm = n - f  # workers with a coefficient before the quantile means anything
        self.last_sources: deque[int] = deque(maxlen=2 * f if frequency_filter else 0)
        self.recent: deque[tuple[int, float]] = deque(maxlen=window)
        self.max_rejections = max_rejections
        self.previous: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.norms: dict[int, float] = {}
        self.rejections: dict[int, int] = {}

    def __call__(
        self, worker: int, grad: torch.Tensor, at: torch.Tensor
    ) -> tuple[bool, torch.Tensor]:
        """Whether to apply ``grad`` (d,), computed by ``worker`` at model ``at`` (d,), and what.

        What is applied is ``grad`` itself, except for a gradient let through by
        the no-starvation rule: its norm is clipped to the median of the
        workers' latest norms (otherwise a Byzantine worker would get a free
        pass every ``max_rejections + 1`` tries).
        """
        k = self._coefficient(worker, grad, at)
        self.norms[worker] = float(grad.norm())
        threshold = self._threshold()
        if k is None or threshold is None:
            # No coefficient (first gradient, or the model has not moved) or warm-up: the
            # gradient becomes the worker's reference if its norm is within the median of
            # the workers' latest norms, and is applied only during the warm-up.
            bound = self._median_norm()
            if bound is not None and self.norms[worker] <= bound:
                self.previous[worker] = (grad.clone(), at.clone())
                if threshold is None:
                    return self._frequency(worker, grad)
        elif k <= threshold:
            self.rejections[worker] = 0
            self.previous[worker] = (grad.clone(), at.clone())
            return self._frequency(worker, grad)
        if threshold is None:
            return False, grad
        self.rejections[worker] = self.rejections.get(worker, 0) + 1
        starving = 0 <= self.max_rejections < self.rejections[worker]
        if not starving:
            return False, grad
        # Forced through, clipped to the median of the workers' latest norms (which f < n/2
        # Byzantine workers cannot raise): a clip relative to the model's last move would
        # feed on itself, each forced step allowing a larger next one.
        bound = self._median_norm() or 0.0
        clipped = grad * min(1.0, bound / max(self.norms[worker], 1e-30))
        accepted, clipped = self._frequency(worker, clipped)
        if accepted:
            self.rejections[worker] = 0  # one forced pass per max_rejections + 1 tries
        return accepted, clipped

    def _coefficient(self, worker: int, grad: torch.Tensor, at: torch.Tensor) -> float | None:
        """k = |g - g'| / |x - x'| against ``worker``'s reference, recorded in the window.

        The reference is the worker's last gradient that passed (see
        :meth:`__call__`): a rejected gradient never becomes one, or a Byzantine
        worker repeating a rejected vector would show k = 0. None when undefined:
        no reference, or a model that has not moved since it (then k is not
        recorded, so that such infinite values cannot push honest workers out of
        the quantile).
        """
        reference = self.previous.get(worker)
        if reference is None:
            return None
        moved = float((at - reference[1]).norm())
        if moved <= 1e-12 * (1.0 + float(at.norm())):
            return None
        k = float((grad - reference[0]).norm()) / moved
        self.recent.append((worker, k))
        return k

    def _threshold(self) -> float | None:
        """The (n - f)/n quantile of the latest coefficient of each worker in the window.

        One value per worker (the one just computed included), so that fast
        workers (Byzantine ones may lie about timing) cannot fill the window;
        None until n - f workers are measured.
        """
        latest = dict(self.recent)  # later entries win
        m = len(latest)
        if m < self.warm:
            return None
        values = sorted(latest.values())
        rank = min(math.ceil(self.quantile * m - 1e-9), m - self.f)
        return values[max(rank, 1) - 1]

    def _median_norm(self) -> float | None:
        """The (lower) median of the workers' latest norms, once n - f workers have one."""
        if len(self.norms) < self.warm:
            return None
        values = sorted(self.norms.values())
        return values[(len(values) - 1) // 2]

    def _frequency(self, worker: int, grad: torch.Tensor) -> tuple[bool, torch.Tensor]:
        """The frequency filter on a gradient that passed the Lipschitz filter; accepts it."""
        if self.last_sources.maxlen and worker in self.last_sources:
            return False, grad
        if self.last_sources.maxlen:
            self.last_sources.append(worker)
        return True, grad

    # -- state (tensors and plain values: checkpoints load with weights_only) ----------------
    def state_dict(self) -> dict[str, Any]:
        """Everything the filter remembers, so that a resumed run filters the same way."""
        return {
            "recent": [list(item) for item in self.recent],
            "last_sources": list(self.last_sources),
            "previous": {int(w): list(pair) for w, pair in self.previous.items()},
            "norms": dict(self.norms),
            "rejections": dict(self.rejections),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        self.recent.clear()
        self.recent.extend((int(w), float(k)) for w, k in state["recent"])
        self.last_sources.clear()
        self.last_sources.extend(int(w) for w in state["last_sources"])
        self.previous = {int(w): (p[0], p[1]) for w, p in state["previous"].items()}
        self.norms = {int(w): float(v) for w, v in state["norms"].items()}
        self.rejections = {int(w): int(v) for w, v in state["rejections"].items()}
