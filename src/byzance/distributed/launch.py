"""The process entry point under torchrun, its crash supervisor, and the one-machine launcher.

torchrun's agent (torch.distributed.elastic) stops every process of the group
as soon as one of them fails: the right default for all-reduce training, where
nobody can go on without everybody, and the opposite of what a Byzantine-robust
run wants. So, under torchrun, each rank's process is a small supervisor that
runs the rank's training in a child process: a child killed by a signal (a
SIGKILL, the out-of-memory killer) is reported and the supervisor exits 0, so
the agent leaves the other ranks alone and they finish without it. A child that
exits with an error (a bad config, a run that cannot go on) still fails the
whole group, as it should.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

CHILD_ENV = "BYZANCE_DIST_CHILD"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m byzance.distributed",
        description="One rank of a byzance distributed run (start it with torchrun).",
    )
    parser.add_argument("--config", required=True, help="the run's TOML config")
    parser.add_argument("--resume", action="store_true", help="continue from out_dir's checkpoint")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the run already in out_dir"
    )
    return parser


def _supervise(argv: list[str]) -> int:
    env = dict(os.environ, **{CHILD_ENV: "1"})
    child = subprocess.Popen([sys.executable, "-m", "byzance.distributed", *argv], env=env)

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    code = child.wait()
    if code < 0:
        rank = os.environ.get("RANK", "?")
        print(
            f"[byzance dist] rank {rank}: the worker process was killed by signal {-code} "
            f"({signal.Signals(-code).name}); the other ranks go on without it.",
            file=sys.stderr,
            flush=True,
        )
        return 0
    return code


def main(argv: list[str] | None = None) -> int:
    """Run one rank: ``--config run.toml [--resume] [--key value ...]`` (any config key)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "TORCHELASTIC_RUN_ID" in os.environ and CHILD_ENV not in os.environ:
        return _supervise(argv)
    from byzance.distributed.run import run
    from byzance.distributed.topologies import DistributedRunError
    from byzance.errors import ByzanceError
    from byzance.runs.config import load, parse_flags

    args, rest = _parser().parse_known_args(argv)
    code = 0
    try:
        config = load(args.config, parse_flags(rest))
        run(config, resume=args.resume, overwrite=args.overwrite)
    except (ByzanceError, DistributedRunError, RuntimeError) as err:
        rank = os.environ.get("RANK", "?")
        print(f"[byzance dist] rank {rank}: error: {err}", file=sys.stderr, flush=True)
        code = 1
    _exit_now(code)
    return code  # not reached


def _exit_now(code: int) -> None:
    """End the process without the interpreter's shutdown.

    The channel's receiving threads sit inside gloo's blocking waits (on peers
    that may never send again); finalizing the interpreter under them aborts
    the process. Everything the run writes is closed by now.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def torchrun_command(nproc: int, config: str, extra: list[str]) -> list[str]:
    """The torchrun command ``byzance launch`` runs: one machine, ``nproc`` processes."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "byzance.distributed",
        "--config",
        config,
        *extra,
    ]


def launch(nproc: int, config: str, extra: list[str] | None = None) -> int:
    """Start torchrun's launcher for ``nproc`` local processes; returns its exit status."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # n processes share the cores
    return subprocess.call(torchrun_command(nproc, config, list(extra or [])), env=env)
