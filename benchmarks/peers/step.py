"""One simulated training step: byzance's vectorized simulator vs ByzFL's client/server loop.

Both train the same model from the same initial weights, with n workers of
which f are Byzantine (sign flipping: they send minus the honest mean), a
batch of B samples per honest worker per step, momentum 0.9 at the workers,
SGD at the server and the same robust rule. A step is everything from
sampling the batches to the updated model being back at the workers:

- ByzFL, as its documentation's training loop: for every honest
  :class:`Client`, ``compute_gradients()`` (its DataLoader's next batch, a
  forward and a backward pass), ``get_flat_gradients_with_momentum()``;
  ``ByzantineClient.apply_attack``; ``Server.update_model_with_gradients``
  (pre-aggregators, aggregator, optimizer step); then every client loads the
  server's new state dict.
- byzance: :meth:`byzance.sim.SyncSimulator.step`: the honest workers'
  gradients in one ``vmap`` call, the attack, the rule, the optimizer step,
  plus the per-step statistics it always records.

The data are synthetic MNIST-shaped tensors (nothing is downloaded). The
losses differ only in form: ByzFL's models end in ``log_softmax`` and its
clients use ``NLLLoss``; byzance uses cross-entropy on the same outputs, which
``log_softmax`` leaves unchanged. ByzFL's momentum is an exponential average
(m <- 0.9 m + 0.1 g), byzance's m <- 0.9 m + g; the cost is the same.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import byzance.aggregators as agg
import byzance.attacks as attacks
from byzance.sim import SyncSimulator

from .timing import Timed, Timing, measure_interleaved

INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
# ByzFL's MNIST models, used on both sides: a CNN (431,080 parameters), where the
# arithmetic of the gradients dominates a step, and a one-hidden-layer network
# (fc_mnist), where the per-client bookkeeping does.
BYZFL_MODELS = ("cnn_mnist", "fc_mnist")

# The rules of the step, in ByzFL's terms: (aggregator_info, pre_agg_list) for f.
BYZFL_RULES: dict[str, Callable[[int], tuple[dict, list[dict]]]] = {
    "trimmed_mean": lambda f: ({"name": "TrMean", "parameters": {"f": f}}, []),
    "nnm>trimmed_mean": lambda f: (
        {"name": "TrMean", "parameters": {"f": f}},
        [{"name": "NNM", "parameters": {"f": f}}],
    ),
}


@dataclass(frozen=True)
class StepConfig:
    """One simulated-step configuration."""

    n: int
    f: int
    rule: str = "trimmed_mean"
    model: str = "cnn_mnist"  # a ByzFL model name
    batch: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    batches_per_worker: int = 8  # shard size, in batches
    seed: int = 0


@dataclass(frozen=True)
class StepRow:
    """Time of one step on each side."""

    config: StepConfig
    params: int
    ours: Timing | None
    theirs: Timing | None
    floor: Timing | None = None  # one forward/backward of all honest samples as one batch
    ours_note: str = ""
    theirs_note: str = ""

    @property
    def speedup(self) -> float | None:
        """ByzFL's step time over byzance's."""
        if self.ours is None or self.theirs is None:
            return None
        return self.theirs.median_ms / self.ours.median_ms


@dataclass(frozen=True)
class Data:
    """Synthetic training set and one shard (index tensor) per worker."""

    x: torch.Tensor  # (N, 1, 28, 28)
    y: torch.Tensor  # (N,)
    shards: list[torch.Tensor]


def synthetic_data(config: StepConfig) -> Data:
    """n shards of ``batches_per_worker * batch`` random images with random labels."""
    g = torch.Generator().manual_seed(config.seed)
    per_worker = config.batches_per_worker * config.batch
    total = config.n * per_worker
    x = torch.randn(total, *INPUT_SHAPE, generator=g)
    y = torch.randint(0, NUM_CLASSES, (total,), generator=g)
    shards = [torch.arange(i * per_worker, (i + 1) * per_worker) for i in range(config.n)]
    return Data(x, y, shards)


def byzance_step(model: nn.Module, data: Data, config: StepConfig) -> Callable[[], Any]:
    """One call = one step of byzance's synchronous simulator on ``model``."""
    sim = SyncSimulator(
        model,
        data.x,
        data.y,
        data.shards,
        rule=agg.get(config.rule),
        f=config.f,
        byzantine=config.f,
        attack=attacks.get("sign_flip"),
        optimizer=torch.optim.SGD(model.parameters(), lr=config.lr),
        batch_size=config.batch,
        worker_momentum=config.momentum,
        num_classes=NUM_CLASSES,
        seed=config.seed,
    )
    return sim.step


def byzfl_step(
    byzfl: Any, state: dict[str, torch.Tensor], data: Data, config: StepConfig
) -> Callable[[], None]:
    """One call = one step of ByzFL's client/server loop, from the weights ``state``."""
    fed = byzfl.fed_framework
    honest = config.n - config.f
    torch.manual_seed(config.seed)  # the DataLoaders shuffle with the global generator
    clients = []
    for shard in data.shards[:honest]:
        loader = DataLoader(
            TensorDataset(data.x[shard], data.y[shard]), batch_size=config.batch, shuffle=True
        )
        client = fed.Client(
            {
                "model_name": config.model,
                "device": "cpu",
                "loss_name": "NLLLoss",
                "LabelFlipping": False,
                "nb_labels": NUM_CLASSES,
                "momentum": config.momentum,
                "training_dataloader": loader,
                "store_per_client_metrics": False,
            }
        )
        client.set_model_state(state)
        clients.append(client)
    aggregator_info, pre_agg_list = BYZFL_RULES[config.rule](config.f)
    server = fed.Server(
        {
            "device": "cpu",
            "model_name": config.model,
            "optimizer_name": "SGD",
            "learning_rate": config.lr,
            "weight_decay": 0.0,
            "milestones": [],
            "learning_rate_decay": 1.0,
            "aggregator_info": aggregator_info,
            "pre_agg_list": pre_agg_list,
            "test_loader": DataLoader(TensorDataset(data.x[:1], data.y[:1])),
        }
    )
    server.set_model_state(state)
    byzantine = fed.ByzantineClient({"f": config.f, "name": "SignFlipping", "parameters": {}})

    def step() -> None:
        for client in clients:
            client.compute_gradients()
        gradients = [client.get_flat_gradients_with_momentum() for client in clients]
        gradients = gradients + byzantine.apply_attack(gradients)
        server.update_model_with_gradients(gradients)
        new_state = server.get_dict_parameters()
        for client in clients:
            client.set_model_state(new_state)

    return step


def floor_step(model: nn.Module, data: Data, config: StepConfig) -> Callable[[], None]:
    """The floor of a step: one forward and backward pass of all honest samples as one batch.

    The same samples and arithmetic as the honest workers' gradients, minus the
    per-worker bookkeeping; on a copy of the model, so the steps are untouched.
    """
    floor_model = copy.deepcopy(model)
    samples = (config.n - config.f) * config.batch
    x, y = data.x[:samples], data.y[:samples]

    def step() -> None:
        floor_model.zero_grad(set_to_none=True)
        F.cross_entropy(floor_model(x), y).backward()

    return step


def _timed(step: Callable[[], Any]) -> Timed:
    """A step as a :class:`Timed` call (it takes no input)."""
    return Timed(lambda _: step(), lambda: None)


def run_steps(
    byzfl: Any,
    configs: Iterable[StepConfig],
    *,
    model_factory: Callable[[], nn.Module] | None = None,
    repeat: int = 10,
    budget_s: float = 5.0,
    progress: Callable[[str], None] = lambda line: None,
) -> list[StepRow]:
    """Time a step of each library for each configuration; ``byzfl`` None times byzance alone.

    ``model_factory`` builds the model (default: ByzFL's model named by each
    configuration, which needs ``byzfl``); both sides start from the same weights.
    """
    if model_factory is None and byzfl is None:
        raise ValueError("model_factory is required when ByzFL is not loaded")
    rows = []
    for config in configs:
        if config.rule not in BYZFL_RULES:
            raise ValueError(
                f"no ByzFL equivalent for rule {config.rule!r}; use {list(BYZFL_RULES)}"
            )
        torch.manual_seed(config.seed)
        model = (model_factory or getattr(byzfl.fed_framework.models, config.model))()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        params = sum(p.numel() for p in model.parameters())
        data = synthetic_data(config)
        calls = [_timed(byzance_step(model, data, config)), _timed(floor_step(model, data, config))]
        note = ""
        if byzfl is not None:
            try:
                their_step = byzfl_step(byzfl, state, data, config)
                calls.append(_timed(their_step))
            except Exception as error:
                note = f"fails: {type(error).__name__}: {error}"
        # The first (untimed) call of each compiles kernels / warms caches; then rounds.
        timings = [t for t, _ in measure_interleaved(calls, repeat=repeat, budget_s=budget_s)]
        ours, floor, theirs = timings[0], timings[1], (timings[2] if len(timings) > 2 else None)
        row = StepRow(config, params, ours, theirs, floor, theirs_note=note)
        rows.append(row)
        ratio = "" if row.speedup is None else f"x{row.speedup:.1f}"
        their_ms = "-" if theirs is None else f"{theirs.median_ms:.1f} ms"
        progress(
            f"step {config.model} n={config.n} f={config.f} {config.rule}: byzfl {their_ms} "
            f"byzance {ours.median_ms:.1f} ms {ratio} {note}"
        )
    return rows
