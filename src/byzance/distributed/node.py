"""What one rank knows and computes: data, model, its batch, its gradient, its attack.

Every rank builds the same data set, partition, model and generators from the
run's config and seed, so that nothing but vectors has to travel. Workers are
ordered in *slots* the way the simulator orders them: the honest ranks first
(ascending), then the Byzantine ones; slot i trains on shard i, and every rank
draws the simulator's full (workers, batch) index matrix each step and keeps
its own row, so a distributed run and a simulated one see the same batches.
"""

from __future__ import annotations

from typing import Any

import torch

from byzance import aggregators, attacks
from byzance.attacks import DataAttack, GradientAttack
from byzance.runs.config import ConfigError, RunConfig
from byzance.runs.injected_faults import EXTRA_COORDINATES, Fault, parse_fault
from byzance.runs.runner import (
    bind_generators,
    build_training,
    make_scheduler,
    with_optimum_distance,
)
from byzance.sim import BatchSampler, flatten_params, loss_for, set_flat_grad, worker_gradients
from byzance.sim.sync import evaluate_model


def byzantine_ranks(config: RunConfig, world: int) -> list[int]:
    """The Byzantine ranks: the config's list, or else the last ``byzantine`` ranks."""
    if config.attack == "none" and not config.byzantine_ranks:
        return []
    if config.byzantine_ranks:
        return sorted(config.byzantine_ranks)
    return list(range(world - config.byzantine, world))


class Node:
    """One rank of a distributed run (any topology).

    Attributes:
        order: ranks in slot order (honest ascending, then Byzantine ascending).
        d: the number of parameters (the length of every gradient).
    """

    def __init__(self, config: RunConfig, rank: int, world: int) -> None:
        if config.workers != world:
            raise ConfigError(
                f"the config has workers = {config.workers} but {world} processes were started: "
                "every process is one worker (set workers, or torchrun's --nproc-per-node)."
            )
        self.config, self.rank, self.world = config, rank, world
        self.byzantine = byzantine_ranks(config, world)
        self.honest = [r for r in range(world) if r not in self.byzantine]
        self.order = self.honest + self.byzantine
        self.slot = self.order.index(rank)
        self.is_byzantine = rank in self.byzantine
        self.reporter = self.honest[0]

        self.data, shards, self.model, self.optimizer = build_training(config)
        self.scheduler = make_scheduler(config, self.optimizer)
        self.loss_fn = loss_for(self.data.task)
        self.l2 = self.data.l2 if config.l2 < 0 else config.l2
        self.d = flatten_params(self.model).numel()

        # The simulator's generators, seeded the same way.
        seed = config.seed * 1_000_003
        self.batch_gen = torch.Generator().manual_seed(seed + 1)
        self.attack_gen = torch.Generator().manual_seed(seed + 2)
        self.rule_gen = torch.Generator().manual_seed(seed + 3)
        self.rule = bind_generators(config.rule(), self.rule_gen)
        self.f = config.tolerated
        self.uses_center = self.rule.carries_center
        self.center: torch.Tensor | None = None

        attack = attacks.get(config.attack) if config.attack != "none" and self.byzantine else None
        self.attack: GradientAttack | DataAttack | None = attack
        self.gradient_attack = isinstance(attack, GradientAttack)
        computing = len(self.honest) if self.gradient_attack else world
        self.computes = self.slot < computing
        self.sampler = BatchSampler(
            [shards[self.order[i]] for i in range(computing)], self.batch_gen
        )
        self.drawn = 0  # steps whose batches were drawn
        self.momentum: torch.Tensor | None = None
        spec = config.faults.get(str(rank))
        self.fault: Fault | None = parse_fault(spec) if spec else None

    # -- one worker's work ------------------------------------------------------------------
    def batch(self, step: int) -> torch.Tensor | None:
        """This rank's batch indices (B,) at ``step`` (None if it computes no gradient).

        Draws every step up to ``step`` that was not drawn (a lagging worker skips
        steps but keeps its generator where the others' is).
        """
        idx = None
        while self.drawn < step:
            idx = self.sampler.sample(self.config.batch_size)
            self.drawn += 1
        if idx is None or not self.computes:
            return None
        return idx[self.slot]

    def gradient(self, idx: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The vector this worker sends for its batch: gradient (or momentum) (d,), and loss."""
        x, y = self.data.x_train[idx], self.data.y_train[idx].clone()
        if self.is_byzantine and isinstance(self.attack, DataAttack):
            y = self.attack(y, num_classes=self.data.num_classes, **self.config.attack_params)
        grads, losses = worker_gradients(self.model, self.loss_fn, x[None], y[None], self.l2)
        grad = grads[0]
        beta = self.config.worker_momentum
        if beta:
            self.momentum = grad if self.momentum is None else beta * self.momentum + grad
            grad = self.momentum
        return grad, float(losses[0])

    def byzantine_vector(self, honest: torch.Tensor) -> torch.Tensor:
        """This Byzantine rank's vector (d,), from the omniscient attack on ``honest`` (h, d).

        Every Byzantine rank computes the attack's (f, d) output from the same
        inputs and generator state, and sends its own row.
        """
        assert isinstance(self.attack, GradientAttack)
        rows = self.attack(
            honest,
            len(self.byzantine),
            rule=self.rule,
            generator=self.attack_gen,
            **self.config.attack_params,
        )
        return rows[self.byzantine.index(self.rank)]

    def wrong_size(self, vector: torch.Tensor, step: int) -> torch.Tensor:
        """``vector`` itself, or, for a rank whose fault says so, a vector of the wrong size."""
        if self.fault is not None and self.fault.sends_wrong_size(step):
            return torch.cat([vector, vector.new_ones(EXTRA_COORDINATES)])
        return vector

    # -- the server's (or every decentralized node's) work -------------------------------------
    def aggregate(self, inputs: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        """The rule's output (d,) on the vectors that arrived (m, d).

        ``present`` (m, d) marks the coordinates that arrived (lossy transport);
        then :func:`~byzance.aggregators.aggregate_with_missing` decides how the
        rule treats the others.
        """
        params = {"center": self.center} if self.uses_center else {}
        if present is None:
            result = self.rule(inputs, self.f, **params)
        else:
            result = aggregators.aggregate_with_missing(
                self.rule, inputs, present, self.f, fill=self.config.udp_fill, **params
            )
        if self.uses_center:
            self.center = result
        return result

    def apply(self, aggregate: torch.Tensor) -> None:
        """One optimizer (and learning-rate schedule) step along ``aggregate`` (d,)."""
        self.optimizer.zero_grad(set_to_none=True)
        set_flat_grad(self.model, aggregate)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def set_params(self, flat: torch.Tensor) -> None:
        """Overwrite the model's parameters with the flat vector (d,) (a worker receiving them)."""
        torch.nn.utils.vector_to_parameters(flat, self.model.parameters())

    def evaluate(self) -> dict[str, float]:
        result = evaluate_model(
            self.model, self.loss_fn, self.data.num_classes, self.data.x_test, self.data.y_test
        )
        return with_optimum_distance(result, self.model, self.data)

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self, step: int) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "center": self.center,
            "batch_gen": self.batch_gen.get_state(),
            "attack_gen": self.attack_gen.get_state(),
            "rule_gen": self.rule_gen.get_state(),
            "step": step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> int:
        """Restore a checkpoint (the reporter's); returns its step."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.center = state["center"]
        self.batch_gen.set_state(state["batch_gen"])
        self.attack_gen.set_state(state["attack_gen"])
        self.rule_gen.set_state(state["rule_gen"])
        self.drawn = state["step"]
        return state["step"]

    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]
