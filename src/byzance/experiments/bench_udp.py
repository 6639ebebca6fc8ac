"""The UDP transport in real runs: step time against gloo, and accuracy against the drop rate.

``byzance bench udp``: the runner's parameter server with the gradients over
gloo and over UDP at 0% loss, same processes, model and steps.

``byzance bench lossy``: short runs whose workers' datagrams are dropped at
0, 1, 5, 10 and 20%, with the median and Krum (missing coordinates treated
as faulty values, see :func:`byzance.aggregators.aggregate_with_missing`)
against the average with missing coordinates zero-filled; a table and a plot.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from byzance.experiments.bench_dist import RUNNER_MODEL, launch_config

DROPS = (0.0, 0.01, 0.05, 0.1, 0.2)
LOSSY_RULES = (("median", "auto"), ("krum", "auto"), ("average", "zero"))


def _run(nproc: int, config: dict[str, Any], tmp: Path, name: str) -> list[dict[str, Any]]:
    """:func:`launch_config` with a key file for the UDP transport (written once per ``tmp``)."""
    from byzance.distributed.udp import generate_key_file

    keys = tmp / "keys.json"
    if not keys.exists():
        generate_key_file(keys, nproc)
    return launch_config(nproc, {"udp_keys": str(keys), **config}, tmp, name)


def run_udp_bench(
    procs: int = 8, model: str = "mlp-1m", steps: int = 20, warmup: int = 3
) -> list[dict[str, Any]]:
    """Mean step time (ms) of the parameter server over gloo and over UDP at 0% loss."""
    name, params = RUNNER_MODEL[model]
    base = {
        "dataset": "mnist5k",
        "model": name,
        "model_params": params,
        "workers": procs,
        "byzantine": 0,
        "f": 1,
        "aggregator": "median",
        "steps": steps + warmup,
        "eval_every": 10_000,
        "checkpoint_every": 10_000,
        "lr": 0.01,
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for transport in ("gloo", "udp"):
            metrics = _run(procs, {**base, "transport": transport}, Path(tmp), transport)
            timed = metrics[warmup:-1]
            row = {
                "transport": transport,
                "procs": procs,
                "model": model,
                "step_ms": sum(r["step_ms"] for r in timed) / len(timed),
                "wait_ms": sum(r["wait_ms"] for r in timed) / len(timed),
                "coordinates_missing": sum(r.get("coordinates_missing", 0) for r in timed),
            }
            rows.append(row)
    for row in rows:
        row["ratio"] = row["step_ms"] / rows[0]["step_ms"]
    return rows


def run_lossy_sweep(
    out: Path,
    *,
    procs: int = 5,
    steps: int = 150,
    drops: tuple[float, ...] = DROPS,
    datagram_bytes: int = 1_472,
    attack: str = "none",
) -> list[dict[str, Any]]:
    """Final accuracy per (rule, drop rate); writes ``lossy.md``, ``lossy.csv``, ``lossy.png``.

    With an ``attack``, the last rank is Byzantine and runs it (its datagrams
    are dropped like the others'); the files are then named ``lossy_<attack>.*``.
    """
    base = {
        "dataset": "mnist5k",
        "model": "mlp",
        "workers": procs,
        "byzantine": 0 if attack == "none" else 1,
        "attack": attack,
        "f": 1,
        "steps": steps,
        "eval_every": steps,
        "checkpoint_every": 10_000,
        "lr": 0.1,
        "transport": "udp",
        "udp_datagram_bytes": datagram_bytes,
    }
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rule, fill in LOSSY_RULES:
            for drop in drops:
                name = f"{rule}_{fill}_{drop}"
                config = {**base, "aggregator": rule, "udp_fill": fill, "udp_loss": {"drop": drop}}
                metrics = _run(procs, config, Path(tmp), name)
                last = metrics[-1]
                missing = sum(r.get("coordinates_missing", 0) for r in metrics)
                rows.append(
                    {
                        "rule": rule if fill != "zero" else f"{rule} (zero-filled)",
                        "drop": drop,
                        "accuracy": last.get("accuracy", float("nan")),
                        "diverged": bool(last.get("diverged", False)),
                        "missing_per_step": missing / len(metrics),
                        "step_ms": sum(r.get("step_ms", 0.0) for r in metrics) / len(metrics),
                    }
                )
    _write_lossy(rows, out, procs=procs, steps=steps, datagram_bytes=datagram_bytes, attack=attack)
    return rows


def _write_lossy(
    rows: list[dict[str, Any]],
    out: Path,
    *,
    procs: int,
    steps: int,
    datagram_bytes: int,
    attack: str,
) -> None:
    import csv

    from byzance.runs.plots import plot_curves

    stem = "lossy" if attack == "none" else f"lossy_{attack}"
    with (out / f"{stem}.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    rules = list(dict.fromkeys(r["rule"] for r in rows))
    drops = sorted({r["drop"] for r in rows})
    curves = {
        rule: [(100 * r["drop"], r["accuracy"]) for r in rows if r["rule"] == rule]
        for rule in rules
    }
    plot_curves(
        curves, out / f"{stem}.png", ylabel="final test accuracy", xlabel="datagrams dropped (%)"
    )
    lines = [
        f"Final test accuracy after {steps} steps, {procs} processes (parameter server), "
        f"MNIST digits, MLP, gradients over UDP in {datagram_bytes}-byte datagrams with the "
        "given fraction dropped by each sender"
        + ("." if attack == "none" else f"; the last rank is Byzantine ({attack})."),
        "",
        "| rule | " + " | ".join(f"{100 * d:g}%" for d in drops) + " |",
        "| --- | " + " | ".join("---" for _ in drops) + " |",
    ]
    for rule in rules:
        cells = []
        for d in drops:
            r = next(r for r in rows if r["rule"] == rule and r["drop"] == d)
            cells.append("diverged" if r["diverged"] else f"{r['accuracy']:.3f}")
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
