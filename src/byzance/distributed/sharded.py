"""Sharded robust aggregation: every rank aggregates 1/world of the coordinates.

The gathered :func:`~byzance.distributed.robust_step` moves every whole
gradient to every rank ((world - 1) d values received per rank) and runs the
whole rule on every rank. An all-reduce moves 2 (world - 1) / world d per rank
and splits the arithmetic. Sharded aggregation does what the all-reduce does,
for any rule:

1. **all-to-all**: the coordinates are cut into ``world`` slices of
   ``w = ceil(d / world)``; rank s receives slice s of every rank's vector:
   an (n, w) block of the inputs (n = world).
2. **the rule on the block**: coordinate-wise rules (median, trimmed mean,
   meamed, Bulyan's second phase, ...) need nothing else. The other rules
   need whole-vector numbers (norms, distances, the n x n Gram matrix): each
   such sum is computed on the block and all-reduced (:mod:`byzance.aggregators._shard`),
   an (n,) or (n, n) tensor, never the vectors. Iterative rules (the geometric
   median, centered clipping) repeat that small all-reduce per iteration.
3. **all-gather** of the aggregated slices: every rank holds the aggregate.

Bytes per rank: (world - 1) w in the all-to-all and as much in the
all-gather (the all-reduce's 2 (world - 1) / world d), plus O(n^2) per
whole-vector sum. Arithmetic per rank: 1/world of the rule's (plus the
O(n^2) steps every rank repeats).

**Replicated slices** (``replicated=True``): a rank that aggregates a slice
may itself be Byzantine (among peers, every rank is an aggregator). Each slice
s is then aggregated by the r = 2f + 1 ranks s, s + 1, ..., s + r - 1 (mod
world); every partial sum and every aggregated slice is combined by the
coordinate-wise median of its r copies, which at most f liars cannot move
outside the honest copies' range (identical honest copies: the result is
exactly theirs). It costs r times the bytes and the arithmetic of the
unreplicated mode.

Exactness: a coordinate-wise rule on a block gives exactly the slice of its
whole result (bit-exact). A rule built on whole-vector sums gets those sums
in another order (the sum of world partial sums), equal up to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from byzance.aggregators import Rule
from byzance.aggregators._shard import Op, sharded
from byzance.distributed.backend import gather_device_type
from byzance.distributed.live import Collectives
from byzance.errors import InvalidParameterError, ToleranceError

Tamper = Callable[[torch.Tensor], torch.Tensor]


ALIGN = 64
"""Slices start at multiples of this many coordinates: torch's CPU reductions over the
rows group columns in SIMD chunks of up to 64 (float32), so an aligned slice sums
every column in the same order as the whole matrix does (bit-exact means)."""


@dataclass(frozen=True)
class SliceLayout:
    """Which rank aggregates which slice of the d coordinates.

    Slice s is coordinates ``[s w, min((s + 1) w, d))`` with ``w`` the
    smallest multiple of ALIGN with ``world * w >= d`` (the last slices may be
    shorter, or empty); its owners are ranks ``s, s + 1, ..., s + replicas - 1``
    (mod world), and rank t owns slices ``t, t - 1, ..., t - replicas + 1``.
    On the wire every slice is padded to ``w``.
    """

    world: int
    d: int
    replicas: int = 1

    @property
    def width(self) -> int:
        return ALIGN * max(1, math.ceil(self.d / (self.world * ALIGN)))

    def real_width(self, s: int) -> int:
        """Coordinates of slice s that exist (not padding)."""
        return max(0, min(self.width, self.d - s * self.width))

    def owned(self, device: torch.device | None = None) -> torch.Tensor:
        """(world, replicas): ``owned[t, q]`` is the q-th slice rank t aggregates."""
        t = torch.arange(self.world, device=device)[:, None]
        q = torch.arange(self.replicas, device=device)[None, :]
        return (t - q) % self.world

    def copies(self, device: torch.device | None = None) -> torch.Tensor:
        """(world, replicas): ``copies[s, q]`` is the rank holding slice s as its q-th."""
        s = torch.arange(self.world, device=device)[:, None]
        q = torch.arange(self.replicas, device=device)[None, :]
        return (s + q) % self.world

    def by_slice(self, gathered: torch.Tensor, slices: torch.Tensor | None = None) -> torch.Tensor:
        """Every rank's copies (world, replicas, *shape), as gathered, regrouped by slice:
        (slices, replicas, *shape) for ``slices`` (default: every slice, in order)."""
        copies = self.copies(gathered.device)
        replica = torch.arange(self.replicas, device=gathered.device).expand_as(copies)
        if slices is not None:
            slices = slices.to(gathered.device)
            copies, replica = copies[slices], replica[slices]
        return gathered[copies, replica]

    def columns(self, rank: int) -> tuple[list[int], list[slice]]:
        """How ``rank`` lays its slices side by side for the rule.

        Returns the order of its copies q (ascending slice index, so that
        every slice but the last of the vector starts at a multiple of ALIGN)
        and, per copy q, its columns in that side-by-side block.
        """
        owned = self.owned()[rank].tolist()
        order = sorted(range(self.replicas), key=lambda q: owned[q])
        spans: list[slice] = [slice(0, 0)] * self.replicas
        at = 0
        for q in order:
            width = self.real_width(owned[q])
            spans[q] = slice(at, at + width)
            at += width
        return order, spans


class CollectiveReducer:
    """Completes whole-vector sums with collectives over ``group`` (the shard Reducer)."""

    def __init__(
        self,
        layout: SliceLayout,
        spans: list[slice],
        comm: Collectives,
        tamper: Tamper | None,
    ):
        self.layout = layout
        self.comm = comm
        self.tamper = tamper
        self.segments = None if layout.replicas == 1 else spans
        self.columns = layout.d
        self.backend = comm.backend

    def _send(self, t: torch.Tensor) -> torch.Tensor:
        where = gather_device_type(self.backend, t.device.type)
        return (t if where == t.device.type else t.to(where)).contiguous()

    def total(self, partials: torch.Tensor, op: Op = "sum") -> torch.Tensor:
        if self.tamper is not None:
            partials = self.tamper(partials)
        device = partials.device
        if self.layout.replicas == 1:
            out = self._send(partials[0].clone())
            self.comm.all_reduce(out, dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
            return out.to(device)
        send = self._send(partials)
        got = send.new_empty((self.layout.world, *send.shape))
        self.comm.all_gather(got.view(-1), send.view(-1))
        per_slice = self.layout.by_slice(got)  # (world slices, replicas, *shape)
        copies_agreed = per_slice.median(dim=1).values
        combined = copies_agreed.sum(dim=0) if op == "sum" else copies_agreed.amax(dim=0)
        return combined.to(device)

    def any(self, flag: bool) -> bool:
        t = self._send(torch.tensor([int(flag)]))
        self.comm.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())


def sharded_aggregate(
    flat: torch.Tensor,
    rule: Rule,
    f: int,
    *,
    group: dist.ProcessGroup | None = None,
    replicated: bool = False,
    tamper: Tamper | None = None,
    comm: Collectives | None = None,
    observe: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
    **column_params: torch.Tensor | None,
) -> torch.Tensor:
    """Aggregate every rank's ``flat`` (d,) with ``rule``, each rank doing one slice; (d,).

    Call on every rank of ``group`` with the same rule and f. The inputs are
    the ranks' vectors in rank order (world, d), as for the gathered path.

    Args:
        flat: this rank's vector (d,), the same d on every rank.
        rule: the rule; it must compute from coordinates or whole-vector sums
            (``rule.shardable``).
        f: Byzantine ranks tolerated.
        group: the process group (default: the world).
        replicated: each slice aggregated by 2f + 1 ranks and combined by the
            median of the copies (ranks that aggregate may lie).
        tamper: what this rank does to the partial sums and the slices it
            contributes; None for an honest rank (tests and benchmarks use it
            to play a lying aggregator).
        comm: the collectives to use (with a deadline: :class:`~byzance.distributed.live.Collectives`);
            default: plain collectives over ``group``.
        observe: called as ``observe(block, out)`` with this rank's inputs (n, m)
            and its part of the aggregate (m,), where :func:`~byzance.aggregators._shard.whole`
            completes whole-vector sums (the runner's step statistics).
        **column_params: the rule's parameters that are vectors over the
            coordinates (d,) (centered clipping's ``center``): each rank is
            given its slices of them; None passes through.

    Returns:
        The aggregate (d,), the same on every honest rank.
    """
    comm = comm or Collectives(group)
    world = comm.size
    if not rule.shardable:
        raise InvalidParameterError(
            f"{rule.name} cannot be sharded: its output mixes coordinates of whole vectors; "
            "use the gathered robust_step (sharded=False)."
        )
    replicas = 2 * f + 1 if replicated else 1
    if replicas > world:
        raise ToleranceError(
            f"replicated slices need 2f + 1 = {replicas} ranks per slice; the group has {world}. "
            "Use a smaller f or sharded=True without replication."
        )
    layout = SliceLayout(world, flat.numel(), replicas)
    w = layout.width
    order, spans = layout.columns(comm.rank)
    reducer = CollectiveReducer(layout, spans, comm, tamper)
    padded = flat.new_zeros(world * w)
    padded[: flat.numel()] = flat.reshape(-1)
    send = reducer._send(padded.view(world, w)[layout.owned(flat.device)])  # (world, r, w)
    block = torch.empty_like(send)
    comm.all_to_all(block, send)  # block[j, q]: rank j's part of my q-th slice
    block = block.to(flat.device)
    owned = layout.owned()[comm.rank]

    def mine_of(rows: torch.Tensor) -> torch.Tensor:
        """My slices, side by side, of ``rows`` (k, world, w) holding slice owned[q] at [:, q]."""
        return torch.cat([rows[:, q, : spans[q].stop - spans[q].start] for q in order], dim=1)

    inputs = mine_of(block)
    params: dict[str, torch.Tensor | None] = {}
    for name, vector in column_params.items():
        if vector is not None:
            whole_vector = vector.new_zeros(world * w)
            whole_vector[: flat.numel()] = vector.reshape(-1)
            vector = mine_of(whole_vector.view(world, w)[owned.to(vector.device)][None])[0]
        params[name] = vector
    empty = inputs.shape[1] == 0
    if empty:  # no coordinate here: a zero column adds nothing to any whole-vector sum
        inputs = block.new_zeros((world, 1))
        params = {k: None if v is None else v.new_zeros(1) for k, v in params.items()}
    with sharded(reducer):
        out = rule(inputs, f, **params)  # my slices of the aggregate, side by side
        if observe is not None:
            observe(inputs, out)
    if tamper is not None:
        out = tamper(out)
    mine = block.new_zeros((replicas, w))
    if not empty:
        for q in range(replicas):
            mine[q, : spans[q].stop - spans[q].start] = out[spans[q]]
    mine = reducer._send(mine)
    if replicas == 1:
        whole = mine.new_empty(world * w)
        comm.all_gather(whole, mine.view(-1))
    else:
        whole = _replicated_slices(mine, layout, comm).reshape(-1)
    return whole[: flat.numel()].to(flat.device)


def _replicated_slices(mine: torch.Tensor, layout: SliceLayout, comm: Collectives) -> torch.Tensor:
    """Every slice of the aggregate, trusted only as far as its 2f + 1 copies agree: (world, w).

    ``mine`` (r, w) holds this rank's copies of the slices it owns. Each slice
    travels once, from its first owner (one all-gather, as unreplicated);
    every other owner compares what arrived with its own copy, bit for bit.
    Honest copies are identical (the same rule on the same inputs), and at
    least f + 1 of a slice's 2f + 1 owners are honest, so a wrong slice is
    always seen. A slice in doubt (a lying first owner, or a Byzantine
    worker that sent different owners different values) is then gathered
    from every owner and replaced by the coordinate-wise median of its
    copies, which at most f liars cannot move outside the honest copies'
    range. A liar can only make the others take that slower path.
    """
    world, r = layout.world, layout.replicas
    primary = mine.new_empty((world, mine.shape[1]))
    comm.all_gather(primary.view(-1), mine[0].contiguous())
    owned = layout.owned()[comm.rank].tolist()
    doubtful = torch.zeros(world, dtype=torch.int64)
    for q in range(1, r):
        doubtful[owned[q]] = int(not torch.equal(primary[owned[q]], mine[q]))
    flag = doubtful.to(primary.device)
    comm.all_reduce(flag, op=dist.ReduceOp.MAX)  # every rank takes the same path
    if not bool(flag.any()):
        return primary
    every = mine.new_empty((world, r, mine.shape[1]))
    comm.all_gather(every.view(-1), mine.reshape(-1))
    bad = flag.nonzero().flatten().cpu()
    per_slice = layout.by_slice(every, bad)
    primary[bad.to(primary.device)] = per_slice.median(dim=1).values
    return primary
