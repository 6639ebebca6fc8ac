"""Real distributed training on torch.distributed: parameter server and decentralized.

- ``python -m byzance.distributed --config run.toml`` under torchrun, or ``byzance
  launch --nproc 5 --config run.toml`` on one machine: the simulator's config,
  with real processes (see :mod:`byzance.distributed.run`).
- :func:`robust_step`: a drop-in for an existing training loop;
  :func:`init_distributed` joins torchrun's group with the backend of the
  rank's device (gloo on the CPU, NCCL for CUDA tensors) and returns the device.

``robust_step`` is loaded on first use, so that each rank's supervisor process
(``python -m byzance.distributed`` under torchrun) starts without importing torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["backend_for", "init_distributed", "robust_step"]


def __getattr__(name: str) -> Any:
    if name == "robust_step":
        from byzance.distributed.step import robust_step

        return robust_step
    if name in ("backend_for", "init_distributed"):
        from byzance.distributed import backend

        return getattr(backend, name)
    raise AttributeError(f"module 'byzance.distributed' has no attribute {name!r}")
