"""``byzance bench rules`` reports the median of its repetitions, and their minimum."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from rich.console import Console

from byzance import aggregators
from byzance.experiments import bench
from byzance.experiments.bench import render_bench, run_bench


@pytest.fixture(autouse=True)
def eager_kernels():
    mode = aggregators.compile_mode()
    aggregators.set_compile_mode("never")
    yield
    aggregators.set_compile_mode(mode)


def test_ms_is_the_median_and_min_ms_the_minimum(monkeypatch):
    # Every job's calls take, in turn: 100 ms (the warm-up), then 3, 1, 50, 7, 2 ms.
    script = [100.0, 3.0, 1.0, 50.0, 7.0, 2.0]
    calls: dict[int, int] = {}

    def fake_elapsed(fn: Callable[[], Any], device: Any = None) -> float:
        fn()
        i = calls[id(fn)] = calls.get(id(fn), -1) + 1
        return script[i]

    monkeypatch.setattr(bench, "_elapsed_ms", fake_elapsed)
    rows = run_bench(ns=(7,), ds=(16,), repeat=5, rules=("median", "krum"))
    for row in rows:
        assert row.first_ms == 100.0
        assert row.ms == 3.0, row  # median of 3, 1, 50, 7, 2 (the best would be 1)
        assert row.min_ms == 1.0, row
    krum = next(r for r in rows if r.rule == "krum")
    assert krum.ratio == pytest.approx(1.0)  # medians over medians


def test_an_even_number_of_repeats_averages_the_middle_two(monkeypatch):
    script = [100.0, 4.0, 1.0, 8.0, 2.0]
    calls: dict[int, int] = {}

    def fake_elapsed(fn: Callable[[], Any], device: Any = None) -> float:
        fn()
        i = calls[id(fn)] = calls.get(id(fn), -1) + 1
        return script[i]

    monkeypatch.setattr(bench, "_elapsed_ms", fake_elapsed)
    rows = run_bench(ns=(7,), ds=(16,), repeat=4, rules=("median",))
    assert {(r.ms, r.min_ms) for r in rows} == {(3.0, 1.0)}


def test_the_table_says_median_and_shows_the_min():
    rows = run_bench(ns=(7,), ds=(16,), repeat=3, rules=("median",))
    out = io.StringIO()
    render_bench(rows, Console(file=out, width=250))
    text = out.getvalue()
    assert "median of the timed calls" in text and "best of" not in text
    assert "│ min" in text or " min " in text
    assert all(r.min_ms is not None and r.min_ms <= r.ms for r in rows)
