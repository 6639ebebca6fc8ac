"""Benchmark of the simulator: per-worker gradients, vectorized (vmap) vs a loop over workers.

For n workers with a batch of B each on the small CNN, one simulated step's
gradient computation is timed three ways in the same process: the vectorized
call, a Python loop over workers, and one worker with an n-times larger batch
(the floor: the same samples through one ordinary backward pass). Each
configuration runs in its own process so that its peak memory (RSS
high-water mark) is its own.
"""

from __future__ import annotations

import multiprocessing
import resource
import time
from dataclasses import dataclass

TARGET_RATIO = 3.0  # vectorized step at n = 20 vs one worker with a 20x batch


@dataclass(frozen=True)
class SimBenchRow:
    """Timings (ms) of one configuration and its peak resident memory (MiB)."""

    model: str
    n: int
    batch: int
    threads: int
    vectorized_ms: float
    loop_ms: float
    single_ms: float
    peak_mib: float

    @property
    def ratio(self) -> float:
        """Vectorized step over one worker with an n-times larger batch."""
        return self.vectorized_ms / self.single_ms

    @property
    def steps_per_second(self) -> float:
        return 1e3 / self.vectorized_ms


def best_ms(fn, repeat: int, device=None, reduce=min) -> float:
    """``reduce`` (min, or a median) of ``repeat`` timed calls of ``fn`` after a warm-up (ms).

    On CUDA every call is timed between two synchronizations.
    """
    import torch

    def sync() -> None:
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()  # warm-up
    times = []
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1e3 * reduce(times)


def _measure(args: tuple[str, int, int, int, int, str]) -> SimBenchRow:
    model_name, n, batch, threads, repeat, device_spec = args
    import torch
    import torch.nn.functional as F

    from byzance import models
    from byzance.devices import peak_memory_mib, resolve_device
    from byzance.sim import loop_gradients, worker_gradients

    device = resolve_device(device_spec)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = models.build(model_name, (1, 28, 28), 10).to(device)
    x = torch.randn(n, batch, 1, 28, 28).to(device)
    y = torch.randint(0, 10, (n, batch)).to(device)
    big_x, big_y = x.reshape(1, n * batch, 1, 28, 28), y.reshape(1, n * batch)
    vectorized = best_ms(lambda: worker_gradients(model, F.cross_entropy, x, y), repeat, device)
    loop = best_ms(lambda: loop_gradients(model, F.cross_entropy, x, y), repeat, device)
    single = best_ms(lambda: loop_gradients(model, F.cross_entropy, big_x, big_y), repeat, device)
    peak = peak_memory_mib(device)
    if peak is None:  # the CPU: the process's resident high-water mark
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return SimBenchRow(model_name, n, batch, threads, vectorized, loop, single, peak)


def run_sim_bench(
    ns: tuple[int, ...] = (10, 20, 50),
    *,
    model: str = "lenet",
    batch: int = 32,
    threads: int = 1,
    repeat: int = 5,
    device: str = "cpu",
) -> list[SimBenchRow]:
    """One row per n, each measured in a fresh process (one at a time, so timings are not shared).

    ``device``: where the model and batches live; peak memory is the device's on CUDA.
    """
    context = multiprocessing.get_context("spawn")
    rows = []
    for n in ns:
        with context.Pool(1) as pool:
            rows.append(pool.apply(_measure, ((model, n, batch, threads, repeat, device),)))
    return rows


def render_sim_bench(rows: list[SimBenchRow], console) -> None:
    """A rich table of the rows, with the target checked at n = 20."""
    from rich.table import Table

    table = Table(title="Simulator: per-worker gradients of one step (CPU)")
    for col in (
        "model",
        "n",
        "batch/worker",
        "threads",
        "vmap ms",
        "loop ms",
        "1 worker, n x batch ms",
        "vmap / 1 worker",
        "vmap / loop",
        "steps/s",
        "peak MiB",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        mark = ""
        if r.n == 20:
            mark = " [green]ok" if r.ratio < TARGET_RATIO else " [red]over target"
        table.add_row(
            r.model,
            str(r.n),
            str(r.batch),
            str(r.threads),
            f"{r.vectorized_ms:.1f}",
            f"{r.loop_ms:.1f}",
            f"{r.single_ms:.1f}",
            f"{r.ratio:.2f}x{mark}",
            f"{r.vectorized_ms / r.loop_ms:.2f}x",
            f"{r.steps_per_second:.1f}",
            f"{r.peak_mib:.0f}",
        )
    console.print(table)
    console.print(
        f"Target: at n = 20 the vectorized step costs < {TARGET_RATIO:.0f}x one worker with a 20x batch."
    )
