"""Every rule on blocks of columns, whole-vector sums completed across the blocks.

Threads play the blocks (the distributed layer plays them with ranks and
collectives: tests/distributed/test_sharded_step.py): each thread runs the
rule on its columns inside ``sharded`` with a reducer that sums the threads'
partials at a barrier. The concatenated blocks must equal the rule on the
whole input: bit-exact for the coordinate-wise rules, within float rounding
(the sums are taken in another order) for the others.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import pytest
import torch

import byzance.aggregators as agg
from byzance.aggregators._shard import any_block, is_sharded, sharded, whole

COORDINATE_WISE = {"average", "median", "trimmed_mean", "meamed", "weighted_median"}


class _Exchange:
    """What the blocks' threads share: a barrier and one slot per block."""

    def __init__(self, blocks: int) -> None:
        self.barrier = threading.Barrier(blocks, timeout=30)
        self.slots: list[object] = [None] * blocks

    def all_gather(self, block: int, value: object) -> list[object]:
        self.slots[block] = value
        self.barrier.wait()
        out = list(self.slots)
        self.barrier.wait()  # nobody overwrites a slot before everyone has read it
        return out


class ThreadReducer:
    segments = None

    def __init__(self, exchange: _Exchange, block: int, columns: int) -> None:
        self.exchange, self.block, self.columns = exchange, block, columns

    def total(self, partials: torch.Tensor, op: str = "sum") -> torch.Tensor:
        local = partials.sum(dim=0) if op == "sum" else partials.amax(dim=0)
        parts = torch.stack(self.exchange.all_gather(self.block, local))
        return parts.sum(dim=0) if op == "sum" else parts.amax(dim=0)  # same on every block

    def any(self, flag: bool) -> bool:
        return any(self.exchange.all_gather(self.block, flag))


def run_in_blocks(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, blocks: int):
    """``fn`` on ``blocks`` column blocks of ``x`` (n, d), concatenated along the last dim.

    The blocks start at multiples of 64 columns, as the distributed layer's
    slices do (the last ones may be short or empty: an empty block runs on one
    zero column, which adds nothing to a sum, and hands on nothing).
    """
    d = x.shape[1]
    width = 64 * -(-d // (64 * blocks))
    bounds = [min(b * width, d) for b in range(blocks + 1)]
    exchange = _Exchange(blocks)
    out: list[torch.Tensor | BaseException | None] = [None] * blocks

    def work(b: int) -> None:
        try:
            block = x[:, bounds[b] : bounds[b + 1]].clone()
            empty = block.shape[1] == 0
            with sharded(ThreadReducer(exchange, b, d)):
                got = fn(x.new_zeros((x.shape[0], 1)) if empty else block)
            out[b] = got[..., :0] if empty else got
        except BaseException as err:  # reported below, with the other blocks released
            out[b] = err
            exchange.barrier.abort()

    threads = [threading.Thread(target=work, args=(b,)) for b in range(blocks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [o for o in out if isinstance(o, BaseException)]
    if errors:
        firsts = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
        raise (firsts or errors)[0]
    return torch.cat(out, dim=-1)  # type: ignore[arg-type]


def _cases() -> list[tuple[str, dict]]:
    cases = [(name, {}) for name in agg.names("aggregator") if name != "skewed_geometric_median"]
    cases += [
        ("weighted_median", {"weights": torch.tensor([1.0, 2, 1, 3, 1, 1, 2])}),
        ("weighted_average", {"weights": torch.tensor([1.0, 2, 1, 3, 1, 1, 2])}),
        ("geometric_median", {"weights": torch.tensor([1.0, 2, 1, 3, 1, 1, 2])}),
        ("bulyan", {"selection": "geometric_median"}),
        ("bulyan", {"selection": "mda"}),
    ]
    return cases


def _rows(n: int = 7, d: int = 333, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    x[-1] += 30.0  # one far input: the rules have a choice to make
    return x


@pytest.mark.parametrize(
    ("name", "params"), _cases(), ids=lambda v: v if isinstance(v, str) else ""
)
@pytest.mark.parametrize("blocks", [2, 3, 5])
def test_a_rule_on_blocks_equals_the_rule_on_the_whole(name: str, params: dict, blocks: int):
    rule = agg.get(name, **params)
    x = _rows()
    whole_out = rule(x, 1)
    got = run_in_blocks(lambda b: rule(b, 1), x, blocks)
    if name in COORDINATE_WISE:
        assert torch.equal(got, whole_out)
    else:
        torch.testing.assert_close(got, whole_out, rtol=1e-9, atol=1e-9)


PIPELINES = [
    "nnm>krum",
    "nnm>trimmed_mean",
    "clipping>median",
    "arc>mda",
    "bucketing>centered_clipping",
    "nnm>bulyan",
    "arc>geometric_median",
]


@pytest.mark.parametrize("name", PIPELINES)
def test_a_pipeline_on_blocks_equals_the_pipeline_on_the_whole(name: str):
    stages = []
    for part in name.split(">"):
        stages.append(agg.get(part, seed=3) if part == "bucketing" else agg.get(part))
    rule = agg.compose(*stages)
    x = _rows(n=11)
    got = run_in_blocks(lambda b: rule(b, 1), x, 3)
    torch.testing.assert_close(got, rule(x, 1), rtol=1e-9, atol=1e-9)


def test_preaggregators_on_blocks_hand_on_the_same_rows():
    x = _rows(n=9)
    for name in agg.names("preaggregator"):
        rule = agg.get(name, seed=1) if name == "bucketing" else agg.get(name)
        got = run_in_blocks(lambda b, rule=rule: rule.impl(b, 1, **rule.defaults), x, 4)
        torch.testing.assert_close(got, rule.impl(x, 1, **rule.defaults), rtol=1e-9, atol=1e-9)


def test_non_finite_rows_are_dropped_the_same_in_every_block():
    x = _rows(n=9)
    x[2, 140] = float("nan")  # one block sees the NaN, the others must drop row 2 as well
    for name in ("krum", "median", "geometric_median"):
        rule = agg.get(name)
        got = run_in_blocks(lambda b, rule=rule: rule(b, 1), x, 3)
        torch.testing.assert_close(got, rule(x, 1), rtol=1e-9, atol=1e-9)


def test_whole_and_any_block_are_plain_outside_a_sharded_evaluation():
    x = torch.arange(6.0).reshape(2, 3)
    assert not is_sharded()
    assert torch.equal(whole(lambda t: t.sum(-1), x), x.sum(-1))
    assert any_block(True) and not any_block(False)


def test_overflowing_rows_take_the_same_path_in_every_block():
    x = _rows(n=9).float()
    x[1, :200] = 3e37  # a finite row whose squared norm overflows float32, in some blocks only
    for name in ("clipping>median", "arc>krum", "geometric_median", "centered_clipping"):
        rule = agg.get(name)
        got = run_in_blocks(lambda b, rule=rule: rule(b, 1), x, 3)
        torch.testing.assert_close(got, rule(x, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_average_on_blocks_is_bit_exact_with_a_nan_in_one_block(dtype):
    # Only the NaN's column leaves the C kernel, so the other blocks' columns are the whole
    # call's, bit for bit.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(9, 333, generator=gen, dtype=dtype)
    x *= torch.logspace(-3, 3, 9, dtype=dtype)[:, None]
    x[2, 140] = math.nan  # block 1 of 3 (width 128)
    got, want = run_in_blocks(lambda b: agg.average(b, 1), x, 3), agg.average(x, 1)
    assert got[140].isnan() and want[140].isnan()
    keep = torch.arange(333) != 140
    assert torch.equal(got[keep], want[keep])
