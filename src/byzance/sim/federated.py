"""Federated rounds: sampled clients run local steps and send model updates, robustly aggregated.

FedAvg (McMahan, Moore, Ramage, Hampson, Agüera y Arcas, "Communication-
Efficient Learning of Deep Networks from Decentralized Data", AISTATS 2017)
with the server's average replaced by any robust rule, as in the robust-FL
literature (e.g. Karimireddy, He, Jaggi, ICLR 2022; Allouah et al., AISTATS
2023; the ByzFL benchmark's FedAvg with ``proportion_selected_clients`` and
``local_steps_per_client``).

A round (one ``step``):

1. the server samples ``per_round`` of the ``clients`` (seeded, the
   ``clients`` stream). Clients ``0 .. honest - 1`` are honest, the others
   Byzantine. ``byzantine_sampling = "fixed"`` puts exactly ``byzantine_per_round``
   Byzantine clients in every round; ``"random"`` draws the round from the whole
   population, so the Byzantine count varies around its expectation and may
   exceed the f the rule was told (recorded per round);
2. every sampled honest client (and, with a label attack, every sampled
   Byzantine one, on poisoned labels) runs ``local_steps`` of SGD from the
   server's model on batches of its own data, with ``local_lr`` and
   ``local_momentum`` (m <- beta m + g, restarted each round). All clients of
   the round step together: one vmapped gradient computation over per-client
   parameters (k, d) per local step, never a loop over clients;
3. each client sends its pseudo-gradient theta_server - theta_client (the
   model update, negated: Reddi et al., "Adaptive Federated Optimization",
   ICLR 2021), so that every attack and rule sees vectors in the same
   orientation as gradients; Byzantine clients with a vector attack send what
   it forges from the round's honest updates;
4. the rule aggregates the round's vectors with the configured f and the
   server optimizer steps along the aggregate with its learning rate (1.0 and
   no momentum: FedAvg's model average).

Memory grows with the clients of a round (k, d), not with the population:
the population is its index table of shards.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from byzance import aggregators
from byzance.attacks import DataAttack, GradientAttack
from byzance.errors import InvalidParameterError
from byzance.sim.core import (
    Aggregation,
    Composition,
    ServerOptimizer,
    seeded,
    workers_and_adversary,
)
from byzance.sim.gradients import flatten_params
from byzance.sim.metrics import (
    StepStats,
    TrainingDivergedError,
    evaluate_model,
    loss_for,
    step_stats,
)


@dataclasses.dataclass(frozen=True)
class RoundStats(StepStats):
    """A round's statistics: a step's, plus how many Byzantine clients it sampled.

    ``byzantine_over_f``: more Byzantine clients were sampled than the rule's f;
    ``skipped``: the round sampled no honest client and was not applied (an
    omniscient attack has no honest update to compute from; such a round is
    the Byzantine clients' to set, which no rule can prevent).
    """

    clients: int = 0
    byzantine_sampled: int = 0
    byzantine_over_f: bool = False
    skipped: bool = False


class ClientSampler:
    """Which clients a round samples: honest ids and Byzantine ids (each sorted).

    Args:
        clients: the population; the last ``byzantine`` are Byzantine.
        byzantine: Byzantine clients in the population.
        per_round: clients sampled each round.
        fixed: exactly ``byzantine_per_round`` Byzantine clients per round
            (else the round is drawn from the whole population).
        byzantine_per_round: for ``fixed``.
        generator: the ``clients`` stream.
    """

    def __init__(
        self,
        clients: int,
        byzantine: int,
        per_round: int,
        *,
        fixed: bool,
        byzantine_per_round: int,
        generator: torch.Generator,
    ) -> None:
        self.honest, self.byzantine, self.per_round = clients - byzantine, byzantine, per_round
        self.fixed = fixed
        self.byzantine_per_round = min(byzantine_per_round, byzantine) if fixed else 0
        if not 1 <= per_round <= clients or per_round - self.byzantine_per_round > self.honest:
            raise InvalidParameterError(
                f"a round of {per_round} clients cannot be drawn from {self.honest} honest and "
                f"{byzantine} Byzantine clients with {self.byzantine_per_round} Byzantine per round."
            )
        self.generator = generator

    def draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The round's honest client ids (h,) and Byzantine client ids (b,), h + b = per_round."""
        g = self.generator
        if self.fixed:
            k = self.byzantine_per_round
            honest = torch.randperm(self.honest, generator=g)[: self.per_round - k]
            byzantine = self.honest + torch.randperm(self.byzantine, generator=g)[:k]
        else:
            ids = torch.randperm(self.honest + self.byzantine, generator=g)[: self.per_round]
            honest, byzantine = ids[ids < self.honest], ids[ids >= self.honest]
        return honest.sort().values, byzantine.sort().values

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class FederatedSimulator(Composition):
    """Robust FedAvg: rounds of sampled clients' local steps (see the module docstring).

    ``model``'s parameters are the server's; ``shards`` holds one index tensor
    per client (the population, Byzantine clients last); ``f`` is the number of
    Byzantine inputs the rule tolerates in a round.
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
        rule: aggregators.Rule,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        clients_per_round: int,
        byzantine_sampling: str = "fixed",
        local_steps: int = 1,
        local_lr: float = 0.1,
        local_momentum: float = 0.0,
        batch_size: int = 32,
        l2: float = 0.0,
        task: str = "classification",
        num_classes: int = 0,
        seed: int = 0,
        augment: str | None = None,
        precision: str = "fp32",
    ) -> None:
        if byzantine_sampling not in ("fixed", "random"):
            raise InvalidParameterError(
                f"byzantine_sampling must be 'fixed' or 'random'; got {byzantine_sampling!r}."
            )
        self.model, self.loss_fn, self.num_classes = model, loss_for(task), num_classes
        self.f = f
        self.local_steps, self.local_lr, self.local_momentum = local_steps, local_lr, local_momentum
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
        self.sampler = ClientSampler(
            len(shards),
            byzantine,
            clients_per_round,
            fixed=byzantine_sampling == "fixed",
            byzantine_per_round=f,
            generator=seeded(seed, "clients"),
        )
        self.aggregation = Aggregation(rule, f, seeded(seed, "rule"))
        self.server = ServerOptimizer(model, optimizer, scheduler)
        self.optimizer = optimizer
        self.compose(
            workers=self.workers,
            sampler=self.sampler,
            adversary=self.adversary,
            aggregation=self.aggregation,
            server=self.server,
        )

    @property
    def rule(self) -> aggregators.Rule:
        return self.aggregation.rule

    def local_training(self, clients: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pseudo-gradients (k, d) of the ``clients`` (k,) after their local steps, and losses (k,).

        The losses are those of each client's first batch, at the server's model.
        """
        k = len(clients)
        # Per-parameter tensors (k, *shape): stepped in place, concatenated once at the end.
        params = {
            name: p.detach().expand(k, *p.shape).clone()
            for name, p in self.model.named_parameters()
        }
        velocity: dict[str, torch.Tensor] = {}
        first_losses: torch.Tensor | None = None
        for _ in range(self.local_steps):
            grads, losses = self.workers.gradients(self.workers.draw(clients), clients, params)
            if first_losses is None:
                first_losses = losses
            for name, g in grads.items():
                if self.local_momentum:
                    if name in velocity:
                        g = velocity[name].mul_(self.local_momentum).add_(g)
                    velocity[name] = g
                params[name].sub_(g, alpha=self.local_lr)
        assert first_losses is not None  # local_steps >= 1
        theta = flatten_params(self.model)
        return theta - torch.cat([p.reshape(k, -1) for p in params.values()], dim=1), first_losses

    def step(self) -> RoundStats:
        honest_ids, byzantine_ids = self.sampler.draw()
        if not len(honest_ids):
            self.step_count += 1
            return RoundStats(
                *([0.0] * 5),
                byzantine_selected=None,
                aggregation_seconds=0.0,
                clients=len(byzantine_ids),
                byzantine_sampled=len(byzantine_ids),
                byzantine_over_f=len(byzantine_ids) > self.f,
                skipped=True,
            )
        computing = (
            honest_ids if self.adversary is not None else torch.cat([honest_ids, byzantine_ids])
        )
        h = len(honest_ids)
        updates, losses = self.local_training(computing)
        if not bool(torch.isfinite(updates[:h]).all()):
            raise TrainingDivergedError(
                f"round {self.step_count + 1}: the honest clients' updates are not finite; the "
                "model diverged (a rule that let a Byzantine update through, or too large a "
                "learning rate)."
            )
        honest = updates[:h]
        if self.adversary is not None and len(byzantine_ids):
            forged = self.adversary.forge(honest, self.rule, count=len(byzantine_ids))
            inputs = torch.cat([honest, forged])
        else:
            inputs = updates
        aggregate = self.aggregation(inputs)
        byzantine_rows = torch.arange(len(inputs), device=inputs.device) >= h
        stats = step_stats(
            self.rule,
            self.f,
            losses[:h],
            honest,
            inputs,
            byzantine_rows,
            aggregate,
            self.aggregation.seconds,
        )
        self.server.apply(aggregate)
        self.step_count += 1
        return RoundStats(
            **dataclasses.asdict(stats),
            clients=len(inputs),
            byzantine_sampled=len(byzantine_ids),
            byzantine_over_f=len(byzantine_ids) > self.f,
        )

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch: int = 4096) -> dict[str, float]:
        """Mean loss (and accuracy for classification) of the server's model on (x, y)."""
        return evaluate_model(self.model, self.loss_fn, self.num_classes, x, y, batch)
