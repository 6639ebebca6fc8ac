"""Several parameter servers, some of them Byzantine (ByzSGD / Garfield style).

El Mhamdi, Guerraoui, Guirguis, Hoang, Rouault, "Genuinely Distributed
Byzantine Machine Learning", PODC 2020 (ByzSGD); Guerraoui et al., "Garfield:
System Support for Byzantine Machine Learning", DSN 2021.

m server replicas, the last ``byzantine_servers`` (f_s) of them Byzantine.
Per step, every worker pulls the m models and combines them with a robust
rule (``server_rule``, the median by default); Byzantine servers send
corrupted models (a huge vector, the negated model, or a different model to
each worker). Each worker computes its gradient at its own combined model
(one vmap over per-worker parameters); each honest server aggregates the
workers' gradients with the worker rule and steps; every ``exchange_every``
steps the honest servers replace their model by the robust combination of all
m models they receive, so that they stay close. The combination over servers
needs the server rule's requirement at (m, f_s), e.g. m >= 2 f_s + 1 for the
median.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.utils import vector_to_parameters

from byzance.aggregators import Rule
from byzance.attacks import DataAttack, GradientAttack
from byzance.errors import InvalidParameterError, ToleranceError
from byzance.sim.core import (
    Aggregation,
    Composition,
    WorkerMomentum,
    seeded,
    workers_and_adversary,
)
from byzance.sim.gradients import flatten_params
from byzance.sim.metrics import TrainingDivergedError, evaluate_model, loss_for

ServerAttack = Literal["none", "large_norm", "sign_flip", "per_worker"]
SERVER_ATTACKS = ("none", "large_norm", "sign_flip", "per_worker")


@dataclass(frozen=True)
class ServerStepStats:
    """One round: workers' loss, the spread between honest servers, the aggregate's size."""

    loss: float
    server_spread: float
    honest_norm: float
    aggregate_norm: float
    aggregation_seconds: float = 0.0


class ServerReplicas:
    """The honest servers' models (m - f_s, d) and what the f_s Byzantine servers send.

    Args:
        start: the initial model (d,), every honest server's.
        servers: m, the number of servers.
        byzantine_servers: f_s, how many of them are Byzantine.
        server_rule: how a receiver combines the m models it receives.
        server_attack: what Byzantine servers send (see the module docstring).
        generator: the ``attack`` stream (shared with the Byzantine workers).
    """

    def __init__(
        self,
        start: torch.Tensor,
        *,
        servers: int,
        byzantine_servers: int,
        server_rule: Rule,
        server_attack: ServerAttack,
        generator: torch.Generator,
    ) -> None:
        self.m, self.fs, self.rule, self.attack = (
            servers,
            byzantine_servers,
            server_rule,
            server_attack,
        )
        self.generator = generator
        self.models = start.expand(servers - byzantine_servers, -1).clone()

    def corrupted(self, honest_mean: torch.Tensor) -> torch.Tensor:
        """What the f_s Byzantine servers send to one receiver: (f_s, d)."""
        d, count = honest_mean.shape[0], self.fs
        if self.attack == "none":
            return honest_mean.expand(count, -1)
        if self.attack == "sign_flip":
            return (-honest_mean).expand(count, -1)
        noise = torch.randn(count, d, generator=self.generator, dtype=torch.float64).to(honest_mean)
        if self.attack == "large_norm":
            return 1e6 * noise / noise.norm(dim=1, keepdim=True)
        return honest_mean + noise  # per_worker: a different plausible model to each receiver

    def combine(self) -> torch.Tensor:
        """One receiver's robust combination of all m models it receives (d,)."""
        byz = self.corrupted(self.models.mean(dim=0))
        return self.rule(torch.cat([self.models, byz]), self.fs)

    def spread(self) -> float:
        """The largest distance between two honest servers' models."""
        return float(torch.cdist(self.models, self.models).max()) if len(self.models) > 1 else 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"models": self.models, "generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.models = state["models"]
        self.generator.set_state(state["generator"])


class MultiServerSimulator(Composition):
    """m servers (f_s Byzantine) and n workers (``byzantine`` of them Byzantine)."""

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
        servers: int = 3,
        byzantine_servers: int = 1,
        server_rule: Rule,
        server_attack: ServerAttack = "large_norm",
        exchange_every: int = 1,
        lr: float = 0.1,
        batch_size: int = 32,
        worker_momentum: float = 0.0,
        worker_momentum_form: str = "ema",
        l2: float = 0.0,
        task: str = "classification",
        num_classes: int = 0,
        seed: int = 0,
        augment: str | None = None,
        precision: str = "fp32",
    ) -> None:
        if servers < 1 or not 0 <= byzantine_servers < servers:
            raise InvalidParameterError(
                f"servers: need at least one honest server; got servers={servers}, "
                f"byzantine_servers={byzantine_servers}."
            )
        try:
            server_rule.check(servers, byzantine_servers)
        except ToleranceError as err:
            raise ToleranceError(
                f"combining the models of {servers} servers, {byzantine_servers} of them "
                f"Byzantine: {err}"
            ) from None
        if server_attack not in SERVER_ATTACKS:
            raise InvalidParameterError(
                f"server_attack must be one of {', '.join(SERVER_ATTACKS)}; got {server_attack!r}."
            )
        self.model, self.loss_fn, self.num_classes = model, loss_for(task), num_classes
        self.n, self.byzantine, self.f = len(shards), byzantine, f
        self.honest = self.n - byzantine
        self.exchange_every, self.lr = exchange_every, lr
        attack_gen = seeded(seed, "attack")  # Byzantine workers and servers draw from it
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
            attack_generator=attack_gen,
        )
        self.computing = self.workers.count
        self.momentum = WorkerMomentum(worker_momentum, worker_momentum_form)
        honest_servers = servers - byzantine_servers
        self.aggregation = Aggregation(rule, f, seeded(seed, "rule"), replicas=honest_servers)
        self.replicas = ServerReplicas(
            flatten_params(model),
            servers=servers,
            byzantine_servers=byzantine_servers,
            server_rule=server_rule,
            server_attack=server_attack,
            generator=attack_gen,
        )
        self.compose(
            workers=self.workers,
            momentum=self.momentum,
            aggregation=self.aggregation,
            replicas=self.replicas,
            adversary=self.adversary,
        )

    @property
    def rule(self) -> Rule:
        return self.aggregation.rule

    def step(self) -> ServerStepStats:
        replicas = self.replicas
        # Workers pull and combine the models (each may receive different Byzantine models).
        worker_models = torch.stack([replicas.combine() for _ in range(self.computing)])
        grads, losses = self.workers.gradients(self.workers.draw(), params=worker_models)
        if not bool(torch.isfinite(grads[: self.honest]).all()):
            raise TrainingDivergedError(
                f"step {self.step_count + 1}: the honest gradients are not finite."
            )
        sent = self.momentum(grads)
        honest = sent[: self.honest]
        new_models = []
        aggregate = honest.mean(dim=0)
        seconds = 0.0
        for s in range(len(replicas.models)):  # each honest server aggregates what it receives
            if self.adversary is not None:
                inputs = torch.cat([honest, self.adversary.forge(honest, self.rule)])
            else:
                inputs = sent
            aggregate = self.aggregation(inputs, replica=s)
            seconds += self.aggregation.seconds
            new_models.append(replicas.models[s] - self.lr * aggregate)
        replicas.models = torch.stack(new_models)
        self.step_count += 1
        if self.step_count % self.exchange_every == 0:
            replicas.models = torch.stack([replicas.combine() for _ in range(len(new_models))])
        return ServerStepStats(
            loss=float(losses[: self.honest].mean()),
            server_spread=replicas.spread(),
            honest_norm=float(honest.mean(dim=0).norm()),
            aggregate_norm=float(aggregate.norm()),
            aggregation_seconds=seconds,
        )

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch: int = 4096) -> dict[str, float]:
        """The first honest server's model on (x, y)."""
        vector_to_parameters(self.replicas.models[0], self.model.parameters())
        return evaluate_model(self.model, self.loss_fn, self.num_classes, x, y, batch)
