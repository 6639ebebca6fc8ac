"""Asynchronous training: stale gradients, the Kardam filter and staleness dampening.

Damaskinos, El Mhamdi, Guerraoui, Patra, Taziki, "Asynchronous Byzantine
Machine Learning (the case of SGD)", ICML 2018 (Kardam).

Simulated time: a worker that starts at time t reads the current model
(version v), computes its gradient, and delivers it at t + delay, delays drawn
from an exponential distribution with the worker's rate. The server applies
gradients as they arrive, so a gradient is tau = (version at arrival - v)
updates stale. Computing the gradient when the worker starts (rather than
keeping a copy of the model until it arrives) gives the same numbers.

The Kardam filter (:mod:`byzance.sim.kardam`): each arriving gradient's
empirical Lipschitz coefficient k = |g_t - g_prev| / |x_t - x_prev| (against
the previous gradient the same worker sent and the model it was computed at)
must be within the (n - f)/n quantile of the workers' latest coefficients,
and (frequency filter, can be switched off) its worker must not be the source
of one of the last 2f accepted gradients. Our optional no-starvation rule
(``max_rejections``, -1 = never, the paper's filter) lets a worker's gradient
through, clipped, after that many rejections in a row. Accepted gradients are
scaled by the staleness function Lambda(tau): exp(-beta tau) or
1 / (1 + beta tau).

Each arrival reports the honest rejection rate and the Byzantine acceptance
rate so far (counted in :class:`Arrivals`, so that a resumed run counts on).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from byzance.attacks import DataAttack, GradientAttack
from byzance.errors import InvalidParameterError
from byzance.sim.core import (
    Clock,
    Composition,
    ServerOptimizer,
    seeded,
    workers_and_adversary,
)
from byzance.sim.gradients import flatten_params
from byzance.sim.kardam import KardamFilter
from byzance.sim.metrics import TrainingDivergedError, evaluate_model, loss_for

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
    byzantine_acceptance_rate: float = 0.0  # accepted / arrived, Byzantine gradients so far


class Arrivals:
    """The server's queue of computations in flight, and what omniscient attackers see.

    An event is (arrival time, sequence number, worker, gradient (d,), the
    model it was computed at (d,), the model's version then, the loss).
    """

    def __init__(self) -> None:
        self.events: list[tuple[float, int, int, torch.Tensor, torch.Tensor, int, float]] = []
        self.seq = 0
        self.version = 0  # updates applied so far
        self.latest_honest: torch.Tensor | None = None  # (h, d): each honest worker's latest
        self.honest_arrivals = 0
        self.honest_rejected = 0
        self.byzantine_arrivals = 0
        self.byzantine_accepted = 0

    def push(self, at_time: float, worker: int, grad: torch.Tensor, at: torch.Tensor, loss: float):
        self.seq += 1
        heapq.heappush(self.events, (at_time, self.seq, worker, grad, at, self.version, loss))

    def pop(self) -> tuple[float, int, int, torch.Tensor, torch.Tensor, int, float]:
        return heapq.heappop(self.events)

    def state_dict(self) -> dict[str, Any]:
        return {
            "events": [list(event) for event in self.events],
            "counters": [getattr(self, name) for name in _COUNTERS],
            "latest_honest": self.latest_honest,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.events = [
            (float(t), int(s), int(w), g, x, int(v), float(loss))
            for t, s, w, g, x, v, loss in state["events"]
        ]
        heapq.heapify(self.events)
        counters = [int(c) for c in state["counters"]] + [0, 0]  # older: no Byzantine counts
        for name, value in zip(_COUNTERS, counters, strict=False):
            setattr(self, name, value)
        self.latest_honest = state["latest_honest"]


_COUNTERS = (
    "seq",
    "version",
    "honest_arrivals",
    "honest_rejected",
    "byzantine_arrivals",
    "byzantine_accepted",
)


class AsyncSimulator(Composition):
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
        max_rejections: int = -1,
        frequency_filter: bool = True,
        staleness: Staleness = "exponential",
        staleness_beta: float = 0.1,
        task: str = "classification",
        num_classes: int = 0,
        seed: int = 0,
        augment: str | None = None,
        precision: str = "fp32",
    ) -> None:
        self.model, self.loss_fn, self.num_classes = model, loss_for(task), num_classes
        self.n, self.byzantine, self.f = len(shards), byzantine, f
        self.honest = self.n - byzantine
        rates = list(rates) if rates else [1.0] * self.honest
        if len(rates) != self.honest or min(rates) <= 0:
            raise InvalidParameterError(
                f"async: worker_rates needs one positive rate per honest worker ({self.honest}); got {rates}."
            )
        staleness_weight(0, staleness, staleness_beta)  # validates the kind
        self.staleness, self.beta = staleness, staleness_beta
        # Every worker draws a batch (the simulator's full index matrix); Byzantine
        # workers with a gradient attack replace their gradient when it arrives.
        self.workers, self.adversary = workers_and_adversary(
            model,
            x_train,
            y_train,
            shards,
            byzantine=byzantine,
            attack=attack,
            attack_params=attack_params,
            batch_size=batch_size,
            l2=l2,
            loss_fn=self.loss_fn,
            num_classes=num_classes,
            seed=seed,
            augment=augment,
            precision=precision,
            forgers_compute=True,
            forged_rows=1,
        )
        self.server = ServerOptimizer(model, optimizer)
        self.optimizer = optimizer
        all_rates = torch.tensor(rates + [byzantine_rate] * byzantine, dtype=torch.float64)
        self.clock = Clock(all_rates, seeded(seed, "delays"))
        self.filter = (
            KardamFilter(
                self.n,
                f,
                window=window,
                max_rejections=max_rejections,
                frequency_filter=frequency_filter,
            )
            if kardam
            else None
        )
        self.arrivals = Arrivals()
        self.compose(
            workers=self.workers,
            server=self.server,
            clock=self.clock,
            arrivals=self.arrivals,
            adversary=self.adversary,
            kardam=self.filter,
        )
        self._start(list(range(self.n)))

    # -- workers -----------------------------------------------------------------------
    def _start(self, workers: list[int]) -> None:
        """The workers read the current model and start computing (their gradient is ready now)."""
        rows = torch.tensor(workers)
        grads, losses = self.workers.gradients(self.workers.draw()[rows], rows)
        at = flatten_params(self.model)
        queue = self.arrivals
        for row, w in enumerate(workers):
            queue.push(self.clock.now + self.clock.delay(w), w, grads[row], at, float(losses[row]))
        if queue.latest_honest is None:
            queue.latest_honest = grads.new_zeros(self.honest, grads.shape[1])
        for row, w in enumerate(workers):
            if w < self.honest:  # what omniscient attackers see: each honest worker's latest
                queue.latest_honest[w] = grads[row]

    # -- one arrival -------------------------------------------------------------------------
    def step(self) -> AsyncStepStats:
        queue = self.arrivals
        arrival, _, worker, grad, at, version, loss = queue.pop()
        self.clock.now = arrival
        is_byzantine = worker >= self.honest
        if is_byzantine and self.adversary is not None:
            if not bool(torch.isfinite(queue.latest_honest).all()):
                raise TrainingDivergedError(
                    f"arrival {self.step_count + 1}: an honest gradient is not finite."
                )
            grad = self.adversary.forge(queue.latest_honest)[0]
        finite = bool(torch.isfinite(grad).all())
        if not finite and not is_byzantine:
            raise TrainingDivergedError(
                f"arrival {self.step_count + 1}: an honest gradient is not finite."
            )
        tau = queue.version - version
        accepted = finite
        if finite and self.filter is not None:
            accepted, grad = self.filter(worker, grad, at)
        weight = staleness_weight(tau, self.staleness, self.beta)
        if is_byzantine:
            queue.byzantine_arrivals += 1
            queue.byzantine_accepted += accepted
        else:
            queue.honest_arrivals += 1
            queue.honest_rejected += not accepted
        applied = grad * weight
        if accepted:
            self.server.apply(applied)
            queue.version += 1
        self.step_count += 1
        self._start([worker])
        return AsyncStepStats(
            loss=loss,
            sim_time=self.clock.now,
            worker=worker,
            byzantine=is_byzantine,
            staleness=tau,
            accepted=accepted,
            weight=weight,
            honest_rejection_rate=queue.honest_rejected / max(queue.honest_arrivals, 1),
            aggregate_norm=float(applied.norm()) if finite else math.inf,
            byzantine_acceptance_rate=queue.byzantine_accepted / max(queue.byzantine_arrivals, 1),
        )

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch: int = 4096) -> dict[str, float]:
        return evaluate_model(self.model, self.loss_fn, self.num_classes, x, y, batch)
