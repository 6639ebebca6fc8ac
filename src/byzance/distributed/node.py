"""What one rank knows and computes: data, model, its batch, its gradient, its attack.

Every rank builds the same data set, partition, model and generators from the
run's config and seed, so that nothing but vectors has to travel. Workers are
ordered in *slots* the way the simulator orders them: the honest ranks first
(ascending), then the Byzantine ones; slot i trains on shard i, and every rank
draws the simulator's full (workers, batch) index matrix each step and keeps
its own row, so a distributed run and a simulated one see the same batches.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from byzance import attacks
from byzance.aggregators import Rule
from byzance.runs.build import build_training, make_scheduler, with_optimum_distance
from byzance.runs.config import ConfigError, RunConfig
from byzance.runs.injected_faults import EXTRA_COORDINATES, Fault, parse_fault
from byzance.runs.rundir import load_checkpoint_part, save_atomically
from byzance.sim import (
    Aggregation,
    Composition,
    ServerOptimizer,
    WorkerMomentum,
    evaluate_model,
    flatten_params,
    loss_for,
    seeded,
)
from byzance.sim.core import workers_and_adversary

#: What a forging rank keeps of its own: the attack's and the rule's random streams.
FORGER_PARTS = ("adversary", "aggregation")


def byzantine_ranks(config: RunConfig, world: int) -> list[int]:
    """The Byzantine ranks: the config's list, or else the last ``byzantine`` ranks."""
    if config.attack == "none" and not config.byzantine_ranks:
        return []
    if config.byzantine_ranks:
        return sorted(config.byzantine_ranks)
    return list(range(world - config.byzantine, world))


def model_device(model: torch.nn.Module) -> torch.device:
    """Where ``model``'s parameters live (the CPU for a model without parameters)."""
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def to_host(vector: torch.Tensor) -> torch.Tensor:
    """``vector`` as a float32 host tensor, for a frame on gloo or a datagram (one copy from a
    GPU; the tensor itself when it is already float32 on the CPU)."""
    return vector.detach().to(device="cpu", dtype=torch.float32)


class Node(Composition):
    """One rank of a distributed run (any topology), made of the simulator's parts.

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

        # build_training puts the model and the data on the config's device (under
        # torchrun, CUDA is the LOCAL_RANK GPU); the vectors that arrive from other
        # ranks come through host memory and are moved here (see :meth:`to_device`).
        self.data, shards, self.model, self.optimizer = build_training(config)
        self.device = model_device(self.model)
        self.loss_fn = loss_for(self.data.task)
        self.d = flatten_params(self.model).numel()
        self.f = config.tolerated

        attack = attacks.get(config.attack) if config.attack != "none" and self.byzantine else None
        # The simulator's parts, seeded the same way: a distributed run and a simulated
        # one see the same batches, forge the same vectors and aggregate the same way.
        self.workers, self.adversary = workers_and_adversary(
            self.model,
            self.data.x_train,
            self.data.y_train,
            [shards[r] for r in self.order],
            byzantine=len(self.byzantine),
            attack=attack,
            attack_params=config.attack_params,
            batch_size=config.batch_size,
            l2=self.data.l2 if config.l2 < 0 else config.l2,
            loss_fn=self.loss_fn,
            num_classes=self.data.num_classes,
            seed=config.seed,
            augment=self.data.augment,
            precision=config.precision,
        )
        self.gradient_attack = self.adversary is not None
        self.computes = self.slot < self.workers.count
        self.momentum = WorkerMomentum(config.worker_momentum, config.worker_momentum_form)
        self.aggregation = Aggregation(config.rule(), self.f, seeded(config.seed, "rule"))
        self.server = ServerOptimizer(
            self.model, self.optimizer, make_scheduler(config, self.optimizer)
        )
        self.compose(  # the reporter's checkpoint: every rank restores from it
            workers=self.workers,
            aggregation=self.aggregation,
            server=self.server,
            adversary=self.adversary,
        )
        # The vectors (workers' momenta) that reached this rank at its last aggregation.
        self.received: dict[int, torch.Tensor] = {}
        spec = config.faults.get(str(rank))
        self.fault: Fault | None = parse_fault(spec) if spec else None

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """A received tensor (host memory) on this rank's device (itself on the CPU)."""
        return tensor.to(self.device, non_blocking=False)

    @property
    def rule(self) -> Rule:
        return self.aggregation.rule

    # -- one worker's work ------------------------------------------------------------------
    def batch(self, step: int) -> torch.Tensor | None:
        """This rank's batch indices (B,) at ``step`` (None if it computes no gradient).

        Draws every step up to ``step`` that was not drawn (a lagging worker skips
        steps but keeps its generator where the others' is).
        """
        idx = None
        while self.step_count < step:
            idx = self.workers.draw()
            self.step_count += 1
        if idx is None or not self.computes:
            return None
        return idx[self.slot]

    def gradient(self, idx: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The vector this worker sends for its batch: gradient (or momentum) (d,), and loss."""
        grads, losses = self.workers.gradients(idx[None], torch.tensor([self.slot]))
        return self.momentum(grads)[0], float(losses[0])

    def forged(self, step: int) -> None:
        """After a forger's ``step``: at the run's checkpoint steps, save its own streams.

        The reporter's checkpoint holds the reporter's state, and the reporter
        never forges: each forging rank keeps its attack (and rule) streams in
        ``forger-rank{r}-step{s}.pt`` beside it, so a resumed attack draws what an
        uninterrupted one would. Every checkpoint step's file is kept (a few KB):
        the reporter's checkpoint may be older than the forger's latest.
        """
        cfg = self.config
        if step % cfg.checkpoint_every and step != cfg.steps:
            return
        out = Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = {"step": step, "parts": {k: self.parts[k].state_dict() for k in FORGER_PARTS}}
        save_atomically(state, out / f"forger-rank{self.rank}-step{step}.pt")

    def restore_forger(self, out: Path) -> None:
        """A forging rank takes back its own streams at the checkpoint's step (if saved)."""
        path = out / f"forger-rank{self.rank}-step{self.step_count}.pt"
        if not path.exists():
            print(
                f"[byzance dist] rank {self.rank}: no {path.name}: this forger's attack "
                "restarts from the reporter's streams.",
                file=sys.stderr,
            )
            return
        state = load_checkpoint_part(path)
        for name in FORGER_PARTS:
            self.parts[name].load_state_dict(state["parts"][name])

    def byzantine_vector(self, honest: torch.Tensor) -> torch.Tensor:
        """This Byzantine rank's vector (d,), from the omniscient attack on ``honest`` (h, d).

        Every Byzantine rank computes the attack's (f, d) output from the same
        inputs and generator state, and sends its own row.
        """
        assert self.adversary is not None
        return self.adversary.forge(honest, self.rule)[self.byzantine.index(self.rank)]

    def wrong_size(self, vector: torch.Tensor, step: int) -> torch.Tensor:
        """``vector`` itself, or, for a rank whose fault says so, a vector of the wrong size."""
        if self.fault is not None and self.fault.sends_wrong_size(step):
            return torch.cat([vector, vector.new_ones(EXTRA_COORDINATES)])
        return vector

    # -- the server's (or every decentralized node's) work -------------------------------------
    def aggregate(
        self,
        inputs: torch.Tensor,
        present: torch.Tensor | None = None,
        ranks: list[int] | None = None,
    ) -> torch.Tensor:
        """The rule's output (d,) on the vectors that arrived (m, d), from ``ranks``.

        ``present`` (m, d) marks the coordinates that arrived (lossy transport);
        then :func:`~byzance.aggregators.aggregate_with_missing` decides how the
        rule treats the others. With worker momentum the whole vectors received
        are each worker's momentum: they are kept for the checkpoint.
        """
        if self.momentum.beta and ranks is not None:
            whole = [True] * len(ranks) if present is None else present.all(dim=1).tolist()
            self.received = {r: inputs[i] for i, r in enumerate(ranks) if whole[i]}
        return self.aggregation(inputs, present, fill=self.config.udp_fill)

    def apply(self, aggregate: torch.Tensor) -> None:
        """One optimizer (and learning-rate schedule) step along ``aggregate`` (d,)."""
        self.server.apply(aggregate)

    def set_params(self, flat: torch.Tensor) -> None:
        """Overwrite the model's parameters with the flat vector (d,) (a worker receiving them)."""
        torch.nn.utils.vector_to_parameters(self.to_device(flat), self.model.parameters())

    def evaluate(self) -> dict[str, float]:
        result = evaluate_model(
            self.model, self.loss_fn, self.data.num_classes, self.data.x_test, self.data.y_test
        )
        return with_optimum_distance(result, self.model, self.data)

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The reporter's state, plus every worker's momentum it received (by rank)."""
        state = super().state_dict()
        state["momenta"] = {str(r): v for r, v in self.received.items()}
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the reporter's checkpoint on any rank; this rank takes back its momentum.

        A rank whose momentum did not reach the reporter at the checkpoint's step
        (it was late, crashed or lost datagrams) restarts its momentum from zero.
        """
        super().load_state_dict(state)
        mine = state.get("momenta", {}).get(str(self.rank))
        self.momentum.momentum = None if mine is None else self.to_device(mine)[None].clone()

    def lr(self) -> float:
        return self.server.lr
