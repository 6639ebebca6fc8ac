"""Helper processes for the loopback test: a Flower server and its clients, over gRPC on 127.0.0.1.

Flower 1.42's legacy transport (``flwr.server.start_server`` /
``flwr.client.start_client``) carries the rounds. The task is softmax
regression on scikit-learn's digits in plain numpy, so that a client process
imports only numpy and Flower and starts fast.

    python _loopback_run.py server --ports P1,P2 --strategies fedavg,robust --clients 5 --out out.json
    python _loopback_run.py client --ports P1,P2 --partition 0 --clients 5 [--byzantine]

The server runs one federation per port, one after the other; each client
joins them in the same order. The server writes the central test accuracy of
each strategy after every round to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import socket
import time
from pathlib import Path

import numpy as np

ROUNDS = 3
LOCAL_STEPS = 10
LR = 0.5
BYZANTINE_SCALE = 1e3


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits (found without importing scikit-learn): train and test splits."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(next(iter(spec.submodule_search_locations)), "datasets", "data", "digits.csv.gz")
    with gzip.open(path, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",")
    order = np.random.default_rng(0).permutation(len(table))
    x, y = table[order, :64] / 16.0, table[order, 64].astype(np.int64)
    return x[:1400], y[:1400], x[1400:], y[1400:]


def initial_model() -> list[np.ndarray]:
    return [np.zeros((10, 64), np.float32), np.zeros(10, np.float32)]


def accuracy(model: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    w, b = model
    return float(((x @ w.T + b).argmax(axis=1) == y).mean())


def local_train(model: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Full-batch gradient descent on the softmax cross-entropy."""
    w, b = (a.astype(np.float64) for a in model)
    onehot = np.eye(10)[y]
    for _ in range(LOCAL_STEPS):
        logits = x @ w.T + b
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) / len(y)
        w -= LR * g.T @ x
        b -= LR * g.sum(axis=0)
    return [w.astype(np.float32), b.astype(np.float32)]


def run_server(args: argparse.Namespace) -> None:
    from flwr.server import ServerConfig, start_server
    from flwr.server.strategy import FedAvg

    from byzance.flower import LegacyRobustStrategy

    _, _, x_test, y_test = digits()
    out: dict[str, list[float]] = {}

    def evaluate(server_round: int, arrays: list[np.ndarray], config: dict) -> tuple[float, dict]:
        return 0.0, {"accuracy": accuracy(arrays, x_test, y_test)}

    from flwr.common import ndarrays_to_parameters

    common = {
        "min_available_clients": args.clients,
        "fraction_evaluate": 0.0,
        "evaluate_fn": evaluate,
        "initial_parameters": ndarrays_to_parameters(initial_model()),
    }
    for port, name in zip(args.ports.split(","), args.strategies.split(","), strict=True):
        if name == "fedavg":
            strategy = FedAvg(min_fit_clients=args.clients, **common)
        else:
            strategy = LegacyRobustStrategy(
                args.rule, args.f, min_fit_clients=args.clients, **common
            )
        history = start_server(
            server_address=f"127.0.0.1:{port}",
            config=ServerConfig(num_rounds=ROUNDS, round_timeout=60),
            strategy=strategy,
        )
        out[name] = [acc for _, acc in history.metrics_centralized["accuracy"]]
        if name != "fedavg":
            out[name + "-aggregated"] = [len(r.aggregated) for r in strategy.reports.values()]
    Path(args.out).write_text(json.dumps(out))


def run_client(args: argparse.Namespace) -> None:
    from flwr.client import NumPyClient, start_client

    x, y, _, _ = digits()
    idx = np.random.default_rng(1).permutation(len(y))
    part = np.array_split(idx, args.clients)[args.partition]
    x, y = x[part], y[part]

    class DigitsClient(NumPyClient):
        def fit(self, parameters, config):
            model = local_train(parameters, x, y)
            if args.byzantine:  # a huge random update
                rng = np.random.default_rng(len(parameters[0]))
                model = [m + BYZANTINE_SCALE * rng.standard_normal(m.shape) for m in model]
                model = [m.astype(np.float32) for m in model]
            return model, len(y), {}

    for port in args.ports.split(","):
        wait_for_port(int(port), timeout=60)
        start_client(
            server_address=f"127.0.0.1:{port}",
            client=DigitsClient().to_client(),
            insecure=True,
            max_wait_time=60,
        )


def wait_for_port(port: int, timeout: float) -> None:
    """Block until something listens on 127.0.0.1:port (the legacy client does not retry)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no Flower server on 127.0.0.1:{port} after {timeout} s"
                ) from None
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--ports", required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--strategies", default="fedavg,robust")
    parser.add_argument("--rule", default="trimmed_mean")
    parser.add_argument("--f", type=int, default=1)
    parser.add_argument("--out")
    parser.add_argument("--partition", type=int)
    parser.add_argument("--byzantine", action="store_true")
    args = parser.parse_args()
    (run_server if args.role == "server" else run_client)(args)


if __name__ == "__main__":
    main()
