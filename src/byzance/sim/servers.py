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

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.utils import vector_to_parameters

from byzance.aggregators import Rule
from byzance.attacks import DataAttack, GradientAttack
from byzance.errors import InvalidParameterError, ToleranceError
from byzance.sim.gradients import flatten_params, worker_gradients
from byzance.sim.sampler import BatchSampler
from byzance.sim.sync import TrainingDivergedError, evaluate_model, loss_for

ServerAttack = Literal["none", "large_norm", "sign_flip", "per_worker"]


@dataclass(frozen=True)
class ServerStepStats:
    """One round: workers' loss, the spread between honest servers, the aggregate's size."""

    loss: float
    server_spread: float
    honest_norm: float
    aggregate_norm: float
    aggregation_seconds: float = 0.0


class MultiServerSimulator:
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
        l2: float = 0.0,
        task: str = "classification",
        num_classes: int = 0,
        seed: int = 0,
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
        if server_attack not in ("none", "large_norm", "sign_flip", "per_worker"):
            raise InvalidParameterError(
                f"server_attack must be none, large_norm, sign_flip or per_worker; got {server_attack!r}."
            )
        self.model, self.x, self.y = model, x_train, y_train
        self.n, self.byzantine, self.f = len(shards), byzantine, f
        self.honest = self.n - byzantine
        self.rule, self.server_rule = rule, server_rule
        self.attack, self.attack_params = attack, dict(attack_params or {})
        self.m, self.fs, self.server_attack = servers, byzantine_servers, server_attack
        self.exchange_every, self.lr, self.batch_size, self.l2 = exchange_every, lr, batch_size, l2
        self.loss_fn, self.num_classes = loss_for(task), num_classes
        self.batch_gen = torch.Generator().manual_seed(seed * 1_000_003 + 1)
        self.attack_gen = torch.Generator().manual_seed(seed * 1_000_003 + 2)
        gradient_attack = isinstance(attack, GradientAttack) and byzantine > 0
        self.computing = self.honest if gradient_attack else self.n
        self.sampler = BatchSampler(shards[: self.computing], self.batch_gen)
        start = flatten_params(model)
        self.models = start.expand(self.m - self.fs, -1).clone()  # honest servers' models
        self.step_count = 0

    def _corrupted(self, honest_mean: torch.Tensor, count: int) -> torch.Tensor:
        """What the f_s Byzantine servers send to one receiver: (f_s, d)."""
        d = honest_mean.shape[0]
        if self.server_attack == "none":
            return honest_mean.expand(count, -1)
        if self.server_attack == "sign_flip":
            return (-honest_mean).expand(count, -1)
        noise = torch.randn(count, d, generator=self.attack_gen, dtype=torch.float64).to(
            honest_mean
        )
        if self.server_attack == "large_norm":
            return 1e6 * noise / noise.norm(dim=1, keepdim=True)
        return honest_mean + noise  # per_worker: a different plausible model to each receiver

    def _combine(self, honest_models: torch.Tensor) -> torch.Tensor:
        """One receiver's robust combination of all m models it receives (d,)."""
        byz = self._corrupted(honest_models.mean(dim=0), self.fs)
        return self.server_rule(torch.cat([honest_models, byz]), self.fs)

    def step(self) -> ServerStepStats:
        # Workers pull and combine the models (each may receive different Byzantine models).
        worker_models = torch.stack([self._combine(self.models) for _ in range(self.computing)])
        idx = self.sampler.sample(self.batch_size)
        xb, yb = self.x[idx], self.y[idx].clone()
        if isinstance(self.attack, DataAttack) and self.byzantine:
            yb[self.honest :] = self.attack(
                yb[self.honest :], num_classes=self.num_classes, **self.attack_params
            )
        grads, losses = worker_gradients(
            self.model, self.loss_fn, xb, yb, self.l2, params=worker_models
        )
        honest = grads[: self.honest]
        if not bool(torch.isfinite(honest).all()):
            raise TrainingDivergedError(
                f"step {self.step_count + 1}: the honest gradients are not finite."
            )
        new_models = []
        aggregate = honest.mean(dim=0)
        for s in range(self.m - self.fs):  # each honest server aggregates what it receives
            if self.computing < self.n:
                byz = self.attack(
                    honest,
                    self.byzantine,
                    rule=self.rule,
                    generator=self.attack_gen,
                    **self.attack_params,
                )
                inputs = torch.cat([honest, byz])
            else:
                inputs = grads
            aggregate = self.rule(inputs, self.f)
            new_models.append(self.models[s] - self.lr * aggregate)
        self.models = torch.stack(new_models)
        self.step_count += 1
        if self.step_count % self.exchange_every == 0:
            self.models = torch.stack([self._combine(self.models) for _ in range(self.m - self.fs)])
        spread = float(torch.cdist(self.models, self.models).max()) if len(self.models) > 1 else 0.0
        return ServerStepStats(
            loss=float(losses[: self.honest].mean()),
            server_spread=spread,
            honest_norm=float(honest.mean(dim=0).norm()),
            aggregate_norm=float(aggregate.norm()),
        )

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch: int = 4096) -> dict[str, float]:
        """The first honest server's model on (x, y)."""
        vector_to_parameters(self.models[0], self.model.parameters())
        return evaluate_model(self.model, self.loss_fn, self.num_classes, x, y, batch)

    def state_dict(self) -> dict[str, Any]:
        return {
            "models": self.models,
            "generators": [self.batch_gen.get_state(), self.attack_gen.get_state()],
            "step": self.step_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.models = state["models"]
        self.batch_gen.set_state(state["generators"][0])
        self.attack_gen.set_state(state["generators"][1])
        self.step_count = state["step"]
