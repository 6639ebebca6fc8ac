"""The rules benchmark on tiny inputs: one row per rule, positive times, a table."""

from __future__ import annotations

import io
import math
import re

import pytest
import torch
from rich.console import Console

from byzance import aggregators
from byzance.errors import UnknownNameError
from byzance.experiments import bench
from byzance.experiments.bench import BenchRow, render_bench, run_bench


@pytest.fixture(autouse=True)
def eager_kernels():
    """Tiny inputs never compile in auto mode; pin that so BYZANCE_COMPILE=always stays fast."""
    mode = aggregators.compile_mode()
    aggregators.set_compile_mode("never")
    yield
    aggregators.set_compile_mode(mode)


def _declared_floor(case: str) -> str:
    """The floor a case is compared to: its rule's, or for Bulyan's phases Krum's and MeaMed's."""
    phases = {bench.BULYAN_SELECTION: "krum", bench.BULYAN_PHASE_2: "meamed"}
    return aggregators.get(phases.get(case, re.split("[ ,]", case)[0])).speed_floor


def test_run_bench_times_every_rule_against_its_floor():
    rows = run_bench(ns=(7,), ds=(64,), repeat=1)
    by_name = {r.rule: r for r in rows}
    assert len(by_name) == len(rows)
    expected = {
        *aggregators.names(),
        bench.PASS,
        bench.GRAM,
        bench.BULYAN_SELECTION,
        bench.BULYAN_PHASE_2,
        bench.CC_ITERATED,
    }
    assert set(by_name) == expected
    assert [r.rule for r in rows[:2]] == [bench.PASS, bench.GRAM]
    for r in rows:
        assert (r.n, r.d) == (7, 64)
        assert r.ms is not None and r.ms > 0, r
        assert r.first_ms is not None and r.first_ms > 0, r
        assert r.target is None and r.met is None  # targets are only set at n=20, d=1e6
        if r.kind == "floor":
            assert r.ratio is None and r.floor is None
            continue
        assert 0 <= r.f <= aggregators.get(re.split("[ ,]", r.rule)[0]).requirement.max_f(7)
        assert r.floor == _declared_floor(r.rule)
        floor = by_name[bench.PASS if r.floor == "pass" else bench.GRAM]
        assert r.floor_ms == floor.ms
        assert math.isfinite(r.ratio) and 0 < r.ratio < 1e6, r
    assert by_name["median"].floor == "pass" and by_name["krum"].floor == "gram"
    assert by_name["median"].f == 1 and by_name["bulyan"].f == 1  # max(1, 7 // 5), n >= 4f + 3
    gm = by_name["geometric_median"]
    assert gm.iterations >= 1 and gm.ms_per_iteration > 0
    cc = by_name[bench.CC_ITERATED]
    assert cc.iterations == bench.CENTERED_CLIPPING_ITERATIONS
    assert cc.ms_per_iteration == pytest.approx(cc.ms / cc.iterations)
    assert all(r.threads == torch.get_num_threads() for r in rows)
    assert by_name["mda"].f == 1 and by_name["mda"].note == ""  # C(7, 1) subsets: f not lowered


def test_targets_are_checked_at_the_target_size(monkeypatch):
    monkeypatch.setattr(bench, "TARGET_N", 7)
    monkeypatch.setattr(bench, "TARGET_D", 64)
    rows = run_bench(ns=(7,), ds=(64,), repeat=1, rules=("krum", "median", "average"))
    by_name = {r.rule: r for r in rows}
    assert set(by_name) == {bench.PASS, bench.GRAM, "krum", "median", "average"}
    assert by_name["krum"].target == 2.0 and by_name["median"].target == 5.0
    assert by_name["krum"].target == aggregators.get("krum").speed_target
    assert by_name["krum"].met == (by_name["krum"].ratio <= 2.0)
    assert by_name["average"].target is None and by_name["average"].met is None


def test_mda_lowers_f_to_a_tractable_number_of_subsets(monkeypatch):
    monkeypatch.setattr(bench, "MDA_MAX_SUBSETS", 1000)
    rows = run_bench(ns=(20,), ds=(8,), repeat=1, rules=("mda",))
    (row,) = [r for r in rows if r.rule == "mda"]
    assert row.f == 2  # C(20, 4) = 4845 and C(20, 3) = 1140 are above 1000, C(20, 2) = 190
    assert "lowered from 4" in row.note and row.ms > 0


def test_pipelines_and_phases_by_name_and_unknown_names():
    rows = run_bench(ns=(7,), ds=(16,), repeat=1, rules=("nnm>trimmed_mean", "bulyan phase 2"))
    by_name = {r.rule: r for r in rows}
    assert by_name["nnm>trimmed_mean"].floor == "gram" and by_name["nnm>trimmed_mean"].ms > 0
    assert by_name["bulyan phase 2"].ms > 0 and "bulyan" not in by_name
    with pytest.raises(UnknownNameError, match="krum"):
        run_bench(ns=(7,), ds=(16,), repeat=1, rules=("krun",))


def test_threads_are_set_for_the_run_and_restored():
    before = torch.get_num_threads()
    rows = run_bench(ns=(7,), ds=(16,), repeat=1, rules=("median",), threads=1)
    assert {r.threads for r in rows} == {1} and torch.get_num_threads() == before
    out = io.StringIO()
    render_bench(rows, Console(file=out, width=200))
    assert "1 torch thread," in out.getvalue()


def test_rules_a_size_cannot_run_are_skipped_with_a_note():
    rows = run_bench(ns=(2,), ds=(4,), repeat=1, rules=("krum", "median"))
    by_name = {r.rule: r for r in rows}
    assert by_name["krum"].ms is None and "needs n >= 3" in by_name["krum"].note
    assert by_name["median"].f == 0 and by_name["median"].ms > 0


def test_render_bench_prints_the_table_and_the_targets():
    rows = run_bench(ns=(7,), ds=(64,), repeat=1, rules=("krum", "median", "bulyan"))
    checked = BenchRow(
        rule="krum", kind="aggregator", n=20, d=10**6, f=4, ms=3.0, first_ms=4.0,
        floor="gram", floor_ms=1.0, target=2.0,
    )  # fmt: skip
    skipped = BenchRow(rule="mda", kind="aggregator", n=2, d=4, f=None, ms=None, first_ms=None)
    out = io.StringIO()
    render_bench([*rows, checked, skipped], Console(file=out, width=200))
    text = out.getvalue()
    for name in ("krum", "median", "bulyan selection", "bulyan phase 2", "x.sum(0)", "mda"):
        assert name in text
    assert "missed" in text and "Targets: 0 of 1 met; missed: krum (3.00x)" in text


def test_phases_and_pipelines_take_their_floors_and_targets_from_the_rules(monkeypatch):
    monkeypatch.setattr(bench, "TARGET_N", 7)
    monkeypatch.setattr(bench, "TARGET_D", 16)
    state = torch.get_rng_state()
    rows = run_bench(ns=(7,), ds=(16,), repeat=2, rules=("bulyan", "bucketing>krum"))
    by_name = {r.rule: r for r in rows}
    krum, meamed = aggregators.get("krum"), aggregators.get("meamed")
    selection, phase_2 = by_name[bench.BULYAN_SELECTION], by_name[bench.BULYAN_PHASE_2]
    assert (selection.floor, selection.target) == (krum.speed_floor, krum.speed_target)
    assert (phase_2.floor, phase_2.target) == (meamed.speed_floor, meamed.speed_target)
    assert by_name["bulyan"].target is None  # no target declared
    pipeline = by_name["bucketing>krum"]
    assert pipeline.floor == "gram" and pipeline.target is None and pipeline.ms > 0
    assert torch.equal(torch.get_rng_state(), state)  # bucketing drew from its own generator
