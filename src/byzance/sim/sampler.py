"""Each worker's mini-batch drawn from its own shard, vectorized over workers."""

from __future__ import annotations

import torch

from byzance.errors import InvalidParameterError


class BatchSampler:
    """Draw B indices per worker, uniformly with replacement from the worker's shard.

    The shards (lists of training-set indices) are padded into one (k, max)
    matrix so that one call draws every worker's batch: (k, B) indices.
    """

    def __init__(self, shards: list[torch.Tensor], generator: torch.Generator) -> None:
        if not shards or any(len(s) == 0 for s in shards):
            raise InvalidParameterError("every worker needs a non-empty shard of the training set.")
        self.sizes = torch.tensor([len(s) for s in shards])
        self.table = torch.zeros(len(shards), int(self.sizes.max()), dtype=torch.int64)
        for i, shard in enumerate(shards):
            self.table[i, : len(shard)] = shard
        self.generator = generator

    def sample(self, batch_size: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Indices into the training set, shape (k, batch_size): every worker's, or ``rows``' (k,)."""
        sizes = self.sizes if rows is None else self.sizes[rows]
        table = self.table if rows is None else self.table[rows]
        u = torch.rand(len(sizes), batch_size, generator=self.generator, dtype=torch.float64)
        positions = (u * sizes[:, None]).long().clamp_max(sizes[:, None] - 1)
        return torch.gather(table, 1, positions)


def exponential_delays(rates: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One delay per worker, delay_i ~ Exp(rates_i) (mean 1 / rate), shape like ``rates``."""
    u = torch.rand(rates.shape, generator=generator, dtype=torch.float64)
    return -torch.log1p(-u) / rates
