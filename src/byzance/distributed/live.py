"""Collectives with a deadline, and a group that goes on without the ranks that stopped.

torch.distributed's collectives wait for every rank of the group: a crashed
or hung rank stalls the others until the process group's timeout (30 minutes
by default), then every later collective fails. :class:`LiveGroup` gives the
drop-in :func:`~byzance.distributed.robust_step` the runner's tolerance:

- every collective of a step waits at most ``deadline`` seconds;
- when one fails (a peer's connection closed, or the deadline passed), the
  ranks still running agree on who is alive through the rendezvous store
  (each writes a key for the new epoch, waits up to ``deadline`` for the
  others', and the first to decide publishes the member list with an atomic
  compare-and-set, which everyone then reads), build a process group of
  those members (``new_group(..., use_local_synchronization=True)``: only the
  members take part) and run the step again among them. The slices of a
  rank that stopped are thereby reassigned to the live ranks, and its
  gradient is simply not among the inputs of that step.

A rank that was only slow and finds itself outside the new member list gets
:class:`DistributedStepError` (it cannot rejoin: the others have moved on). This is crash tolerance, not Byzantine
agreement: a Byzantine rank can make the others regroup (by not answering)
but cannot choose who is left, except by being the first to publish.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
_NAMES = itertools.count()  # LiveGroups are made in the same order on every rank: same names


class DistributedStepError(RuntimeError):
    """This rank cannot go on with its group (left out as unresponsive, or too few left)."""


class Collectives:
    """The collectives a robust step uses, each waiting at most ``timeout`` seconds."""

    def __init__(self, group: dist.ProcessGroup | None, timeout: float | None = None) -> None:
        self.group = group
        self.timeout = None if timeout is None else timedelta(seconds=timeout)

    def _run(self, collective: Callable[..., dist.Work | None], *args: Any, **kwargs: Any) -> None:
        """``collective(*args, group=..., **kwargs)``; with a timeout, waited on for that long."""
        if self.timeout is None:
            collective(*args, group=self.group, **kwargs)
            return
        work = collective(*args, group=self.group, async_op=True, **kwargs)
        if work is not None:
            work.wait(timeout=self.timeout)

    @property
    def size(self) -> int:
        return dist.get_world_size(self.group)

    @property
    def rank(self) -> int:
        return dist.get_rank(self.group)

    @property
    def backend(self) -> str:
        return str(dist.get_backend(self.group))

    def all_reduce(self, t: torch.Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> None:
        self._run(dist.all_reduce, t, op=op)

    def all_gather(self, out: torch.Tensor, t: torch.Tensor) -> None:
        """``out`` (size * t.numel(),) receives every rank's ``t`` in rank order."""
        self._run(dist.all_gather_single, out, t)

    def all_to_all(self, out: torch.Tensor, t: torch.Tensor) -> None:
        """Equal splits along dim 0: rank j receives ``t[j]`` of every rank into ``out``."""
        self._run(dist.all_to_all_single, out, t)


class LiveGroup:
    """The ranks of ``group`` that still answer, and collectives over them.

    Args:
        group: the process group to start from (default: the world).
        deadline: seconds a collective, and the agreement after a failure, may wait.
        min_size: fewer live ranks than this ends the run (DistributedStepError).
    """

    def __init__(
        self, group: dist.ProcessGroup | None = None, deadline: float = 30.0, min_size: int = 1
    ) -> None:
        self.deadline = deadline
        self.min_size = min_size
        self.members = dist.get_process_group_ranks(group or dist.group.WORLD)
        self.comm = Collectives(group, deadline)
        self.lost: list[int] = []
        self.epoch = 0
        self.name = next(_NAMES)
        self._store = dist.distributed_c10d._get_default_store()

    def run(self, step: Callable[[Collectives], T]) -> T:
        """``step(collectives)``, run again among the live ranks after each failure."""
        while True:
            try:
                return step(self.comm)
            except DistributedStepError:
                raise
            except RuntimeError as err:  # gloo/NCCL errors, timeouts: regroup and retry
                self._regroup(err)

    def _key(self, rank: int | str) -> str:
        return f"byzance/live/{self.name}/{self.epoch}/{rank}"

    def _regroup(self, err: Exception) -> None:
        self.epoch += 1
        me = dist.get_rank()
        self._store.set(self._key(me), "1")
        waited_until = time.monotonic() + self.deadline
        for rank in self.members:
            left = waited_until - time.monotonic()
            if rank == me or left <= 0:
                continue
            with contextlib.suppress(RuntimeError):  # not in time: that rank stopped
                self._store.wait([self._key(rank)], timedelta(seconds=left))
        alive = [r for r in self.members if self._store.check([self._key(r)])]
        decided = self._store.compare_set(self._key("members"), "", ",".join(map(str, alive)))
        members = [int(r) for r in decided.decode().split(",")]
        if me not in members:
            raise DistributedStepError(
                f"rank {me} was left out of the group after '{str(err).splitlines()[0][:120]}': "
                f"the others did not hear from it within {self.deadline} s and went on "
                f"with ranks {members}."
            ) from None
        if len(members) < self.min_size:
            raise DistributedStepError(
                f"only ranks {members} are left; the step needs at least {self.min_size}."
            ) from None
        self.lost += [r for r in self.members if r not in members]
        self.members = members
        group = dist.new_group(members, use_local_synchronization=True)
        self.comm = Collectives(group, self.deadline)
