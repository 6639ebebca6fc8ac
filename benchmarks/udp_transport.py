"""Benchmark of the UDP gradient transport against a torch.distributed gloo gather.

n worker processes each hold a d-coordinate float32 gradient; one server
collects all of them, step after step, on loopback:

- UDP: every worker sends through :class:`byzance.distributed.udp.UdpSender` (HMAC
  tags, paced to ``--rate`` bytes/s shared by the workers) and the server's
  :class:`byzance.distributed.udp.UdpReceiver` collects until complete or the
  deadline;
- gloo: n + 1 ranks (rank 0 the server) started by torch.multiprocessing,
  ``dist.gather`` of the same tensors to rank 0.

A step is timed on the server from the moment every process is ready (a
barrier) to the moment it holds the n gradients. With injected drop rates the
table gives the fraction of coordinates delivered and the step time, which is
then the deadline: the receiver cannot tell a lost datagram from a late one.

    .venv/bin/python benchmarks/udp_transport.py                # 8 workers, d = 2**20
    .venv/bin/python benchmarks/udp_transport.py --workers 2 --dim 20000 --steps 2
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as tmp

from byzance.distributed.udp import (
    LossModel,
    UdpReceiver,
    UdpSender,
    generate_keys,
    suggested_window,
)


def _gradient(worker: int, dim: int) -> torch.Tensor:
    return torch.randn(dim, generator=torch.Generator().manual_seed(worker))


# -- UDP -------------------------------------------------------------------------
def _udp_worker(
    worker: int,
    key: bytes,
    address: tuple[str, int],
    dim: int,
    steps: int,
    rate: float | None,
    window: int | None,
    drop: float,
    barrier,
) -> None:
    torch.set_num_threads(1)
    grad = _gradient(worker, dim)
    loss = LossModel(drop=drop, seed=worker)
    with UdpSender(worker, key, loss=loss, rate_bytes_per_s=rate, window=window) as tx:
        for step in range(steps):
            barrier.wait()
            tx.send(step, grad, address)


def run_udp(
    workers: int,
    dim: int,
    steps: int,
    warmup: int,
    rate: float | None,
    flow: bool,
    drop: float,
    deadline: float,
) -> dict:
    """Per-step times (s) and fractions delivered of one UDP configuration."""
    ctx = tmp.get_context("spawn")
    keys = generate_keys(workers)
    barrier = ctx.Barrier(workers + 1)
    total = steps + warmup
    per_worker = None if rate is None else rate / workers
    with UdpReceiver(keys, dim, window=2) as rx:
        window = suggested_window(rx.rcvbuf_granted, workers) if flow else None
        procs = [
            ctx.Process(
                target=_udp_worker,
                args=(w, keys[w], rx.address, dim, total, per_worker, window, drop, barrier),
                daemon=True,
            )
            for w in range(workers)
        ]
        for p in procs:
            p.start()
        expected = torch.stack([_gradient(w, dim) for w in range(workers)])
        times, delivered, exact = [], [], True
        for step in range(total):
            barrier.wait()
            start = time.perf_counter()
            got = rx.collect(step, timeout=deadline)
            elapsed = time.perf_counter() - start
            exact &= torch.equal(got.values[got.present], expected[got.present])
            if step >= warmup:
                times.append(elapsed)
                delivered.append(float(got.present.float().mean()))
        for p in procs:
            p.join()
        granted = rx.rcvbuf_granted
    return {
        "times": times,
        "delivered": delivered,
        "exact": bool(exact),
        "rcvbuf_granted": granted,
        "window": window,
    }


# -- gloo ------------------------------------------------------------------------
def _gloo_rank(rank: int, world: int, port: int, dim: int, steps: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    grad = torch.zeros(dim) if rank == 0 else _gradient(rank - 1, dim)
    gathered = [torch.empty(dim) for _ in range(world)] if rank == 0 else None
    times = []
    for _ in range(steps):
        dist.barrier()
        start = time.perf_counter()
        dist.gather(grad, gathered, dst=0)
        times.append(time.perf_counter() - start)
    if rank == 0:
        assert gathered is not None
        assert torch.equal(gathered[-1], _gradient(world - 2, dim))
        Path(out).write_text(json.dumps(times))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_gloo(workers: int, dim: int, steps: int, warmup: int) -> list[float]:
    """Per-step times (s) of a gloo gather of the workers' gradients to rank 0."""
    with tempfile.TemporaryDirectory() as tmpdir:
        out = str(Path(tmpdir) / "times.json")
        tmp.spawn(
            _gloo_rank,
            args=(workers + 1, _free_port(), dim, steps + warmup, out),
            nprocs=workers + 1,
        )
        return json.loads(Path(out).read_text())[warmup:]


# -- report ----------------------------------------------------------------------
def _ms(times: list[float]) -> str:
    return f"{1e3 * statistics.median(times):.1f} (min {1e3 * min(times):.1f})"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--dim", type=int, default=1 << 20)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="bytes/s shared by the workers (0: unpaced)"
    )
    parser.add_argument(
        "--no-flow", action="store_true", help="no acknowledgement window (fire and forget)"
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="collect timeout (s) with injected drop; default 1.5 x the median step at 0%% drop",
    )
    parser.add_argument("--drops", type=float, nargs="*", default=[0.01, 0.05, 0.1, 0.2])
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    rate = args.rate or None
    common = (args.workers, args.dim, args.steps, args.warmup)

    flow = not args.no_flow
    # At 0% drop the deadline is only a guard: the step ends when every gradient is complete.
    udp = run_udp(*common, rate=rate, flow=flow, drop=0.0, deadline=30.0)
    deadline = args.deadline or round(1.5 * statistics.median(udp["times"]), 3)
    # The same without acknowledgements: fire and forget, as in AggregaThor.
    # Losses then end a step at the deadline only, which the default makes generous.
    guard = 3.0 * statistics.median(udp["times"]) + 1.0
    unflowed = run_udp(*common, rate=rate, flow=False, drop=0.0, deadline=guard) if flow else None
    gloo = run_gloo(*common)
    lossy = {
        drop: run_udp(*common, rate=rate, flow=flow, drop=drop, deadline=deadline)
        for drop in args.drops
    }

    mb = args.dim * 4 / 2**20
    print(
        f"\n{args.workers} workers -> 1 server on loopback, d = {args.dim} float32 "
        f"({mb:.1f} MiB per worker), {args.steps} steps after {args.warmup} warm-up; "
        f"UDP {f'paced at {rate / 1e6:g} MB/s in all' if rate else 'unpaced'}, "
        f"SO_RCVBUF granted {udp['rcvbuf_granted']} bytes, flow-control window "
        f"{udp['window'] or 'none'} datagrams per sender; load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs.\n"
    )
    udp_med = statistics.median(udp["times"])
    gloo_med = statistics.median(gloo)
    print("| transport | step ms, median (min) | delivered | ratio to gloo |")
    print("| --- | --- | --- | --- |")
    print(f"| gloo gather | {_ms(gloo)} | 100% | 1.00 |")
    print(
        f"| UDP, 0% drop | {_ms(udp['times'])} | {100 * min(udp['delivered']):.3f}% (worst step) "
        f"| {udp_med / gloo_med:.2f} |"
    )
    if unflowed is not None:
        print(
            f"| UDP, 0% drop, no flow control | {_ms(unflowed['times'])} | "
            f"{100 * min(unflowed['delivered']):.3f}% (worst step) | "
            f"{statistics.median(unflowed['times']) / gloo_med:.2f} |"
        )
    print(f"\nWith injected drop (deadline {deadline} s):\n")
    print("| drop | delivered, mean (worst step) | step ms, median (min) |")
    print("| --- | --- | --- |")
    for drop, res in lossy.items():
        mean = statistics.mean(res["delivered"])
        print(
            f"| {100 * drop:g}% | {100 * mean:.2f}% ({100 * min(res['delivered']):.2f}%) "
            f"| {_ms(res['times'])} |"
        )
    results = {
        "deadline": deadline,
        "load_average": os.getloadavg(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "udp": udp,
        "udp_no_flow_control": unflowed,
        "gloo": gloo,
        "lossy": {str(k): v for k, v in lossy.items()},
    }
    assert udp["exact"] and all(r["exact"] for r in lossy.values()), "corrupted values"
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
