"""robust_step over NCCL: run under torchrun with 2 processes (benchmarks/gpu_check.sh).

Each rank computes a gradient of a small MLP on its own batch on its CUDA
device (LOCAL_RANK modulo the visible GPUs), then ``robust_step`` aggregates
the ranks' gradients with the median instead of averaging. Rank 0 prints one
line: the backend, the devices and the median time of a step.
"""

from __future__ import annotations

import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from byzance import models
from byzance.distributed.step import robust_step


def main() -> None:
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local % torch.cuda.device_count())
    torch.cuda.set_device(device)
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = models.build("mlp", (1, 28, 28), 10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(64, 1, 28, 28, device=device) + rank
    y = torch.randint(0, 10, (64,), device=device)
    times = []
    for _ in range(20):
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        robust_step(model, optimizer, "median", f=0)
        torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = [torch.empty_like(params) for _ in range(world)]
    dist.all_gather(gathered, params)
    same = all(torch.equal(gathered[0], g) for g in gathered)
    if rank == 0:
        print(
            f"backend {dist.get_backend()}, {world} ranks on {torch.cuda.device_count()} GPU(s), "
            f"median step {1e3 * statistics.median(times[5:]):.2f} ms, ranks agree: {same}"
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
