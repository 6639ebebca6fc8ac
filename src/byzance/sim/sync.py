"""The synchronous parameter server, simulated in one process.

Per step: every computing worker (the honest ones, plus Byzantine ones that
attack through their data) draws a batch from its shard; their gradients come
from one vectorized call; workers with momentum send their momentum (El
Mhamdi, Guerraoui, Rouault, "Distributed Momentum for Byzantine-resilient
Stochastic Gradient Descent", ICLR 2021); omniscient Byzantine workers send
what their attack computes from the honest vectors; the rule aggregates; the
server's optimizer applies the result. The parts are those of
:mod:`byzance.sim.core`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from byzance.aggregators import Rule
from byzance.attacks import DataAttack, GradientAttack
from byzance.sim.core import (
    Aggregation,
    Clock,
    Composition,
    ServerOptimizer,
    WorkerMomentum,
    seeded,
    workers_and_adversary,
)
from byzance.sim.metrics import (
    StepStats,
    TrainingDivergedError,
    evaluate_model,
    loss_for,
    step_stats,
)


class SyncSimulator(Composition):
    """n workers, the last ``byzantine`` of them Byzantine, and a robust parameter server.

    Args:
        model: the model trained (its parameters are the server's).
        x_train: training inputs, shape (N, *input_shape).
        y_train: training targets, shape (N,).
        shards: one index tensor into the training set per worker (n of them).
        rule: the aggregation rule (possibly a pipeline), called with ``f``.
        f: the number of Byzantine inputs the rule tolerates.
        byzantine: the number of workers that actually attack (the last ones).
        attack: what they do: a gradient attack, a data attack, or None (they behave).
        attack_params: the attack's parameters.
        optimizer: the server's optimizer over ``model.parameters()``.
        scheduler: its learning-rate schedule, stepped once per step, or None.
        batch_size: samples per worker per step.
        worker_momentum: beta of the workers' momentum (0: none).
        worker_momentum_form: ``"ema"`` (m <- beta m + (1 - beta) g) or ``"heavy_ball"``
            (m <- beta m + g); see :class:`~byzance.sim.core.WorkerMomentum`.
        l2: the workers' objective adds (l2 / 2) |theta|^2.
        task: "classification" or "regression".
        seed: seeds the batch, attack, rule and delay generators.
        rates: the honest workers' delay rates: with them, simulated time runs
            (a step lasts as long as the slowest honest worker).
    """

    def __init__(
        self,
        model: nn.Module,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        shards: list[torch.Tensor],
        *,
        rule: Rule,
        f: int,
        byzantine: int,
        attack: GradientAttack | DataAttack | None,
        attack_params: dict[str, Any] | None = None,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        batch_size: int = 32,
        worker_momentum: float = 0.0,
        worker_momentum_form: str = "ema",
        l2: float = 0.0,
        task: str = "classification",
        num_classes: int = 0,
        seed: int = 0,
        rates: list[float] | None = None,
        augment: str | None = None,
        precision: str = "fp32",
    ) -> None:
        self.model, self.loss_fn, self.num_classes = model, loss_for(task), num_classes
        self.n, self.byzantine, self.f = len(shards), byzantine, f
        self.honest = self.n - byzantine
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
        )
        self.momentum = WorkerMomentum(worker_momentum, worker_momentum_form)
        self.aggregation = Aggregation(rule, f, seeded(seed, "rule"))
        self.server = ServerOptimizer(model, optimizer, scheduler)
        self.optimizer = optimizer
        self.clock = (
            Clock(torch.tensor(rates, dtype=torch.float64), seeded(seed, "delays"))
            if rates
            else None
        )
        self.compose(
            workers=self.workers,
            momentum=self.momentum,
            aggregation=self.aggregation,
            server=self.server,
            adversary=self.adversary,
            clock=self.clock,
        )

    @property
    def rule(self) -> Rule:
        return self.aggregation.rule

    # -- one step ---------------------------------------------------------------------
    def step(self) -> StepStats:
        grads, losses = self.workers.gradients(self.workers.draw())
        if not bool(torch.isfinite(grads[: self.honest]).all()):
            raise TrainingDivergedError(
                f"step {self.step_count + 1}: the honest gradients are not finite; the model "
                "diverged (a rule that let a Byzantine vector through, or too large a learning rate)."
            )
        sent = self.momentum(grads)
        honest = sent[: self.honest]
        if self.adversary is not None:
            inputs = torch.cat([honest, self.adversary.forge(honest, self.rule)])
        else:
            inputs = sent
        aggregate = self.aggregation(inputs)
        byzantine_rows = torch.arange(len(inputs), device=inputs.device) >= self.honest
        stats = step_stats(
            self.rule,
            self.f,
            losses[: self.honest],
            honest,
            inputs,
            byzantine_rows,
            aggregate,
            self.aggregation.seconds,
        )
        if self.clock is not None:
            stats = dataclasses.replace(stats, sim_time=self.clock.wait_for_all())
        self.server.apply(aggregate)
        self.step_count += 1
        return stats

    # -- evaluation --------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch: int = 4096) -> dict[str, float]:
        """Mean loss (and accuracy for classification) of the model on (x, y)."""
        return evaluate_model(self.model, self.loss_fn, self.num_classes, x, y, batch)


__all__ = ["StepStats", "SyncSimulator", "TrainingDivergedError", "evaluate_model", "loss_for"]
