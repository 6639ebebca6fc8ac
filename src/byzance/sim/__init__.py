"""The simulator: n workers, f of them Byzantine, in one process, vectorized over workers."""

from byzance.sim.gradients import flatten_params, loop_gradients, set_flat_grad, worker_gradients
from byzance.sim.sampler import BatchSampler
from byzance.sim.sync import StepStats, SyncSimulator, TrainingDivergedError, loss_for

__all__ = [
    "BatchSampler",
    "StepStats",
    "SyncSimulator",
    "TrainingDivergedError",
    "flatten_params",
    "loop_gradients",
    "loss_for",
    "set_flat_grad",
    "worker_gradients",
]
