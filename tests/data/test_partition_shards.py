"""The label-sorted shard partition (McMahan et al. 2017; Karimireddy et al. ICLR 2022)."""

from __future__ import annotations

import pytest
import torch

from byzance.data import SCHEMES, partition
from byzance.errors import InvalidParameterError
from byzance.runs.config import load


def _sorted_shards(labels: torch.Tensor, count: int) -> list[torch.Tensor]:
    """The label-sorted indices (stable) cut into ``count`` near-equal contiguous shards."""
    order = torch.sort(labels, stable=True).indices
    n = len(labels)
    return [order[j * n // count : (j + 1) * n // count].sort().values for j in range(count)]


def _as_shards(worker: torch.Tensor, shards: list[torch.Tensor]) -> list[int]:
    """Which of ``shards`` make up ``worker``'s indices (fails unless exactly a union of them)."""
    members = set(worker.tolist())
    chosen = [j for j, s in enumerate(shards) if len(s) and set(s.tolist()) <= members]
    assert sum(len(shards[j]) for j in chosen) == len(worker)
    return chosen


def test_shards_is_a_scheme() -> None:
    assert "shards" in SCHEMES


def test_workers_hold_contiguous_label_sorted_shards() -> None:
    # Uneven classes, labels in scrambled order: shards straddle class boundaries.
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 7, (3001,), generator=g)
    workers = partition(labels, 10, "shards", shards_per_worker=3, seed=1)
    shards = _sorted_shards(labels, 30)
    dealt = [_as_shards(w, shards) for w in workers]
    assert all(len(d) == 3 for d in dealt)
    assert sorted(j for d in dealt for j in d) == list(range(30))  # each shard dealt once
    everything = torch.cat(workers)
    assert torch.equal(everything.sort().values, torch.arange(3001))  # disjoint and covering


def test_standard_setting_gives_each_worker_one_or_two_classes() -> None:
    # MNIST-like: 10 equal classes, 20 workers of 2 shards: 40 shards, each of one class.
    labels = torch.arange(6000) % 10
    workers = partition(labels, 20, "shards", seed=3)  # shards_per_worker = 2, the default
    classes = [len(torch.unique(labels[w])) for w in workers]
    assert max(classes) <= 2 and min(classes) >= 1
    assert [len(w) for w in workers] == [300] * 20
    # Label skew: far from i.i.d. (which would give 10 classes each).
    assert sum(classes) / len(classes) < 2.5


def test_seeded_and_independent_of_the_global_rng() -> None:
    labels = torch.arange(2000) % 10
    torch.manual_seed(0)
    a = partition(labels, 8, "shards", seed=4)
    torch.manual_seed(1)
    b = partition(labels, 8, "shards", seed=4)
    c = partition(labels, 8, "shards", seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize(("n", "workers", "per"), [(10, 10, 2), (7, 5, 3), (100, 3, 1)])
def test_more_shards_than_samples_leaves_no_worker_empty(n: int, workers: int, per: int) -> None:
    labels = torch.arange(n) % 3
    shards = partition(labels, workers, "shards", shards_per_worker=per, seed=0)
    assert all(len(s) > 0 for s in shards)
    assert torch.equal(torch.cat(shards).sort().values, torch.arange(n))


@pytest.mark.parametrize("per", [0, -1, 1.5, True])
def test_shards_per_worker_must_be_a_positive_integer(per: object) -> None:
    with pytest.raises(InvalidParameterError, match="shards_per_worker"):
        partition(torch.arange(100) % 10, 4, "shards", shards_per_worker=per)


def test_refuses_regression_targets() -> None:
    with pytest.raises(InvalidParameterError, match="scheme='iid'"):
        partition(torch.randn(100), 4, "shards")


def test_run_config_selects_it_and_passes_shards_per_worker() -> None:
    from byzance.runs.build import build_training

    config = load(
        None,
        {
            "dataset": "digits",
            "model": "logistic",
            "workers": 5,
            "byzantine": 0,
            "partition": "shards",
            "shards_per_worker": 1,
        },
    )
    data, shards, _, _ = build_training(config)
    y = data.y_train
    classes = [len(torch.unique(y[s])) for s in shards]
    assert max(classes) <= 3  # one shard each: ~ a fifth of the sorted labels (10 classes)
    expected = partition(y, 5, "shards", shards_per_worker=1, seed=config.seed)
    assert all(torch.equal(a, b) for a, b in zip(shards, expected, strict=True))
