"""Whole-vector reductions when a rule runs on a slice of the coordinates.

A robust rule maps (n, d) -> (d,). Coordinate-wise rules (median, trimmed
mean, meamed, ...) compute each output coordinate from that coordinate's n
values only. Every other rule in byzance computes its output as a
combination of the rows whose coefficients depend on *whole-vector* numbers:
squared norms, inner products, distances (Krum's scores, the geometric
median's weights, centered clipping's radii, the pre-aggregators' mixing).
Those are sums over the d coordinates.

So a rule can run on a block of columns (n, m) instead of (n, d), provided
each sum over coordinates is completed across the blocks: that is what
:func:`whole` does. Outside a sharded evaluation it is the plain computation
``fn(*tensors)``; inside :func:`sharded` (the distributed layer installs it)
the partial results of the local columns are combined with every other
block's (an all-reduce of a small (n,) or (n, n) tensor), so that every
block sees the numbers of the whole vectors and makes the same choices.

Rules written with :func:`whole` stay pure tensor math: no collective is
imported here; the combining is the installed :class:`Reducer`'s job.
Control flow that depends on a whole-vector number must depend on the value
:func:`whole` returned (the same on every block), never on a local partial,
so that every block makes the same sequence of calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal, Protocol

import torch

Op = Literal["sum", "max"]


class Reducer(Protocol):
    """Completes column-block partial results into whole-vector results."""

    columns: int
    """The whole vectors' number of coordinates d (kernels choose their path by the
    whole input's size, so that every block takes the path the whole would)."""

    segments: Sequence[slice] | None
    """None: the local columns are one block; else the separate blocks (slices of
    the last dimension) whose partial results must be combined separately
    (replicated blocks, each checked against its copies on other ranks)."""

    def total(self, partials: torch.Tensor, op: Op = "sum") -> torch.Tensor:
        """(blocks, *shape) partials of the local blocks -> (*shape) whole-vector result,
        combined over every block by ``op`` (a sum, or a max)."""
        ...

    def any(self, flag: bool) -> bool:
        """True when ``flag`` is true on any block (the same answer everywhere)."""
        ...


_current: ContextVar[Reducer | None] = ContextVar("byzance_shard_reducer", default=None)


def whole(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor, op: Op = "sum") -> torch.Tensor:
    """``fn(*tensors)`` over the whole vectors, where ``fn`` reduces the last dimension.

    Args:
        fn: a function of column blocks that is a *sum* (``op="sum"``) or a
            *max* (``op="max"``) over their last dimension
            (``lambda t: t.square().sum(-1)``, ``lambda a: a @ a.T``,
            ``lambda t: t.abs().amax(-1)``); its result has the same shape
            for every block.
        tensors: tensors whose last dimension is the coordinates (n, d) or (d,).
        op: how the blocks' results combine.

    Returns:
        ``fn(*tensors)``, completed over every block of a sharded evaluation.
    """
    reducer = _current.get()
    if reducer is None:
        return fn(*tensors)
    if reducer.segments is None:
        return reducer.total(fn(*tensors).unsqueeze(0), op)
    parts = [fn(*(t[..., seg] for t in tensors)) for seg in reducer.segments]
    return reducer.total(torch.stack(parts), op)


def norms(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Euclidean norms over the last dimension of ``x`` (whole vectors when sharded).

    ``torch.linalg.vector_norm(x, dim=-1, dtype=dtype)`` outside a sharded
    evaluation; inside one, the square root of the completed sum of squares.
    """
    if _current.get() is None:
        return torch.linalg.vector_norm(x, dim=-1, dtype=dtype)
    return whole(lambda t: t.square().sum(-1, dtype=dtype), x).sqrt()


def any_block(flag: bool) -> bool:
    """``flag`` or'ed over every block of a sharded evaluation (``flag`` itself outside one)."""
    reducer = _current.get()
    return flag if reducer is None else reducer.any(flag)


def whole_numel(x: torch.Tensor) -> int:
    """The number of elements of the whole input ``x`` is a block of (x.numel() outside a
    sharded evaluation): for choosing a kernel by size the same way on every block."""
    reducer = _current.get()
    if reducer is None or x.dim() < 2:
        return x.numel()
    return x.shape[0] * reducer.columns


def is_sharded() -> bool:
    """Whether the rule runs on a block of the coordinates (inside :func:`sharded`)."""
    return _current.get() is not None


@contextmanager
def sharded(reducer: Reducer) -> Iterator[None]:
    """Evaluate rules on a block of columns, completing whole-vector sums with ``reducer``."""
    token = _current.set(reducer)
    try:
        yield
    finally:
        _current.reset(token)
