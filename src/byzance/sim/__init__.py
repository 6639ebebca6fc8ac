"""The simulator: n workers, f of them Byzantine, in one process, vectorized over workers.

:mod:`byzance.sim.core` holds the parts a step is made of; the synchronous,
asynchronous and multi-server modes compose them.
"""

from byzance.sim.core import (
    Adversary,
    Aggregation,
    CheckpointMismatchError,
    Clock,
    Component,
    Composition,
    ServerOptimizer,
    WorkerMomentum,
    Workers,
    seeded,
)
from byzance.sim.gradients import flatten_params, loop_gradients, set_flat_grad, worker_gradients
from byzance.sim.metrics import (
    StepStats,
    TrainingDivergedError,
    evaluate_model,
    loss_for,
    step_stats,
)
from byzance.sim.sampler import BatchSampler
from byzance.sim.sync import SyncSimulator

__all__ = [
    "Adversary",
    "Aggregation",
    "BatchSampler",
    "CheckpointMismatchError",
    "Clock",
    "Component",
    "Composition",
    "ServerOptimizer",
    "StepStats",
    "SyncSimulator",
    "TrainingDivergedError",
    "WorkerMomentum",
    "Workers",
    "evaluate_model",
    "flatten_params",
    "loop_gradients",
    "loss_for",
    "seeded",
    "set_flat_grad",
    "step_stats",
    "worker_gradients",
]
