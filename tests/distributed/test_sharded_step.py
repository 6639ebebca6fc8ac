"""Sharded robust aggregation across real processes (torchrun, gloo, loopback).

One launch per world size runs every rule family three ways on the same
inputs (one Byzantine rank sending a huge vector): the whole rule, sharded,
and sharded with replicated slices while one rank lies about what it
aggregates. Every rank saves what it got; the test compares.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

SCRIPT = textwrap.dedent(
    """
    import os, sys, torch, torch.distributed as dist
    import byzance.distributed.step
    from byzance import aggregators
    from byzance.distributed import robust_step
    from byzance.distributed.sharded import sharded_aggregate

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    x = torch.randn(world, 1000, generator=torch.Generator().manual_seed(7))
    x[world - 1] = 1e4  # the Byzantine rank's vector (100x the honest norms)
    rules = {
        "median": aggregators.get("median"),
        "trimmed_mean": aggregators.get("trimmed_mean"),
        "meamed": aggregators.get("meamed"),
        "weighted_median": aggregators.get("weighted_median", weights=torch.arange(1.0, world + 1)),
        "krum": aggregators.get("krum"),
        "multi_krum": aggregators.get("multi_krum"),
        "mda": aggregators.get("mda"),
        "geometric_median": aggregators.get("geometric_median"),
        "centered_clipping": aggregators.get("centered_clipping"),
        "nnm>trimmed_mean": aggregators.get("nnm>trimmed_mean"),
        "arc>geometric_median": aggregators.get("arc>geometric_median"),
        "bucketing>centered_clipping": aggregators.compose(
            aggregators.get("bucketing", s=1, seed=3), "centered_clipping"
        ),
    }
    liar = 1
    lie = (lambda t: t * 0 + 1e9) if rank == liar else None
    out = {}
    for name, rule in rules.items():
        f = max(0, min(1, rule.requirement.max_f(world)))
        out[name] = {
            "f": f,
            "whole": rule(x, f),
            "sharded": sharded_aggregate(x[rank].clone(), rule, f),
            "replicated": sharded_aggregate(x[rank].clone(), rule, f, replicated=True, tamper=lie),
            "unreplicated_lie": sharded_aggregate(x[rank].clone(), rule, f, tamper=lie),
        }
    # The drop-in, end to end: the same step sharded or gathered.
    steps = {}
    for sharded in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Linear(30, 4)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        data = torch.randn(8, 30, generator=torch.Generator().manual_seed(rank))
        model(data).square().mean().backward()
        if rank == world - 1:
            for p in model.parameters():
                p.grad.fill_(1e6)
        robust_step(model, opt, rule="trimmed_mean", f=1, sharded=sharded)
        steps[sharded] = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    out["robust_step"] = steps
    # A rank crashes (exits) at step 1 of 3: the others go on among themselves.
    crashed = world - 2
    out["crash"] = []
    torch.save(out, f"{sys.argv[1]}/rank{rank}.pt")
    model = torch.nn.Linear(30, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        if rank == crashed and step == 1:
            os._exit(0)
        opt.zero_grad()
        data = torch.randn(8, 30, generator=torch.Generator().manual_seed(10 * rank + step))
        model(data).square().mean().backward()
        if rank == world - 1:
            for p in model.parameters():
                p.grad.fill_(1e6)
        mine = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        # 3 s: on 2 cores shared by 5 ranks a live rank's collective took over 1.5 s
        agg = robust_step(model, opt, rule="geometric_median", f=1, sharded=True, deadline=3.0)
        members = byzance.distributed.step.live_group(None, 3.0).members
        out["crash"].append({"mine": mine, "aggregate": agg, "members": members})
    torch.save(out, f"{sys.argv[1]}/rank{rank}.pt")
    dist.destroy_process_group()
    """
)


def _rules(saved: dict) -> list[str]:
    return [k for k in saved if k not in ("robust_step", "crash")]


COORDINATE_WISE = {"median", "trimmed_mean", "meamed", "weighted_median"}


@pytest.fixture(scope="module", params=[4, 5])
def launched(request, tmp_path_factory) -> tuple[int, list[dict]]:
    world = request.param
    tmp = tmp_path_factory.mktemp(f"sharded{world}")
    script = tmp / "shard.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    done = subprocess.run(
        [*cmd, f"--nproc-per-node={world}", str(script), str(tmp)],
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return world, [torch.load(tmp / f"rank{r}.pt") for r in range(world)]


def _close(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    if name in COORDINATE_WISE:
        assert torch.equal(got, want), name
    else:  # whole-vector sums in another order: float32 rounding
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=name)


def test_sharded_equals_the_whole_rule_on_every_rank(launched) -> None:
    world, ranks = launched
    for name in _rules(ranks[0]):
        want = ranks[0][name]["whole"]
        if ranks[0][name]["f"] >= 1:  # the Byzantine vector was resisted
            assert float(want.abs().max()) < 1e3, name
        for r in range(world):
            _close(name, ranks[r][name]["sharded"], want)


def test_replicated_slices_outvote_a_lying_aggregator(launched) -> None:
    world, ranks = launched
    honest = [r for r in range(world) if r != 1]
    for name in _rules(ranks[0]):
        if ranks[0][name]["f"] == 0:  # 2f + 1 = 1 copy: nothing to outvote the liar with
            continue
        want = ranks[0][name]["whole"]
        for r in honest:
            _close(name, ranks[r][name]["replicated"], want)
        if ranks[0][name]["f"] >= 1:  # without replication the liar's slice gets through
            assert float(ranks[0][name]["unreplicated_lie"].abs().max()) > 1e8, name


def test_robust_step_sharded_takes_the_gathered_step(launched) -> None:
    world, ranks = launched
    for r in range(world):
        steps = ranks[r]["robust_step"]
        assert torch.equal(steps[True], steps[False])
        assert torch.equal(steps[True], ranks[0]["robust_step"][True])


def test_a_crashed_rank_is_left_out_and_the_others_go_on(launched) -> None:
    world, ranks = launched
    crashed = world - 2
    survivors = [r for r in range(world) if r != crashed]
    assert len(ranks[crashed]["crash"]) == 0  # it saved before its first sharded step... and left
    from byzance import aggregators

    rule = aggregators.get("geometric_median")
    for step in range(3):
        rows = survivors if step >= 1 else list(range(world))
        mine = [ranks[r]["crash"][step]["mine"] for r in rows] if step >= 1 else None
        for r in survivors:
            got = ranks[r]["crash"][step]
            assert got["members"] == (survivors if step >= 1 else list(range(world)))
            assert torch.equal(got["aggregate"], ranks[survivors[0]]["crash"][step]["aggregate"])
        if mine is not None:  # the step's inputs are the survivors' gradients
            want = rule(torch.stack(mine), 1)
            got = ranks[survivors[0]]["crash"][step]["aggregate"]
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
