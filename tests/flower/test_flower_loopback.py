"""End to end over gRPC on 127.0.0.1: a Flower server, four client processes, one Byzantine.

The server runs two federations one after the other with the same clients:
Flower's FedAvg, then byzance's LegacyRobustStrategy (trimmed mean, f=1). The
Byzantine client returns a huge random model each round; FedAvg's model is
destroyed, the robust one learns.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flwr")

HELPER = Path(__file__).with_name("_loopback_run.py")
CLIENTS = 4
TIMEOUT_S = 240  # generous: a loaded machine starts six Python processes


def free_ports(k: int) -> list[int]:
    """k distinct ports that were free a moment ago (bound together, then released)."""
    socks = [socket.socket() for _ in range(k)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def test_robust_strategy_holds_where_fedavg_fails_over_loopback(tmp_path):
    ports = ",".join(map(str, free_ports(2)))
    out = tmp_path / "accuracy.json"
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    common = [sys.executable, str(HELPER)]
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        for role in ["server", *range(CLIENTS)]:
            log = open(tmp_path / f"{role}.log", "w")  # noqa: SIM115 - closed below
            logs.append(log)
            args = ["--ports", ports, "--clients", str(CLIENTS)]
            if role == "server":
                args = ["server", *args, "--strategies", "fedavg,robust", "--out", str(out)]
            else:
                args = ["client", *args, "--partition", str(role)]
                if role == CLIENTS - 1:
                    args.append("--byzantine")
            procs.append(
                subprocess.Popen(
                    [*common, *args], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path
                )
            )
        rc = procs[0].wait(timeout=TIMEOUT_S)
        assert rc == 0, (tmp_path / "server.log").read_text()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        for log in logs:
            log.close()

    accuracy = json.loads(out.read_text())
    assert len(accuracy["fedavg"]) == len(accuracy["robust"]) == 4  # initial + 3 rounds
    assert accuracy["robust"][-1] > 0.85
    assert accuracy["fedavg"][-1] < 0.3
    assert accuracy["robust-aggregated"] == [CLIENTS] * 3
