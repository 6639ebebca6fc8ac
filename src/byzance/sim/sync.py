"""The synchronous parameter server, simulated in one process.

Per step: every computing worker (the honest ones, plus Byzantine ones that
attack through their data) draws a batch from its shard; their gradients come
from one vectorized call; workers with momentum send their momentum (El
Mhamdi, Guerraoui, Rouault, "Distributed Momentum for Byzantine-resilient
Stochastic Gradient Descent", ICLR 2021); omniscient Byzantine workers send
what their attack computes from the honest vectors; the rule aggregates; the
server's optimizer applies the result.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from byzance.aggregators import Rule
from byzance.attacks import DataAttack, GradientAttack
from byzance.sim.gradients import LossFn, set_flat_grad, worker_gradients
from byzance.sim.sampler import BatchSampler, exponential_delays


def loss_for(task: str) -> LossFn:
    """Cross-entropy for classification, mean squared error for regression."""
    return F.cross_entropy if task == "classification" else F.mse_loss


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    loss_fn: LossFn,
    num_classes: int,
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int = 4096,
) -> dict[str, float]:
    """Mean loss (and accuracy when ``num_classes``) of ``model`` on (x, y), in batches."""
    total_loss, correct = 0.0, 0
    for i in range(0, len(x), batch):
        out = model(x[i : i + batch])
        total_loss += float(loss_fn(out, y[i : i + batch])) * len(out)
        if num_classes:
            correct += int((out.argmax(dim=1) == y[i : i + batch]).sum())
    result = {"test_loss": total_loss / len(x)}
    if num_classes:
        result["accuracy"] = correct / len(x)
    return result


class TrainingDivergedError(RuntimeError):
    """The model's parameters or the honest gradients are no longer finite."""


@dataclass(frozen=True)
class StepStats:
    """What one step did, for the metrics and for understanding why a rule fails.

    ``deviation``: distance from the aggregate to the honest mean;
    ``byzantine_selected``: for selection rules, the fraction of the inputs
    the rule used that were Byzantine (None for other rules).
    """

    loss: float
    honest_norm: float
    honest_spread: float
    deviation: float
    aggregate_norm: float
    byzantine_selected: float | None
    aggregation_seconds: float
    sim_time: float | None = None


def step_stats(
    rule: Rule,
    f: int,
    honest_losses: torch.Tensor,
    honest: torch.Tensor,
    inputs: torch.Tensor,
    byzantine_rows: torch.Tensor,
    aggregate: torch.Tensor,
    seconds: float,
    *,
    honest_mean: torch.Tensor | None = None,
) -> StepStats:
    """One step's statistics (shared by the simulator and real distributed runs).

    Args:
        rule: the rule that aggregated; f: its f.
        honest_losses: the honest workers' losses (h,).
        honest: the honest vectors (h, d); inputs: every vector aggregated (m, d).
        byzantine_rows: (m,) bool, which inputs came from Byzantine workers.
        aggregate: the rule's output (d,); seconds: how long the rule took.
        honest_mean: ``honest.mean(dim=0)`` when the caller has it already.
    """
    if honest_mean is None:
        honest_mean = honest.mean(dim=0)
    selected = None
    if rule.selector is not None and bool(byzantine_rows.any()):
        used = rule.selector(inputs, f)
        selected = float(byzantine_rows[used].float().mean()) if len(used) else 0.0
    return StepStats(
        loss=float(honest_losses.mean()),
        honest_norm=float(honest_mean.norm()),
        honest_spread=float((honest - honest_mean).norm(dim=1).mean()),
        deviation=float((aggregate - honest_mean).norm()),
        aggregate_norm=float(aggregate.norm()),
        byzantine_selected=selected,
        aggregation_seconds=seconds,
    )


class SyncSimulator:
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
        worker_momentum: beta of the workers' momentum m <- beta m + g (0: none).
        l2: the workers' objective adds (l2 / 2) |theta|^2.
        task: "classification" or "regression".
        seed: seeds the batch, attack and rule generators.
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
        l2: float = 0.0,
        task: str = "classification",
        num_classes: int = 0,
        seed: int = 0,
        rates: list[float] | None = None,
    ) -> None:
        self.model, self.x, self.y = model, x_train, y_train
        # Simulated time, when the honest workers' delay rates are given: a step lasts
        # as long as the slowest honest worker (delays ~ Exp(rate)), as in AsyncSimulator.
        self.rates = torch.tensor(rates, dtype=torch.float64) if rates else None
        self.delay_gen = torch.Generator().manual_seed(seed * 1_000_003 + 4)
        self.now = 0.0
        self.n, self.byzantine, self.f = len(shards), byzantine, f
        self.honest = self.n - byzantine
        self.rule, self.attack = rule, attack
        self.attack_params = dict(attack_params or {})
        self.optimizer, self.scheduler = optimizer, scheduler
        self.batch_size, self.beta, self.l2 = batch_size, worker_momentum, l2
        self.loss_fn, self.num_classes = loss_for(task), num_classes
        self.batch_gen = torch.Generator().manual_seed(seed * 1_000_003 + 1)
        self.attack_gen = torch.Generator().manual_seed(seed * 1_000_003 + 2)
        # Workers that compute gradients on data: the honest ones, plus Byzantine
        # ones whose attack is on their data (or who behave, with no attack).
        gradient_attack = isinstance(attack, GradientAttack) and byzantine > 0
        self.computing = self.honest if gradient_attack else self.n
        self.sampler = BatchSampler(shards[: self.computing], self.batch_gen)
        self.momentum: torch.Tensor | None = None
        self.center: torch.Tensor | None = None  # centered clipping's state
        self.uses_center = rule.carries_center
        self.step_count = 0

    # -- one step ---------------------------------------------------------------------
    def step(self) -> StepStats:
        idx = self.sampler.sample(self.batch_size)
        xb, yb = self.x[idx], self.y[idx]
        if isinstance(self.attack, DataAttack) and self.byzantine:
            yb[self.honest :] = self.attack(
                yb[self.honest :], num_classes=self.num_classes, **self.attack_params
            )
        grads, losses = worker_gradients(self.model, self.loss_fn, xb, yb, self.l2)
        if not bool(torch.isfinite(grads[: self.honest]).all()):
            raise TrainingDivergedError(
                f"step {self.step_count + 1}: the honest gradients are not finite; the model "
                "diverged (a rule that let a Byzantine vector through, or too large a learning rate)."
            )
        if self.beta:
            self.momentum = grads if self.momentum is None else self.beta * self.momentum + grads
            sent = self.momentum
        else:
            sent = grads
        honest = sent[: self.honest]
        if self.computing < self.n:
            byz = self.attack(  # type: ignore[misc]
                honest,
                self.byzantine,
                rule=self.rule,
                generator=self.attack_gen,
                **self.attack_params,
            )
            inputs = torch.cat([honest, byz])
        else:
            inputs = sent
        params = {"center": self.center} if self.uses_center else {}
        start = time.perf_counter()
        aggregate = self.rule(inputs, self.f, **params)
        seconds = time.perf_counter() - start
        if self.uses_center:
            self.center = aggregate
        stats = self._stats(losses, honest, inputs, aggregate, seconds)
        if self.rates is not None:
            self.now += float(exponential_delays(self.rates, self.delay_gen).max())
            stats = dataclasses.replace(stats, sim_time=self.now)
        self.optimizer.zero_grad(set_to_none=True)
        set_flat_grad(self.model, aggregate)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.step_count += 1
        return stats

    def _stats(
        self,
        losses: torch.Tensor,
        honest: torch.Tensor,
        inputs: torch.Tensor,
        aggregate: torch.Tensor,
        seconds: float,
    ) -> StepStats:
        byzantine_rows = torch.arange(len(inputs)) >= self.honest
        return step_stats(
            self.rule,
            self.f,
            losses[: self.honest],
            honest,
            inputs,
            byzantine_rows,
            aggregate,
            seconds,
        )

    # -- evaluation --------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch: int = 4096) -> dict[str, float]:
        """Mean loss (and accuracy for classification) of the model on (x, y)."""
        return evaluate_model(self.model, self.loss_fn, self.num_classes, x, y, batch)

    # -- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue with the very same numbers."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "momentum": self.momentum,
            "center": self.center,
            "batch_gen": self.batch_gen.get_state(),
            "attack_gen": self.attack_gen.get_state(),
            "delay_gen": self.delay_gen.get_state(),
            "now": self.now,
            "step": self.step_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.momentum, self.center = state["momentum"], state["center"]
        self.batch_gen.set_state(state["batch_gen"])
        self.attack_gen.set_state(state["attack_gen"])
        self.delay_gen.set_state(state["delay_gen"])
        self.now = state["now"]
        self.step_count = state["step"]
