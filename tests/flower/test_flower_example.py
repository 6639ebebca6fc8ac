"""examples/flower_digits.py: its ClientApp and ServerApp run, and the comparison it prints holds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from flwr.app import Context, RecordDict

from byzance.flower.local import InProcessGrid

EXAMPLE = Path(__file__).parents[2] / "examples" / "flower_digits.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("flower_digits_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fedavg_is_destroyed_by_one_byzantine_client_and_the_robust_rule_learns(example):
    table = example.compare("trimmed_mean", 1, clients=5, rounds=3)
    fedavg, robust = table["FedAvg (flwr)"], table["trimmed_mean (byzance)"]
    assert len(fedavg) == len(robust) == 4  # initial model + 3 rounds
    assert robust[-1] > 0.8
    assert fedavg[-1] < 0.3


def test_the_server_app_main_runs_on_a_grid(example, capsys):
    grid = InProcessGrid(
        example.client_app,
        5,
        node_config=lambda i: {"partition-id": i, "num-partitions": 5, "byzantine": i == 4},
    )
    context = Context(
        run_id=1,
        node_id=1,
        node_config={},
        state=RecordDict(),
        run_config={"rule": "nnm>trimmed_mean", "f": 1, "num-server-rounds": 2},
    )
    example.main(grid, context)
    assert "accuracy" in capsys.readouterr().out
