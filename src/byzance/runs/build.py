"""Building a training from a config: data, shards, model, optimizer, schedule, simulator.

What every run builds from its config and seed, identically in every process
(the simulator, each rank of a distributed run).
"""

from __future__ import annotations

from typing import Any

import torch

from byzance import aggregators, attacks, models
from byzance.runs.config import RunConfig
from byzance.sim import Composition, SyncSimulator, flatten_params
from byzance.sim.asynchronous import AsyncSimulator
from byzance.sim.federated import FederatedSimulator
from byzance.sim.servers import MultiServerSimulator


def make_scheduler(
    config: RunConfig, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The configured learning-rate schedule over ``optimizer`` (None: constant)."""
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
    if config.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step_size, config.lr_gamma)
    return None


def build_training(
    config: RunConfig,
) -> tuple[Any, list[torch.Tensor], torch.nn.Module, torch.optim.SGD]:
    """The data set, one shard of training indices per worker, the model, the server's SGD.

    The model is initialized from the seed (on the CPU, so every process and
    every device starts from the same one), then the model and the data sets'
    tensors move to the config's device; the shards (indices) stay on the CPU.
    """
    import dataclasses

    from byzance.data import load as load_dataset
    from byzance.data import partition
    from byzance.devices import resolve_device

    data = load_dataset(
        config.dataset,
        seed=config.seed,
        test_fraction=config.test_fraction,
        **config.dataset_params,
    )
    shards = partition(
        data.y_train,
        config.workers,
        config.partition if data.task == "classification" else "iid",
        alpha=config.alpha,
        classes_per_worker=config.classes_per_worker,
        shards_per_worker=config.shards_per_worker,
        seed=config.seed,
    )
    torch.manual_seed(config.seed)
    model = models.build(config.model, data.input_shape, data.num_classes, **config.model_params)
    device = resolve_device(config.device)
    if device.type != "cpu":
        model = model.to(device)
        data = dataclasses.replace(
            data,
            **{
                name: getattr(data, name).to(device)
                for name in ("x_train", "y_train", "x_test", "y_test")
            },
        )
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    return data, shards, model, optimizer


def build_simulator(
    config: RunConfig,
    data: Any,
    shards: list[torch.Tensor],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> Composition:
    """The simulator of the config's mode: synchronous, asynchronous, several servers, federated."""
    attack = None if config.attack == "none" else attacks.get(config.attack)
    common: dict[str, Any] = dict(
        f=config.tolerated,
        byzantine=config.byzantine if attack is not None else 0,
        attack=attack,
        attack_params=config.attack_params,
        batch_size=config.batch_size,
        l2=data.l2 if config.l2 < 0 else config.l2,
        task=data.task,
        num_classes=data.num_classes,
        seed=config.seed,
        augment=data.augment,
        precision=config.precision,
    )
    training = (model, data.x_train, data.y_train, shards)
    # Honest workers' delay rates: the last slow_workers ones are slow.
    honest = config.workers - common["byzantine"]
    slow = min(config.slow_workers, honest)
    rates = [1.0] * (honest - slow) + [config.slow_rate] * slow
    if config.mode == "async":
        return AsyncSimulator(
            *training,
            **common,
            optimizer=optimizer,
            rates=rates,
            byzantine_rate=config.byzantine_rate,
            kardam=config.kardam,
            window=config.kardam_window,
            max_rejections=config.kardam_max_rejections,
            frequency_filter=config.kardam_frequency_filter,
            staleness=config.staleness,
            staleness_beta=config.staleness_beta,
        )
    if config.algorithm == "fedavg":
        return FederatedSimulator(
            *training,
            **common,
            rule=config.rule(),
            optimizer=optimizer,
            scheduler=make_scheduler(config, optimizer),
            clients_per_round=config.round_size,
            byzantine_sampling=config.byzantine_sampling,
            local_steps=config.local_steps,
            local_lr=config.local_lr,
            local_momentum=config.local_momentum,
        )
    if config.servers > 1:
        return MultiServerSimulator(
            *training,
            **common,
            rule=config.rule(),
            servers=config.servers,
            byzantine_servers=config.byzantine_servers,
            server_rule=aggregators.get(config.server_rule),
            server_attack=config.server_attack,
            exchange_every=config.exchange_every,
            lr=config.lr,
            worker_momentum=config.worker_momentum,
            worker_momentum_form=config.worker_momentum_form,
        )
    return SyncSimulator(
        *training,
        **common,
        rates=rates if slow else None,
        rule=config.rule(),
        optimizer=optimizer,
        scheduler=make_scheduler(config, optimizer),
        worker_momentum=config.worker_momentum,
        worker_momentum_form=config.worker_momentum_form,
    )


def with_optimum_distance(
    result: dict[str, float], model: torch.nn.Module, data: Any
) -> dict[str, float]:
    """``result`` plus, for a task with a known optimum, the model's distance to it."""
    if data.optimum is not None:
        theta = flatten_params(model).double()
        result["optimum_distance"] = float((theta - data.optimum).norm())
    return result
