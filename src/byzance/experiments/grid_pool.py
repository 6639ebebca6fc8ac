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
from pathlib import Path
from typing import Any, TypeVar

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


def init_worker(parent_pid: int) -> None:
    """Pool initializer: die with the parent ``parent_pid``; leave Ctrl-C to the parent."""
    _die_with_parent_linux()
    if os.name == "posix" and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before the request above took effect
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    # Ctrl-C reaches the whole process group: the parent alone decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
    if not work:
        return
    context = multiprocessing.get_context("spawn")  # no fork after torch threads exist
    pool = ProcessPoolExecutor(
        max_workers=max(1, min(jobs, len(work))),
        mp_context=context,
        initializer=init_worker,
        initargs=(os.getpid(),),
    )
    futures: dict[Future[Any], K] = {}
    try:
        for key, arg in work:
            futures[pool.submit(fn, arg)] = key
        for future in as_completed(futures):
            future.result()
            if on_done is not None:
                on_done(futures[future])
    except Exception:
        pool.shutdown(wait=True)
        raise
    except BaseException:
        stop_pool(pool, list(futures))
        raise
    pool.shutdown(wait=True)
