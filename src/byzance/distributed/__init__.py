"""Real distributed training on torch.distributed: parameter server and decentralized.

- ``python -m byzance.distributed --config run.toml`` under torchrun, or ``byzance
  launch --nproc 5 --config run.toml`` on one machine: the simulator's config,
  with real processes (see :mod:`byzance.distributed.run`).
- :func:`robust_step`: a drop-in for an existing training loop.
"""

from byzance.distributed.step import robust_step

__all__ = ["robust_step"]
