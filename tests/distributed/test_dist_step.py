"""robust_step in a plain torch training loop, three ranks started by torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from byzance import aggregators
from byzance.distributed import robust_step
from byzance.errors import InvalidParameterError, ToleranceError

SCRIPT = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    import byzance.distributed

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    before = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    x = torch.full((4, 3), float(rank + 1))
    loss = model(x).square().mean()
    loss.backward()
    if rank == 2:  # a Byzantine rank: its gradient is enormous
        for p in model.parameters():
            p.grad.fill_(1e9)
    mine = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    aggregate = byzance.distributed.robust_step(model, optimizer, rule=sys.argv[2], f=1)
    after = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    torch.save({"mine": mine, "aggregate": aggregate, "before": before, "after": after},
               f"{sys.argv[1]}/rank{rank}.pt")
    dist.destroy_process_group()  # no gloo thread left to abort at exit
    """
)


@pytest.mark.parametrize("rule", ["median", "trimmed_mean"])
def test_robust_step_aggregates_whole_gradients_across_ranks(tmp_path: Path, rule: str) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=3"]
    done = subprocess.run(
        [*cmd, str(script), str(tmp_path), rule],
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(3)]
    grads = torch.stack([r["mine"] for r in results])
    expected = aggregators.get(rule)(grads, 1)
    for r in results:
        torch.testing.assert_close(r["aggregate"], expected)
        torch.testing.assert_close(r["after"], r["before"] - 0.5 * expected)
    assert expected.abs().max() < 1e3  # the Byzantine rank's 1e9 did not get through


def test_robust_step_refuses_a_world_too_small_for_the_rule(tmp_path: Path) -> None:
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        model = torch.nn.Linear(2, 1)
        model(torch.ones(1, 2)).sum().backward()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        with pytest.raises(ToleranceError, match="robust_step over 1 ranks"):
            robust_step(model, optimizer, rule="krum", f=1)
        aggregate = robust_step(model, optimizer, rule="median", f=0)
        assert aggregate.shape == (3,)
    finally:
        dist.destroy_process_group()


def test_robust_step_binds_the_parameters_of_a_rule_object(tmp_path: Path) -> None:
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        model = torch.nn.Linear(2, 1)
        model(torch.ones(1, 2)).sum().backward()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        rule = aggregators.get("centered_clipping")
        by_name = robust_step(model, optimizer, rule="centered_clipping", f=0, tau=1e-3)
        by_rule = robust_step(model, optimizer, rule=rule, f=0, tau=1e-3)
        torch.testing.assert_close(by_rule, by_name)
        assert float(by_rule.norm()) <= 1e-3 * (1 + 1e-6)  # tau took effect
        with pytest.raises(InvalidParameterError, match="tau > 0"):
            robust_step(model, optimizer, rule=rule, f=0, tau=-1.0)
        with pytest.raises(InvalidParameterError, match="has no parameter 'tauu'"):
            robust_step(model, optimizer, rule=rule, f=0, tauu=1.0)
    finally:
        dist.destroy_process_group()
