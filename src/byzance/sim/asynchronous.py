"""Asynchronous training: stale gradients, the Kardam filter and staleness dampening.

Damaskinos, El Mhamdi, Guerraoui, Patra, Taziki, "Asynchronous Byzantine
Machine Learning (the case of SGD)", ICML 2018 (Kardam).

Simulated time: a worker that starts at time t reads the current model
(version v), computes its gradient, and delivers it at t + delay, delays drawn
from an exponential distribution with the worker's rate. The server applies
gradients as they arrive, so a gradient is tau = (version at arrival - v)
updates stale. Computing the gradient when the worker starts (rather than
keeping a copy of the model until it arrives) gives the same numbers.

The Kardam filter: with each gradient g_t from worker w, computed at model
x_t, the worker's empirical Lipschitz coefficient
k = |g_t - g_prev| / |x_t - x_prev| (against the previous gradient w sent
and the model it was computed at) is compared with the recent coefficients of
all workers (a window); the gradient is accepted only if k is within their
(n - f)/n quantile, or if w's last ``max_rejections`` gradients were all
rejected (no honest worker starves). Accepted gradients are scaled by the
staleness function Lambda(tau): exp(-beta tau) or 1 / (1 + beta tau).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from byzance.attacks import DataAttack, GradientAttack
from byzance.errors import InvalidParameterError, ToleranceError
from byzance.sim.gradients import flatten_params, set_flat_grad, worker_gradients
from byzance.sim.sampler import BatchSampler, exponential_delays
from byzance.sim.sync import TrainingDivergedError, loss_for

Staleness = Literal["none", "exponential", "inverse"]


def staleness_weight(tau: int, kind: Staleness, beta: float) -> float:
    """Lambda(tau): 1 (none), exp(-beta tau) (exponential) or 1 / (1 + beta tau) (inverse)."""
    if kind == "none":
        return 1.0
    if kind == "exponential":
        return math.exp(-beta * tau)
    if kind == "inverse":
        return 1.0 / (1.0 + beta * tau)
    raise InvalidParameterError(f"staleness must be none, exponential or inverse; got {kind!r}.")


class KardamFilter:
    """Kardam's filters: frequency (no worker monopolizes updates), then Lipschitz.

    Frequency: a worker may be the source of at most one of any 2f + 1
    consecutive accepted gradients, so fast (Byzantine) workers cannot flood
    the server. Lipschitz: see the module docstring. Kardam tolerates f < n/3.
    """

    def __init__(self, n: int, f: int, *, window: int = 50, max_rejections: int = 5) -> None:
        if f < 0 or n < 3 * f + 1:
            raise ToleranceError(
                f"kardam requires n >= 3f + 1 workers to tolerate f Byzantine ones: f={f} needs "
                f"at least n={3 * f + 1}, got n={n}. Use more workers or lower f."
            )
        self.quantile = (n - f) / n
        self.warm = n - f  # workers with a coefficient before any gradient is applied
        self.last_sources: deque[int] = deque(maxlen=2 * f)
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
        if self.rejections[worker] <= self.max_rejections or self.last_accepted is None:
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


@dataclass(frozen=True)
class AsyncStepStats:
    """One arrival at the server."""

    loss: float
    sim_time: float
    worker: int
    byzantine: bool
    staleness: int
    accepted: bool
    weight: float
    honest_rejection_rate: float
    aggregate_norm: float
    aggregation_seconds: float = 0.0


class AsyncSimulator:
    """n workers (the last ``byzantine`` ones Byzantine) and an asynchronous server.

    Byzantine workers send what their gradient attack computes from the
    honest workers' latest gradients, and may lie about timing: their delays
    use ``byzantine_rate`` (fast by default), so they arrive more often.
    """

    def __init__(
        self,
        model: nn.Module,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        shards: list[torch.Tensor],
        *,
        f: int,
        byzantine: int,
        attack: GradientAttack | DataAttack | None,
        attack_params: dict[str, Any] | None = None,
        optimizer: torch.optim.Optimizer,
        batch_size: int = 32,
        l2: float = 0.0,
        rates: list[float] | None = None,
        byzantine_rate: float = 4.0,
        kardam: bool = True,
        window: int = 50,
        max_rejections: int = 5,
        staleness: Staleness = "exponential",
        staleness_beta: float = 0.1,
        task: str = "classification",
        num_classes: int = 0,
        seed: int = 0,
    ) -> None:
        self.model, self.x, self.y = model, x_train, y_train
        self.n, self.byzantine, self.f = len(shards), byzantine, f
        self.honest = self.n - byzantine
        self.attack, self.attack_params = attack, dict(attack_params or {})
        self.optimizer, self.batch_size, self.l2 = optimizer, batch_size, l2
        self.loss_fn, self.num_classes = loss_for(task), num_classes
        rates = list(rates) if rates else [1.0] * self.honest
        if len(rates) != self.honest or min(rates) <= 0:
            raise InvalidParameterError(
                f"async: worker_rates needs one positive rate per honest worker ({self.honest}); got {rates}."
            )
        self.rates = torch.tensor(rates + [byzantine_rate] * byzantine, dtype=torch.float64)
        self.filter = (
            KardamFilter(self.n, f, window=window, max_rejections=max_rejections)
            if kardam
            else None
        )
        self.staleness, self.beta = staleness, staleness_beta
        staleness_weight(0, staleness, staleness_beta)  # validates the kind
        self.batch_gen = torch.Generator().manual_seed(seed * 1_000_003 + 1)
        self.attack_gen = torch.Generator().manual_seed(seed * 1_000_003 + 2)
        self.delay_gen = torch.Generator().manual_seed(seed * 1_000_003 + 4)
        self.sampler = BatchSampler(shards, self.batch_gen)
        self.version = 0
        self.now = 0.0
        self.step_count = 0
        self.events: list[tuple[float, int, int, torch.Tensor, torch.Tensor, int, float]] = []
        self.latest_honest: torch.Tensor | None = None
        self.honest_arrivals = 0
        self.honest_rejected = 0
        self._seq = 0
        self._start_all()

    # -- workers -----------------------------------------------------------------------
    def _delay(self, worker: int) -> float:
        return float(exponential_delays(self.rates[worker : worker + 1], self.delay_gen)[0])

    def _compute(self, workers: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.sampler.sample(self.batch_size)[workers]
        xb, yb = self.x[idx], self.y[idx].clone()
        if isinstance(self.attack, DataAttack):
            for row, w in enumerate(workers):
                if w >= self.honest:
                    yb[row] = self.attack(
                        yb[row], num_classes=self.num_classes, **self.attack_params
                    )
        return worker_gradients(self.model, self.loss_fn, xb, yb, self.l2)

    def _start(self, workers: list[int]) -> None:
        """The workers read the current model and start computing (their gradient is ready now)."""
        grads, losses = self._compute(workers)
        at = flatten_params(self.model)
        for row, w in enumerate(workers):
            self._seq += 1
            event = (
                self.now + self._delay(w),
                self._seq,
                w,
                grads[row],
                at,
                self.version,
                float(losses[row]),
            )
            heapq.heappush(self.events, event)
        if self.latest_honest is None:
            self.latest_honest = torch.zeros(self.honest, grads.shape[1], dtype=grads.dtype)
        for row, w in enumerate(workers):
            if w < self.honest:  # what omniscient attackers see: each honest worker's latest
                self.latest_honest[w] = grads[row]

    def _start_all(self) -> None:
        self._start(list(range(self.n)))

    # -- one arrival -------------------------------------------------------------------------
    def step(self) -> AsyncStepStats:
        arrival, _, worker, grad, at, version, loss = heapq.heappop(self.events)
        self.now = arrival
        is_byzantine = worker >= self.honest
        if is_byzantine and isinstance(self.attack, GradientAttack):
            grad = self.attack(
                self.latest_honest, 1, generator=self.attack_gen, **self.attack_params
            )[0]
        if not bool(torch.isfinite(grad).all()) and not is_byzantine:
            raise TrainingDivergedError(
                f"arrival {self.step_count + 1}: an honest gradient is not finite."
            )
        tau = self.version - version
        finite = bool(torch.isfinite(grad).all())
        accepted = finite
        if finite and self.filter is not None:
            accepted, grad = self.filter(worker, grad, at)
        weight = staleness_weight(tau, self.staleness, self.beta)
        if not is_byzantine:
            self.honest_arrivals += 1
            self.honest_rejected += not accepted
        applied = grad * weight
        if accepted:
            self.optimizer.zero_grad(set_to_none=True)
            set_flat_grad(self.model, applied)
            self.optimizer.step()
            self.version += 1
        self.step_count += 1
        self._start([worker])
        return AsyncStepStats(
            loss=loss,
            sim_time=self.now,
            worker=worker,
            byzantine=is_byzantine,
            staleness=tau,
            accepted=accepted,
            weight=weight,
            honest_rejection_rate=self.honest_rejected / max(self.honest_arrivals, 1),
            aggregate_norm=float(applied.norm()) if finite else math.inf,
        )

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch: int = 4096) -> dict[str, float]:
        from byzance.sim.sync import evaluate_model

        return evaluate_model(self.model, self.loss_fn, self.num_classes, x, y, batch)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "events": list(self.events),
            "generators": [
                g.get_state() for g in (self.batch_gen, self.attack_gen, self.delay_gen)
            ],
            "counters": (
                self.version,
                self.now,
                self.step_count,
                self.honest_arrivals,
                self.honest_rejected,
                self._seq,
            ),
            "latest_honest": self.latest_honest,
            "filter": None
            if self.filter is None
            else (list(self.filter.recent), self.filter.previous, self.filter.rejections),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.events = list(state["events"])
        heapq.heapify(self.events)
        for g, s in zip(
            (self.batch_gen, self.attack_gen, self.delay_gen), state["generators"], strict=True
        ):
            g.set_state(s)
        (
            self.version,
            self.now,
            self.step_count,
            self.honest_arrivals,
            self.honest_rejected,
            self._seq,
        ) = state["counters"]
        self.latest_honest = state["latest_honest"]
        if self.filter is not None and state["filter"] is not None:
            recent, previous, rejections, sources, last, accepted, norms = state["filter"]
            self.filter.norms = norms
            self.filter.last_received, self.filter.last_accepted = last, accepted
            self.filter.recent.clear()
            self.filter.recent.extend(recent)
            self.filter.last_sources.clear()
            self.filter.last_sources.extend(sources)
            self.filter.previous, self.filter.rejections = previous, rejections
