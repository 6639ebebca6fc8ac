"""Per-step time of one training step across real processes: averaging vs robust rules.

Run under torchrun (``byzance bench dist`` does it): every rank trains the
same model on its own random batch; each mode is timed over ``steps`` steps
after a warm-up, between barriers, and rank 0 prints one JSON line per mode
with the mean step time in milliseconds:

- ``average``: the baseline of data-parallel training: backward, one
  ``all_reduce`` of the flat gradient, divide by the world size, step;
- ``robust_step:<rule>``: backward, :func:`byzance.distributed.robust_step` (one
  all-gather of the whole gradients, the rule on the (world, d) matrix), step;
- ``sharded:<rule>``: ``robust_step(..., sharded=True)``: an all-to-all, the
  rule on this rank's 1/world of the coordinates (whole-vector sums
  all-reduced), an all-gather;
- ``replicated:<rule>``: the same with every slice aggregated by 2f + 1 ranks
  and the copies combined by their median.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from byzance import aggregators, models
from byzance.distributed.backend import init_distributed
from byzance.distributed.step import flat_gradient, robust_step
from byzance.sim.gradients import set_flat_grad

MODELS = {
    "lenet": ("lenet", {}),
    "mlp-1m": ("mlp", {"hidden": (1024, 256)}),
}


def _train_step(model, optimizer, x, y, mode: str, f: int) -> None:
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    if mode == "average":
        flat = flat_gradient(model)
        dist.all_reduce(flat)
        set_flat_grad(model, flat / dist.get_world_size())
        optimizer.step()
    else:
        kind, rule = mode.split(":", 1)
        robust_step(
            model,
            optimizer,
            rule=rule,
            f=f,
            sharded=kind in ("sharded", "replicated"),
            replicated=kind == "replicated",
        )


def tolerated(rule: str, world: int, f: int) -> int:
    """``f``, or the largest f the rule tolerates among ``world`` inputs if that is smaller."""
    return max(0, min(f, aggregators.get(rule).requirement.max_f(world)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="mlp-1m", choices=sorted(MODELS))
    parser.add_argument(
        "--modes", default="average,robust_step:krum,robust_step:median,sharded:median"
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--f", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda (LOCAL_RANK's) or cuda:N")
    args = parser.parse_args()
    device = init_distributed(args.device)
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    name, params = MODELS[args.model]
    model = models.build(name, (1, 28, 28), 10, **params).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(rank)
    x = torch.randn(args.batch, 1, 28, 28, generator=gen).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=gen).to(device)
    d = sum(p.numel() for p in model.parameters())
    for mode in args.modes.split(","):
        f = 0 if mode == "average" else tolerated(mode.split(":", 1)[1], world, args.f)
        for _ in range(3):
            _train_step(model, optimizer, x, y, mode, f)
        dist.barrier()
        start = time.perf_counter()
        for _ in range(args.steps):
            _train_step(model, optimizer, x, y, mode, f)
        dist.barrier()
        ms = 1e3 * (time.perf_counter() - start) / args.steps
        if rank == 0:
            row = {"model": args.model, "d": d, "procs": world, "mode": mode, "f": f}
            row.update(step_ms=ms, device=str(device))
            print("BENCH " + json.dumps(row), flush=True)
    dist.destroy_process_group()
    _exit_without_finalizing()


def _exit_without_finalizing() -> None:
    """Exit now, skipping the interpreter's finalization (nothing is left to write).

    torch 2.13's gloo worker threads destroy a finished collective's work after waking
    the rank that waits on it; that drops the tensors the work holds, which takes the
    GIL. A rank that reaches interpreter finalization first makes that thread exit
    inside a noexcept C++ frame: std::terminate, "terminate called without an active
    exception", exit -6 after every result was printed (3 to 5 runs in 100 of this
    benchmark on 2 cores; the core's backtrace: ProcessGroupGloo::runLoop ->
    ~AsyncBarrierWork -> ~AsyncAllreduceWork -> TensorImpl::decref_pyobject -> take_gil
    -> pthread_exit during Py_FinalizeEx).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
