"""LegacyRobustStrategy driven by Flower's legacy types (Parameters, FitRes, ClientProxy)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.common import (
    Code,
    FitRes,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy

from byzance.errors import ToleranceError
from byzance.flower import LegacyRobustStrategy


class Proxy(ClientProxy):
    """A client the server never calls: only its id matters to aggregate_fit."""

    def get_properties(self, ins, timeout, group_id):
        raise NotImplementedError

    def get_parameters(self, ins, timeout, group_id):
        raise NotImplementedError

    def fit(self, ins, timeout, group_id):
        raise NotImplementedError

    def evaluate(self, ins, timeout, group_id):
        raise NotImplementedError

    def reconnect(self, ins, timeout, group_id):
        raise NotImplementedError


def fit_res(*arrays: np.ndarray, num_examples: int = 10) -> FitRes:
    return FitRes(Status(Code.OK, ""), ndarrays_to_parameters(list(arrays)), num_examples, {})


def configured(strategy: LegacyRobustStrategy, sent: list[np.ndarray], n: int) -> list[Proxy]:
    manager = SimpleClientManager()
    proxies = [Proxy(f"c{i}") for i in range(n)]
    for p in proxies:
        manager.register(p)
    strategy.configure_fit(1, ndarrays_to_parameters(sent), manager)
    return proxies


def test_trimmed_mean_of_parameters_worked_by_hand():
    strategy = LegacyRobustStrategy("trimmed_mean", f=1)
    assert strategy.min_fit_clients == 3
    sent = [np.array([1.0, 1.0], np.float32), np.array([[0.0]], np.float32)]
    proxies = configured(strategy, sent, 4)
    models = [(1.0, 1.0), (2.0, 3.0), (3.0, 2.0), (1e8, -1e8)]
    results = [
        (p, fit_res(np.array([a, b], np.float32), np.array([[a]], np.float32)))
        for p, (a, b) in zip(proxies, models, strict=True)
    ]
    params, metrics = strategy.aggregate_fit(1, results, [])
    w, b = parameters_to_ndarrays(params)
    # Trim one value from each side per coordinate: (1, 2, 3, 1e8) -> mean(2, 3);
    # (1, 3, 2, -1e8) -> mean(1, 2).
    np.testing.assert_array_equal(w, [2.5, 1.5])
    np.testing.assert_array_equal(b, [[2.5]])
    assert w.dtype == np.float32 and b.shape == (1, 1)
    assert metrics["byzance-aggregated"] == 4


def test_failures_are_reported_and_too_few_results_raise():
    strategy = LegacyRobustStrategy("krum", f=1)
    proxies = configured(strategy, [np.zeros(2)], 5)
    results = [(p, fit_res(np.ones(2))) for p in proxies[:4]]
    failures = [TimeoutError("client 5 timed out")]
    with pytest.raises(ToleranceError, match=r"4 usable replies \(1 clients failed.*n=5"):
        strategy.aggregate_fit(1, results, failures)

    ok = LegacyRobustStrategy("median", f=1)
    proxies = configured(ok, [np.zeros(2)], 4)
    results = [(p, fit_res(np.full(2, float(i)))) for i, p in enumerate(proxies[:3])]
    failures = [(proxies[3], FitRes(Status(Code.FIT_NOT_IMPLEMENTED, "no fit"), None, 0, {}))]
    params, metrics = ok.aggregate_fit(1, results, failures)
    np.testing.assert_array_equal(parameters_to_ndarrays(params)[0], [1.0, 1.0])
    assert metrics["byzance-failed"] == 1
    assert ok.reports[1].failed == {"c3": "no fit"}


def test_construction_refuses_too_few_fit_clients():
    with pytest.raises(ToleranceError, match="min_fit_clients=7"):
        LegacyRobustStrategy("bulyan", f=1, min_fit_clients=5)


def test_importing_byzance_does_not_import_flower():
    code = (
        "import sys, byzance, byzance.aggregators, byzance.attacks, byzance.sim\n"
        "loaded = sorted(m for m in sys.modules if m == 'flwr' or m.startswith('flwr.'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
