"""``python -m benchmarks.peers``: the side-by-side benchmark, written to benchmarks/results/peers.md.

Run it from the repository root in the peers environment (``make bench-peers``
creates it and runs this). ``--quick`` runs small sizes only, to check the
harness.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

import byzance

from .byzfl_loader import load_byzfl
from .compare import Settings, run_comparison
from .report import Environment, render
from .step import BYZFL_MODELS, StepConfig, run_steps

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "peers.md"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = any(
        not line.endswith("benchmarks/results/peers.md")
        for line in git("status", "--porcelain").splitlines()
    )
    return f"{byzance.__version__}, commit {commit}{' (with uncommitted changes)' if dirty else ''}"


def _environment(byzfl_version: str, command: str) -> Environment:
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return Environment(
        cpu=_cpu_model(),
        cores=os.cpu_count() or 0,
        threads=torch.get_num_threads(),
        python=platform.python_version(),
        torch=torch.__version__,
        byzfl=byzfl_version,
        byzance=_commit(),
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        command=command,
        load=f"{load} (1, 5, 15 min)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__)
    parser.add_argument("--ns", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--ds", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--step-ns", type=int, nargs="*", default=[10, 20, 50])
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per case, at most")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timed calls per case")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for both libraries (1: stable timings on a shared machine, where "
        "a preempted OpenMP thread stalls the others)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the harness")
    args = parser.parse_args(argv)
    if args.quick:
        args.ns, args.ds, args.step_ns, args.repeat, args.budget = [10], [1000], [10], 2, 0.2

    torch.set_num_threads(args.threads)
    byzfl = load_byzfl()
    command = (
        "make bench-peers"
        if argv is None and not sys.argv[1:]
        else shlex.join(
            ["python", "-m", "benchmarks.peers", *(sys.argv[1:] if argv is None else argv)]
        )
    )
    env = _environment(byzfl.version, command)
    settings = Settings(repeat=args.repeat, budget_s=args.budget)
    start = time.perf_counter()

    def progress(line: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {line}", file=sys.stderr, flush=True)

    rows = run_comparison(byzfl, args.ns, args.ds, settings=settings, progress=progress)
    step_configs = [
        StepConfig(n, max(1, n // 5), model=model) for model in BYZFL_MODELS for n in args.step_ns
    ]
    if 20 in args.step_ns:
        step_configs.append(StepConfig(20, 4, "nnm>trimmed_mean"))
    steps = run_steps(
        byzfl, step_configs, repeat=max(args.repeat, 5), budget_s=4 * args.budget, progress=progress
    )
    settings_text = (
        f"median of at most {settings.repeat} timed calls or {settings.budget_s:g} s per "
        f"case (a ByzFL warm-up slower than {settings.slow_s:g} s is the one measurement); "
        f"whole run {time.perf_counter() - start:.0f} s"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(env, rows, steps, settings_text))
    progress(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
