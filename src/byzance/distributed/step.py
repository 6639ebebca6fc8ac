"""``robust_step``: replace gradient averaging by a robust rule in an existing training loop.

Usage, in a script started by torchrun (every rank runs the same loop on its
own data; no DistributedDataParallel wrapper)::

    device = init_distributed("auto")        # gloo; on GPUs NCCL (+ gloo for host tensors)
    model.to(device)
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        byzance.distributed.robust_step(model, optimizer, rule="krum", f=1)

(:func:`~byzance.distributed.backend.init_distributed` joins torchrun's group
with the device's backend; a group started by hand works too.) Every rank
gathers every rank's whole flattened gradient (one all-gather, NCCL on GPUs),
aggregates the (world, d) matrix with the rule, writes the result into the
parameters' ``.grad`` and steps its optimizer; every honest rank computes the
same aggregate, so their models stay identical.

Why not a DDP communication hook: DDP hands a hook one *bucket* of the gradient
at a time (about 25 MB of parameters), so a hook can only apply a rule to each
bucket separately. For coordinate-wise rules (median, trimmed mean) that is the
same rule, but for the rules that look at whole vectors it is not: Krum,
Bulyan, MDA and the geometric median compare distances between workers'
*entire* gradients, and choosing per bucket lets an attacker be selected in one
bucket and not in another, which breaks their guarantee (and a per-bucket
centered clipping clips each bucket's norm instead of the vector's). So the
rule is applied once, after the whole gradient is known.

What torch.distributed guarantees, and what it does not: the collective
completes only when every rank takes part; a crashed or hung rank makes it
wait until the process group's timeout and then fail on every rank. This
drop-in inherits that: it protects against ranks that send wrong *values*, not
against ranks that stop. The byzance runner (``byzance launch`` /
``python -m byzance.distributed``) adds the rest: point-to-point messages with a
deadline per step, so crashed, hung and slow workers are left behind.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from byzance import aggregators
from byzance.distributed.backend import gather_device_type
from byzance.distributed.live import Collectives, LiveGroup
from byzance.distributed.sharded import sharded_aggregate
from byzance.errors import InvalidParameterError, ToleranceError
from byzance.sim.gradients import set_flat_grad


def flat_gradient(model: nn.Module) -> torch.Tensor:
    """The parameters' gradients as one vector (d,) (zeros where a gradient is None)."""
    return torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
            for p in model.parameters()
        ]
    )


def gather_gradients(
    flat: torch.Tensor, group: dist.ProcessGroup | None = None, comm: Collectives | None = None
) -> torch.Tensor:
    """Every rank's vector, stacked in rank order: (world, d), on ``flat``'s device.

    On the vector's own device when the group's backend moves it there (NCCL for
    CUDA, gloo for the CPU); a CUDA vector in a gloo-only group goes through
    host memory. A CPU vector in an NCCL-only group is refused with the fix.
    """
    comm = comm or Collectives(group)
    where = gather_device_type(comm.backend, flat.device.type)
    send = flat.contiguous() if where == flat.device.type else flat.to(where)
    out = send.new_empty(comm.size * send.numel())  # one flat buffer: one copy per rank
    comm.all_gather(out, send)
    return out.view(comm.size, -1).to(flat.device)


_LIVE: dict[tuple[int, float], LiveGroup] = {}


def live_group(group: dist.ProcessGroup | None = None, deadline: float = 30.0) -> LiveGroup:
    """The :class:`LiveGroup` robust_step uses for ``group`` with ``deadline`` (its lost ranks)."""
    key = (id(group), deadline)
    if key not in _LIVE:
        _LIVE[key] = LiveGroup(group, deadline)
    return _LIVE[key]


def robust_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    rule: str | aggregators.Rule = "median",
    f: int = 1,
    *,
    group: dist.ProcessGroup | None = None,
    sharded: bool = False,
    replicated: bool = False,
    deadline: float | None = None,
    **rule_params: Any,
) -> torch.Tensor:
    """Aggregate every rank's gradient with ``rule`` instead of averaging, then step.

    Call after ``loss.backward()`` on every rank, instead of ``optimizer.step()``.

    Args:
        model: this rank's model (its ``.grad`` hold this rank's gradient).
        optimizer: the optimizer over ``model.parameters()``.
        rule: a registered rule name (``"krum"``, ``"nnm>trimmed_mean"``) or a Rule.
        f: the number of Byzantine ranks the rule tolerates.
        group: the process group (default: the world).
        sharded: each rank aggregates 1/world of the coordinates (an all-to-all,
            the rule on the slice with its whole-vector sums all-reduced, an
            all-gather: the bytes of an all-reduce; see
            :mod:`byzance.distributed.sharded`); False: every rank gathers every
            whole gradient and runs the whole rule.
        replicated: with ``sharded``, each slice is aggregated by 2f + 1 ranks
            and the copies combined by their median, so that up to f lying
            aggregating ranks change nothing.
        deadline: seconds any collective of the step may wait; a rank that
            crashed, hung or fell that far behind is left out and the step
            runs again among the others (its slices reassigned, its gradient
            not among the inputs), as the byzance runner does with its
            deadline per step (see :mod:`byzance.distributed.live`; the lost
            ranks are in ``live_group(group, deadline).lost``). None: wait
            as long as the process group does (a crash fails the step).
        **rule_params: the rule's parameters, bound to it whether it is given by
            name or as a Rule (``rule.partial(**rule_params)``, which checks them).

    Returns:
        The aggregate (d,) that was applied.

    Raises:
        ToleranceError: the world (or what is left of it) is too small for the
            rule to tolerate ``f``.
        DistributedStepError: this rank was left out by the others (too slow).
        InvalidParameterError: a parameter the rule does not have, or out of range.
    """
    if isinstance(rule, str):
        fn = aggregators.get(rule, **rule_params)
    else:
        fn = rule.partial(**rule_params) if rule_params else rule
    if fn.takes_generator and "generator" not in fn.defaults and fn.defaults.get("seed") is None:
        raise InvalidParameterError(
            f"{fn.name} draws random numbers: every rank must draw the same ones, or the "
            "ranks' models drift apart; pass seed=<int> (or a generator seeded alike on every rank)."
        )
    flat = flat_gradient(model).detach()

    def aggregate_among(comm: Collectives) -> torch.Tensor:
        try:
            fn.check(comm.size, f)
        except ToleranceError as err:
            raise ToleranceError(f"robust_step over {comm.size} ranks: {err}") from None
        if sharded or replicated:
            return sharded_aggregate(flat, fn, f, replicated=replicated, comm=comm)
        return fn(gather_gradients(flat, comm=comm), f)

    if deadline is None:
        aggregate = aggregate_among(Collectives(group))
    else:
        aggregate = live_group(group, deadline).run(aggregate_among)
    set_flat_grad(model, aggregate)
    optimizer.step()
    return aggregate
