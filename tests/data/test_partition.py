"""Partitioning: disjoint covers, sizes, label skew, determinism, validation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from byzance.data import SCHEMES, partition
from byzance.errors import InvalidParameterError, ShapeError


def cyclic_labels(n: int = 5000, classes: int = 10) -> torch.Tensor:
    return torch.arange(n) % classes


def assert_valid(shards: list[torch.Tensor], n: int, num_workers: int) -> None:
    """Disjoint, covering range(n), non-empty, sorted int64 shards, one per worker."""
    assert len(shards) == num_workers
    assert all(s.dtype == torch.int64 and s.ndim == 1 and len(s) > 0 for s in shards)
    assert all(bool((s[1:] > s[:-1]).all()) for s in shards)
    everything = torch.cat(shards)
    assert len(everything) == n  # no index twice ...
    assert torch.equal(everything.sort().values, torch.arange(n))  # ... and every index


def distinct_classes(labels: torch.Tensor, shards: list[torch.Tensor]) -> list[int]:
    return [len(torch.unique(labels[s])) for s in shards]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_disjoint_cover(scheme: str) -> None:
    labels = cyclic_labels(5003)
    shards = partition(labels, 17, scheme, alpha=0.3, classes_per_worker=2, seed=1)
    assert_valid(shards, 5003, 17)


@pytest.mark.parametrize("n", [10, 11, 99, 1000])
def test_iid_sizes(n: int) -> None:
    shards = partition(torch.zeros(n), 7 if n > 7 else n, "iid")
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_iid_is_random_and_mixed() -> None:
    labels = cyclic_labels(1000)
    shards = partition(labels, 4, "iid", seed=0)
    assert not torch.equal(shards[0], torch.arange(250))  # not the first quarter
    assert distinct_classes(labels, shards) == [10] * 4


def test_iid_accepts_regression_targets() -> None:
    targets = torch.randn(100)
    assert_valid(partition(targets, 3, "iid"), 100, 3)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_deterministic(scheme: str) -> None:
    labels = cyclic_labels(2000)
    a = partition(labels, 8, scheme, alpha=0.5, seed=4)
    b = partition(labels, 8, scheme, alpha=0.5, seed=4)
    c = partition(labels, 8, scheme, alpha=0.5, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_independent_of_torch_global_rng() -> None:
    labels = cyclic_labels(2000)
    torch.manual_seed(0)
    a = partition(labels, 8, "dirichlet", alpha=0.5, seed=4)
    torch.manual_seed(1)
    torch.rand(10)
    b = partition(labels, 8, "dirichlet", alpha=0.5, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def label_skew(labels: torch.Tensor, shards: list[torch.Tensor]) -> tuple[float, float]:
    """(mean distinct classes per worker, mean total-variation distance of a worker's
    label distribution from the global one)."""
    classes = int(labels.max()) + 1
    overall = torch.bincount(labels, minlength=classes) / len(labels)
    tv = [
        0.5 * float((torch.bincount(labels[s], minlength=classes) / len(s) - overall).abs().sum())
        for s in shards
    ]
    return sum(distinct_classes(labels, shards)) / len(shards), sum(tv) / len(tv)


def test_dirichlet_skew_grows_as_alpha_shrinks() -> None:
    labels = cyclic_labels(10000)
    distinct, tv = [], []
    for alpha in (1000.0, 1.0, 0.1, 0.01):
        stats = [
            label_skew(labels, partition(labels, 20, "dirichlet", alpha=alpha, seed=s))
            for s in range(3)
        ]
        distinct.append(sum(d for d, _ in stats) / 3)
        tv.append(sum(t for _, t in stats) / 3)
    assert distinct[0] == 10.0 and tv[0] < 0.05  # nearly i.i.d.
    assert distinct[0] >= distinct[1] > distinct[2] + 2 > distinct[3] + 2
    assert distinct[3] < 2
    assert tv[0] + 0.2 < tv[1] < tv[2] < tv[3]
    assert tv[3] > 0.8  # nearly one class per worker: TV 0.9


def test_dirichlet_size_imbalance() -> None:
    # Label skew also brings size skew; nearly i.i.d. for large alpha.
    labels = cyclic_labels(10000)
    sizes = [len(s) for s in partition(labels, 10, "dirichlet", alpha=1e4, seed=0)]
    assert max(sizes) - min(sizes) < 100
    sizes = [len(s) for s in partition(labels, 10, "dirichlet", alpha=0.1, seed=0)]
    assert max(sizes) > 2 * min(sizes)


def test_dirichlet_never_leaves_a_worker_empty() -> None:
    # Tiny alpha puts each class on ~one worker: most of 50 workers would be empty.
    labels = cyclic_labels(60, classes=3)
    for seed in range(5):
        shards = partition(labels, 50, "dirichlet", alpha=1e-3, seed=seed)
        assert_valid(shards, 60, 50)
    # As many workers as samples: exactly one each.
    shards = partition(cyclic_labels(20), 20, "dirichlet", alpha=0.01)
    assert [len(s) for s in shards] == [1] * 20


@pytest.mark.parametrize(("num_workers", "per"), [(10, 1), (20, 2), (7, 2), (5, 2), (4, 3)])
def test_extreme_classes_per_worker(num_workers: int, per: int) -> None:
    labels = cyclic_labels(6000)
    shards = partition(labels, num_workers, "extreme", classes_per_worker=per, seed=2)
    assert_valid(shards, 6000, num_workers)
    counts = distinct_classes(labels, shards)
    assert max(counts) <= per
    assert counts == [per] * num_workers  # with 600 samples per class, exactly per


def test_extreme_balanced_when_slots_divide() -> None:
    labels = cyclic_labels(6000)
    sizes = [len(s) for s in partition(labels, 20, "extreme", classes_per_worker=2)]
    assert sizes == [300] * 20


def test_extreme_with_uneven_and_sparse_labels() -> None:
    # Class sizes 1, 2, ..., labels not 0..C-1, more workers than some classes' samples.
    labels = torch.repeat_interleave(torch.tensor([3, 8, 40, 41]), torch.tensor([1, 2, 30, 7]))
    shards = partition(labels, 8, "extreme", classes_per_worker=2, seed=0)
    assert_valid(shards, 40, 8)
    assert max(distinct_classes(labels, shards)) <= 2


@pytest.mark.parametrize("scheme", ["dirichlet", "extreme"])
def test_label_skew_refuses_regression(scheme: str) -> None:
    with pytest.raises(InvalidParameterError, match="scheme='iid'"):
        partition(torch.randn(100), 4, scheme)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_workers": 0}, "between 1 and the 100"),
        ({"num_workers": 101}, "between 1 and the 100"),
        ({"num_workers": 2.0}, "integer"),
        ({"num_workers": 4, "scheme": "noniid"}, "iid, dirichlet, extreme"),
        ({"num_workers": 4, "scheme": "dirichlet", "alpha": 0}, "alpha"),
        ({"num_workers": 4, "scheme": "dirichlet", "alpha": -1.0}, "alpha"),
        ({"num_workers": 4, "scheme": "dirichlet", "alpha": float("inf")}, "alpha"),
        ({"num_workers": 4, "scheme": "extreme", "classes_per_worker": 0}, "positive"),
        ({"num_workers": 4, "scheme": "extreme", "classes_per_worker": 11}, "10 classes"),
        ({"num_workers": 4, "scheme": "extreme", "classes_per_worker": 2}, ">= 10"),
    ],
)
def test_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        partition(cyclic_labels(100), **kwargs)


def test_labels_must_be_1d() -> None:
    with pytest.raises(ShapeError, match="1-D"):
        partition(torch.zeros(10, 2, dtype=torch.int64), 2)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    classes=st.integers(1, 12),
    workers_frac=st.floats(0, 1),
    scheme=st.sampled_from(SCHEMES),
    alpha=st.floats(1e-3, 1e3),
    per=st.integers(1, 12),
    seed=st.integers(0, 2**31),
)
def test_always_a_disjoint_cover(
    n: int, classes: int, workers_frac: float, scheme: str, alpha: float, per: int, seed: int
) -> None:
    labels = torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))
    present = len(torch.unique(labels))
    workers = 1 + int(workers_frac * (n - 1))
    if scheme == "extreme":
        per = min(per, present)
        workers = max(workers, min(n, -(-present // per)))
        if workers * per < present:
            return  # refused by validation, tested above
    shards = partition(labels, workers, scheme, alpha=alpha, classes_per_worker=per, seed=seed)
    assert_valid(shards, n, workers)
    if scheme == "extreme":
        assert max(distinct_classes(labels, shards)) <= per
