"""The training core: the parts one step is made of, each owning its state.

Every mode of training (the synchronous, asynchronous and multi-server
simulators, and a rank of a real distributed run) composes these parts and
none re-implements them:

- :class:`Workers`: the workers' shards, batches and gradients (one
  vectorized call), the label attack of Byzantine workers that attack through
  their data;
- :class:`WorkerMomentum`: what a worker with momentum sends (moving average or heavy ball)
  (El Mhamdi, Guerraoui, Rouault, ICLR 2021);
- :class:`Adversary`: the vectors omniscient Byzantine workers forge from the
  honest ones;
- :class:`Aggregation`: the rule, its f, its random generator and the state
  it carries across steps (centered clipping's center);
- :class:`ServerOptimizer`: the server's model, optimizer and schedule;
- :class:`Clock`: simulated time (each worker's delays ~ Exp(rate)).

A mode is a :class:`Composition`: its ``state_dict`` is the state of each
part under the part's name, made only of tensors and plain values, so that a
checkpoint loads with ``torch.load(..., weights_only=True)``. Every random
stream comes from :func:`seeded`, the one place the seed is turned into
generators.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch
from torch import nn

from byzance import aggregators
from byzance.attacks import DataAttack, GradientAttack
from byzance.data import augment as augmentations
from byzance.errors import ByzanceError, InvalidParameterError, NonFiniteInputError
from byzance.sim.gradients import LossFn, set_flat_grad, worker_gradients
from byzance.sim.metrics import TrainingDivergedError
from byzance.sim.sampler import BatchSampler, exponential_delays

#: The random streams of a run, each its own generator seeded from the run's seed
#: (``udp_loss``: the simulated datagram losses of a distributed run, plus the rank).
STREAMS = {
    "batches": 1,
    "attack": 2,
    "rule": 3,
    "delays": 4,
    "udp_loss": 7,
    "clients": 8,
    "augment": 9,
}


def stream_seed(seed: int, stream: str) -> int:
    """The integer seed of ``stream`` (one of :data:`STREAMS`) for a run seeded with ``seed``."""
    return seed * 1_000_003 + STREAMS[stream]


def seeded(seed: int, stream: str, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of ``stream`` (one of :data:`STREAMS`) for a run seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(stream_seed(seed, stream))


class CheckpointMismatchError(ByzanceError):
    """A checkpoint's state does not have the parts of the training that loads it."""


class Component(Protocol):
    """A part of a step that owns state: the state is tensors and plain values."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class Composition:
    """A mode of training: named parts (each a :class:`Component`) and a step counter."""

    parts: dict[str, Component]
    step_count: int = 0

    def compose(self, **parts: Component | None) -> None:
        """Name this mode's parts (None: a part this configuration does without)."""
        self.parts = {name: part for name, part in parts.items() if part is not None}
        self.step_count = 0

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue with the very same numbers."""
        return {
            "step": self.step_count,
            "parts": {name: part.state_dict() for name, part in self.parts.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (of a training with the same parts)."""
        parts = state.get("parts") if isinstance(state, Mapping) else None
        if not isinstance(parts, Mapping) or set(parts) != set(self.parts):
            have = sorted(parts) if isinstance(parts, Mapping) else "none"
            raise CheckpointMismatchError(
                f"the checkpoint holds the parts {have}, this training has "
                f"{sorted(self.parts)}: it was written by another kind of run."
            )
        for name, part in self.parts.items():
            part.load_state_dict(parts[name])
        self.step_count = int(state["step"])


class Workers:
    """The workers that compute gradients on their own data: batches and gradients.

    Rows (slots) ``0 .. honest - 1`` are honest; the rows after them are
    Byzantine workers that attack through their data (their labels go through
    ``data_attack``) or, with no attack, behave.

    Args:
        model: the model whose gradients are computed (its parameters, or per-row ones).
        x: the training inputs (N, ...).
        y: the training targets (N,).
        shards: one index tensor into the training set per computing worker.
        honest: how many of the rows are honest.
        batch_size: samples per worker per step.
        l2: (l2 / 2) |theta|^2 is added to each worker's loss.
        loss_fn: the workers' loss.
        num_classes: the number of classes, for the label attack.
        data_attack: the Byzantine rows' label attack (or None).
        attack_params: its parameters.
        generator: the ``batches`` stream.
        augment: the data set's training augmentation (:mod:`byzance.data.augment`,
            e.g. ``"crop_flip"``), applied to every batch drawn; None: none.
        augment_generator: its random stream (the ``augment`` stream).
        precision: ``"fp32"``, or ``"bf16"``: the workers' forward and backward
            under ``torch.autocast`` in bfloat16 (parameters, gradients and the
            aggregation stay float32).
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        shards: list[torch.Tensor],
        *,
        honest: int,
        batch_size: int,
        l2: float,
        loss_fn: LossFn,
        num_classes: int,
        data_attack: DataAttack | None,
        attack_params: Mapping[str, Any],
        generator: torch.Generator,
        augment: str | None = None,
        augment_generator: torch.Generator | None = None,
        precision: str = "fp32",
    ) -> None:
        if precision not in PRECISIONS:
            raise InvalidParameterError(
                f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}."
            )
        self.precision = precision
        self.model, self.x, self.y = model, x, y
        self.augment = None if augment is None else augmentations.get(augment)
        self.augment_generator = augment_generator if augment is not None else None
        self.honest, self.batch_size, self.l2 = honest, batch_size, l2
        self.loss_fn, self.num_classes = loss_fn, num_classes
        self.data_attack, self.attack_params = data_attack, dict(attack_params)
        self.generator = generator
        self.sampler = BatchSampler(shards, generator)
        self.count = len(shards)

    def draw(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Batch indices of every computing worker, or of ``rows`` (k,): shape (k, batch_size)."""
        return self.sampler.sample(self.batch_size, rows)

    def gradients(
        self,
        idx: torch.Tensor,
        rows: torch.Tensor | None = None,
        params: torch.Tensor | dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients (k, d) and losses (k,) of the workers ``rows`` (k,) on batches ``idx`` (k, B).

        ``rows`` defaults to ``0 .. k - 1``; ``params`` (k, d) gives each its own parameters
        (per parameter, ``{name: (k, *shape)}``: the gradients then come the same way).
        """
        if rows is None:
            rows = torch.arange(len(idx))
        idx = idx.to(self.x.device)  # drawn on the CPU: the same batches on every device
        xb, yb = self.x[idx], self.y[idx].clone()
        if self.augment is not None:
            xb = self.augment(xb, self.augment_generator)
        poisoned = (rows >= self.honest).to(yb.device)
        if self.data_attack is not None and bool(poisoned.any()):
            yb[poisoned] = self.data_attack(
                yb[poisoned], num_classes=self.num_classes, **self.attack_params
            )
        with torch.autocast(xb.device.type, torch.bfloat16, enabled=self.precision == "bf16"):
            return worker_gradients(self.model, self.loss_fn, xb, yb, self.l2, params=params)

    def state_dict(self) -> dict[str, Any]:
        state = {"generator": self.generator.get_state()}
        if self.augment_generator is not None:
            state["augment"] = self.augment_generator.get_state()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        if self.augment_generator is not None:
            if "augment" not in state:
                raise CheckpointMismatchError(
                    "the checkpoint's workers did not augment their batches; this training does."
                )
            self.augment_generator.set_state(state["augment"])


MOMENTUM_FORMS = ("ema", "heavy_ball")
PRECISIONS = ("fp32", "bf16")


class WorkerMomentum:
    """What workers with momentum send, per worker (beta = 0: the gradient itself).

    ``form="ema"`` (default): the exponential moving average
    m <- beta m + (1 - beta) g, torch's SGD with ``dampening = beta``, the form
    of Karimireddy, He, Jaggi (ICML 2021) and Allouah et al. (AISTATS 2023);
    its scale is the gradient's, whatever beta. ``form="heavy_ball"``:
    m <- beta m + g, torch's default (``dampening = 0``), as in El Mhamdi,
    Guerraoui, Rouault (ICLR 2021); about 1 / (1 - beta) times the gradient's
    scale, so the same learning rate takes larger steps. Both start at m = g
    (torch's first step), not at m = 0, which would shrink the first steps of
    the moving average by (1 - beta).
    """

    def __init__(self, beta: float, form: str = "ema") -> None:
        if form not in MOMENTUM_FORMS:
            raise InvalidParameterError(
                f"worker momentum form must be one of {', '.join(MOMENTUM_FORMS)}; got {form!r}."
            )
        self.beta, self.form = beta, form
        self.momentum: torch.Tensor | None = None

    def __call__(self, grads: torch.Tensor) -> torch.Tensor:
        """The vectors sent for the gradients ``grads`` (k, d), shape (k, d)."""
        if not self.beta:
            return grads
        if self.momentum is not None and self.momentum.device != grads.device:
            self.momentum = self.momentum.to(grads.device)  # restored from a CPU checkpoint
        if self.momentum is None:
            self.momentum = grads
        elif self.form == "ema":
            self.momentum = torch.lerp(grads, self.momentum, self.beta)
        else:
            self.momentum = self.beta * self.momentum + grads
        return self.momentum

    def state_dict(self) -> dict[str, Any]:
        return {"momentum": self.momentum}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.momentum = state["momentum"]


class Adversary:
    """``count`` omniscient Byzantine workers: the vectors their attack forges each step."""

    def __init__(
        self,
        attack: GradientAttack,
        count: int,
        attack_params: Mapping[str, Any],
        generator: torch.Generator,
    ) -> None:
        self.attack, self.count, self.params = attack, count, dict(attack_params)
        self.generator = generator

    def forge(
        self,
        honest: torch.Tensor,
        rule: aggregators.Rule | None = None,
        count: int | None = None,
    ) -> torch.Tensor:
        """The Byzantine vectors (count, d) for the honest ones ``honest`` (h, d).

        ``count`` overrides how many are forged (a federated round samples a varying number).
        """
        count = self.count if count is None else count
        return self.attack(honest, count, rule=rule, generator=self.generator, **self.params)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class Aggregation:
    """The rule with its f, its random stream and the state it carries across steps.

    ``replicas`` keeps one carried state per aggregating server (several
    servers each aggregate with their own center). ``seconds`` is the time of
    the last call.
    """

    def __init__(
        self, rule: aggregators.Rule, f: int, generator: torch.Generator, *, replicas: int = 1
    ) -> None:
        self.rule, self.f, self.generator = rule.with_generator(generator), f, generator
        self.centers: list[torch.Tensor | None] = [None] * replicas
        self.seconds = 0.0

    def __call__(
        self,
        inputs: torch.Tensor,
        present: torch.Tensor | None = None,
        *,
        fill: str = "auto",
        replica: int = 0,
    ) -> torch.Tensor:
        """The rule's output (d,) on ``inputs`` (m, d); ``present`` (m, d) marks arrived values.

        Raises:
            TrainingDivergedError: the aggregate is not finite, or more inputs than
                f hold NaN/inf: the run is recorded as diverged, not crashed.
        """

        def compute(rule: aggregators.Rule, f: int, params: dict[str, Any]) -> torch.Tensor:
            if present is None:
                return rule(inputs, f, **params)
            return aggregators.aggregate_with_missing(rule, inputs, present, f, fill=fill, **params)

        return self.run(compute, replica=replica)

    def run(
        self,
        compute: Callable[[aggregators.Rule, int, dict[str, Any]], torch.Tensor],
        *,
        replica: int = 0,
    ) -> torch.Tensor:
        """``compute(rule, f, params)`` (d,) with this part's state: the carried center in
        ``params``, the time taken, a non-finite result or input turned into
        TrainingDivergedError (the distributed layer computes a sharded aggregate here)."""
        params = {"center": self.centers[replica]} if self.rule.carries_center else {}
        start = time.perf_counter()
        try:
            result = compute(self.rule, self.f, params)
        except NonFiniteInputError as err:
            raise TrainingDivergedError(f"the aggregation failed: {err}") from None
        self.seconds = time.perf_counter() - start
        if not bool(torch.isfinite(result).all()):
            raise TrainingDivergedError(
                f"the aggregate of {self.rule.name} is not finite (a rule that is not robust "
                "passes a NaN or inf input on, and a huge one can overflow it)."
            )
        if self.rule.carries_center:
            self.centers[replica] = result
        return result

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "centers": list(self.centers)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        if len(state["centers"]) != len(self.centers):
            raise CheckpointMismatchError(
                f"the checkpoint carries {len(state['centers'])} aggregation states, "
                f"this training {len(self.centers)}."
            )
        self.centers = list(state["centers"])


class ServerOptimizer:
    """The server's model, optimizer and learning-rate schedule (stepped once per step)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ) -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler

    def apply(self, aggregate: torch.Tensor) -> None:
        """One optimizer (and schedule) step along the flat ``aggregate`` (d,)."""
        self.optimizer.zero_grad(set_to_none=True)
        set_flat_grad(self.model, aggregate)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])


class Clock:
    """Simulated time: worker i's computations take Exp(rates[i]) (mean 1 / rate)."""

    def __init__(self, rates: torch.Tensor, generator: torch.Generator) -> None:
        self.rates, self.generator, self.now = rates, generator, 0.0

    def delay(self, worker: int) -> float:
        """One draw of ``worker``'s delay."""
        return float(exponential_delays(self.rates[worker : worker + 1], self.generator)[0])

    def wait_for_all(self) -> float:
        """Advance by the slowest of one draw per worker (a synchronous step); the new time."""
        self.now += float(exponential_delays(self.rates, self.generator).max())
        return self.now

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "now": self.now}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.now = float(state["now"])


def split_attack(
    attack: GradientAttack | DataAttack | None,
) -> tuple[GradientAttack | None, DataAttack | None]:
    """The attack as (what forges vectors, what poisons labels): at most one is set."""
    gradient = attack if isinstance(attack, GradientAttack) else None
    data = attack if isinstance(attack, DataAttack) else None
    return gradient, data


def workers_and_adversary(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    shards: list[torch.Tensor],
    *,
    byzantine: int,
    attack: GradientAttack | DataAttack | None,
    attack_params: Mapping[str, Any] | None,
    batch_size: int,
    l2: float,
    loss_fn: LossFn,
    num_classes: int,
    seed: int,
    forgers_compute: bool = False,
    forged_rows: int | None = None,
    attack_generator: torch.Generator | None = None,
    augment: str | None = None,
    precision: str = "fp32",
) -> tuple[Workers, Adversary | None]:
    """The workers that compute gradients, and the adversary when the attack forges vectors.

    The last ``byzantine`` of the ``shards`` (one per worker, in slot order)
    are Byzantine. With a label attack they compute on poisoned labels; with a
    vector attack they compute nothing (unless ``forgers_compute``: the
    asynchronous server draws every worker's batch) and the adversary forges
    ``forged_rows`` vectors (default ``byzantine``) per call.
    """
    forger, poisoner = split_attack(attack if byzantine else None)
    honest = len(shards) - byzantine
    computing = honest if forger is not None and not forgers_compute else len(shards)
    params = attack_params or {}
    workers = Workers(
        model,
        x,
        y,
        shards[:computing],
        honest=honest,
        batch_size=batch_size,
        l2=l2,
        loss_fn=loss_fn,
        num_classes=num_classes,
        data_attack=poisoner,
        attack_params=params,
        generator=seeded(seed, "batches"),
        augment=augment,
        augment_generator=seeded(seed, "augment", x.device) if augment else None,
        precision=precision,
    )
    adversary = None
    if forger is not None:
        count = byzantine if forged_rows is None else forged_rows
        adversary = Adversary(forger, count, params, attack_generator or seeded(seed, "attack"))
    return workers, adversary
