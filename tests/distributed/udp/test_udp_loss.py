"""Loss injection: seeded, and each effect does what it says."""

from __future__ import annotations

import pytest

from byzance.distributed.udp import LossModel
from byzance.errors import InvalidParameterError

ITEMS = list(range(2000))


def test_lossless_model_keeps_everything_in_order() -> None:
    assert [d for _, d in LossModel().apply(ITEMS, worker=0, step=0)] == ITEMS


def test_draws_are_seeded_by_seed_worker_and_step() -> None:
    model = LossModel(drop=0.3, duplicate=0.2, reorder_window=8, max_delay_s=0.01, seed=4)
    first = model.apply(ITEMS, worker=1, step=5)
    assert first == model.apply(ITEMS, worker=1, step=5)
    assert first != model.apply(ITEMS, worker=2, step=5)
    assert first != model.apply(ITEMS, worker=1, step=6)


def test_drop_and_duplicate_rates() -> None:
    plan = [d for _, d in LossModel(drop=0.2, duplicate=0.1).apply(ITEMS, worker=0, step=0)]
    kept = set(plan)
    assert 0.75 < len(kept) / len(ITEMS) < 0.85
    assert 0.06 < (len(plan) - len(kept)) / len(kept) < 0.14
    assert plan == sorted(plan)  # no reordering asked


def test_reordering_stays_within_windows() -> None:
    plan = [d for _, d in LossModel(reorder_window=10).apply(ITEMS, worker=0, step=0)]
    assert sorted(plan) == ITEMS and plan != ITEMS
    for start in range(0, len(ITEMS), 10):
        assert sorted(plan[start : start + 10]) == ITEMS[start : start + 10]


def test_delays_are_bounded_and_sorted() -> None:
    plan = LossModel(max_delay_s=0.05).apply(ITEMS, worker=0, step=0)
    delays = [t for t, _ in plan]
    assert delays == sorted(delays) and delays[0] >= 0.0 and delays[-1] <= 0.05
    assert sorted(d for _, d in plan) == ITEMS


def test_bad_parameters() -> None:
    with pytest.raises(InvalidParameterError, match="probability"):
        LossModel(drop=1.5)
    with pytest.raises(InvalidParameterError, match="reorder_window"):
        LossModel(reorder_window=-1)
