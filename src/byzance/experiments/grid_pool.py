"""Running a grid's cells in worker processes that never outlive the grid.

- :func:`grid_lock`: one grid at a time per directory. An OS lock
  (``flock`` on ``DIR/.lock``) that the kernel releases when the holder dies,
  however it dies, so a kill never leaves a stale lock behind.
- :func:`init_worker`: every worker dies with the grid process. On Linux the
  kernel kills it when its parent dies (``PR_SET_PDEATHSIG``); everywhere a
  watchdog thread waits on the parent's sentinel and exits when it goes. A
  SIGKILLed grid therefore leaves no worker writing into a cell that the next
  run of the grid would write too.
- :func:`run_in_pool`: Ctrl-C (or any ``BaseException`` that is not an
  ``Exception``) cancels the queued cells and terminates the running ones at
  once instead of waiting for the whole queue.
- :func:`cell_gpus` and :func:`plan_lanes`: where cells run. CPU cells share one
  pool of ``jobs`` workers. Cells whose device resolves to CUDA are dealt
  round-robin to the visible GPUs (``cuda:0`` .. ``cuda:K-1``; a cell whose
  config names ``cuda:N`` stays on N), and each GPU gets its own pool of
  ``cells_per_device`` workers, each bound to that GPU
  (``torch.cuda.set_device``): at most ``cells_per_device`` cells run on a GPU
  at a time. The cell's config is not changed (``"cuda"`` means the worker's
  GPU), so neither is its identity.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from byzance.errors import InvalidParameterError
from byzance.runs.config import ConfigError

A = TypeVar("A")
K = TypeVar("K")
LOCK = ".lock"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


@contextlib.contextmanager
def grid_lock(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir`` for this process; a second holder gets a :class:`ConfigError` at once.

    Without ``fcntl`` (Windows) there is no lock: run one grid per directory.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path = out_dir / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = path.read_text().strip() or "unknown"
            raise ConfigError(
                f"grid directory {str(out_dir)!r} is in use by another byzance grid "
                f"(pid {holder}); wait for it to end, stop it, or choose another --out."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _watch_parent(parent_pid: int) -> None:
    """Exit this worker as soon as its parent is gone (the portable half of dying with it)."""
    parent = multiprocessing.parent_process()
    while True:
        if parent is not None:
            parent.join(timeout=1.0)  # returns at once when the parent's sentinel closes
            gone = not parent.is_alive()
        else:  # pragma: no cover - not started by multiprocessing
            threading.Event().wait(1.0)
            gone = False
        if gone or (os.name == "posix" and os.getppid() != parent_pid):
            os._exit(1)


def _die_with_parent_linux() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no prctl: the watchdog remains
        pass


def bind_gpu(gpu: int | None) -> None:
    """Make GPU ``gpu`` this process's current CUDA device (where ``"cuda"`` lands); None: no-op."""
    if gpu is None:
        return
    import torch

    torch.cuda.set_device(gpu)


def init_worker(parent_pid: int, gpu: int | None = None) -> None:
    """Pool initializer: die with the parent ``parent_pid``; leave Ctrl-C to the parent.

    ``gpu``: the CUDA device this worker's cells run on (their ``"cuda"`` and ``"auto"``).
    """
    bind_gpu(gpu)
    _die_with_parent_linux()
    if os.name == "posix" and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before the request above took effect
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    # Ctrl-C reaches the whole process group: the parent alone decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def visible_gpus() -> int:
    """How many CUDA devices this process sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def cell_gpus(devices: Sequence[str], gpu_count: int) -> list[int | None]:
    """The GPU each cell runs on (None: the CPU), from its config's ``device``.

    ``"cpu"`` is the CPU; ``"cuda:N"`` is GPU N; ``"cuda"`` and ``"auto"`` are dealt
    round-robin to GPUs 0 .. ``gpu_count - 1`` in the cells' order (``"auto"`` is
    the CPU when there is no GPU). A pure function of its arguments.
    """
    out: list[int | None] = []
    dealt = 0
    for device in devices:
        if device == "cpu" or (device == "auto" and gpu_count == 0):
            out.append(None)
            continue
        if gpu_count == 0:
            raise InvalidParameterError(
                f"a grid cell has device = {device!r}, but no CUDA device is visible here; "
                "use device = 'cpu', or 'auto' (CUDA where there is one, else the CPU)."
            )
        if device.startswith("cuda:"):
            index = int(device.split(":")[1])
            if index >= gpu_count:
                raise InvalidParameterError(
                    f"a grid cell has device = {device!r}, but {gpu_count} CUDA device(s) are "
                    f"visible (cuda:0 to cuda:{gpu_count - 1})."
                )
            out.append(index)
            continue
        out.append(dealt % gpu_count)
        dealt += 1
    return out


@dataclass(frozen=True)
class Lane(Generic[K, A]):
    """Work for one pool: its ``(key, arg)`` pairs, its workers, the GPU they take (or None)."""

    work: list[tuple[K, A]]
    jobs: int
    gpu: int | None = None


def plan_lanes(
    work: Sequence[tuple[K, A]],
    gpus: Sequence[int | None],
    *,
    jobs: int,
    cells_per_device: int,
) -> list[Lane[K, A]]:
    """One lane for the CPU cells (``jobs`` workers), one per GPU used (``cells_per_device``).

    ``gpus[i]`` is where ``work[i]`` runs (:func:`cell_gpus`). Lanes with no work
    are left out; the CPU lane comes first, then the GPUs in index order.
    """
    if cells_per_device < 1:
        raise InvalidParameterError(f"cells_per_device must be >= 1; got {cells_per_device}.")
    by_gpu: dict[int | None, list[tuple[K, A]]] = {}
    for item, gpu in zip(work, gpus, strict=True):
        by_gpu.setdefault(gpu, []).append(item)
    lanes = [Lane(by_gpu.pop(None), jobs)] if None in by_gpu else []
    for gpu in sorted(g for g in by_gpu if g is not None):
        lanes.append(Lane(by_gpu[gpu], cells_per_device, gpu))
    return lanes


def stop_pool(pool: ProcessPoolExecutor, futures: Sequence[Future[Any]]) -> None:
    """Cancel the queued work, terminate the running workers, and wait for them to be gone."""
    for future in futures:
        future.cancel()
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=10.0)
        if process.is_alive():  # pragma: no cover - SIGTERM ignored
            process.kill()
            process.join()
    pool.shutdown(wait=True)


def run_in_pool(
    fn: Callable[[A], Any],
    work: Sequence[tuple[K, A]],
    *,
    jobs: int,
    on_done: Callable[[K], None] | None = None,
) -> None:
    """``fn(arg)`` for every ``(key, arg)`` of ``work``, in ``jobs`` spawned workers.

    ``on_done(key)`` runs in this process as each call completes. An
    ``Exception`` raised by a call or by ``on_done`` lets the calls already
    queued finish first, then propagates; Ctrl-C (``KeyboardInterrupt``) stops
    everything at once and propagates.
    """
    run_in_lanes(fn, [Lane(list(work), jobs)], on_done=on_done)


def run_in_lanes(
    fn: Callable[[A], Any],
    lanes: Sequence[Lane[K, A]],
    *,
    on_done: Callable[[K], None] | None = None,
) -> None:
    """:func:`run_in_pool` over several pools at once: one per lane (the CPU, each GPU)."""
    lanes = [lane for lane in lanes if lane.work]
    if not lanes:
        return
    context = multiprocessing.get_context("spawn")  # no fork after torch threads exist
    pools: list[tuple[ProcessPoolExecutor, list[Future[Any]]]] = []
    futures: dict[Future[Any], K] = {}
    try:
        for lane in lanes:
            pool = ProcessPoolExecutor(
                max_workers=max(1, min(lane.jobs, len(lane.work))),
                mp_context=context,
                initializer=init_worker,
                initargs=(os.getpid(), lane.gpu),
            )
            mine = [pool.submit(fn, arg) for _, arg in lane.work]
            futures.update(zip(mine, (key for key, _ in lane.work), strict=True))
            pools.append((pool, mine))
        for future in as_completed(futures):
            future.result()
            if on_done is not None:
                on_done(futures[future])
    except Exception:
        for pool, _ in pools:
            pool.shutdown(wait=True)
        raise
    except BaseException:
        for pool, mine in pools:
            stop_pool(pool, mine)
        raise
    for pool, _ in pools:
        pool.shutdown(wait=True)
