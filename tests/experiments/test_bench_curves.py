"""Cost curves on tiny inputs: one row per case and n, times, peak memory, plot and CLI."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from byzance import aggregators
from byzance.cli import app
from byzance.errors import InvalidParameterError, UnknownNameError
from byzance.experiments import bench, bench_render
from byzance.experiments.bench_curves import curve_ds, measure_memory, run_curves
from byzance.experiments.bench_render import MARK_END, MARK_START, curves_markdown, write_curves

RULES = ("median", "krum", "nnm", "bulyan")
CASES = {bench.PASS, bench.GRAM, *RULES, bench.BULYAN_SELECTION, bench.BULYAN_PHASE_2}


@pytest.fixture(autouse=True)
def eager_kernels():
    """Tiny inputs never compile in auto mode; pin that (the memory process inherits it)."""
    mode = aggregators.compile_mode()
    aggregators.set_compile_mode("never")
    yield
    aggregators.set_compile_mode(mode)


@pytest.fixture(scope="module")
def curves():
    mode = aggregators.compile_mode()
    aggregators.set_compile_mode("never")
    try:
        return run_curves(ns=(4, 8), ds=(100, 10_000), max_elements=10_000, repeat=1, rules=RULES)
    finally:
        aggregators.set_compile_mode(mode)


def test_one_row_per_case_and_n_with_positive_times_and_memory(curves):
    n_rows = [r for r in curves.rows if r.axis == "n"]
    assert sorted((r.bench.rule, r.bench.n) for r in n_rows) == sorted(
        (name, n) for name in CASES for n in (4, 8)
    )
    for r in n_rows:
        assert r.bench.n * r.bench.d == 10_000
        assert r.bench.ms is not None and math.isfinite(r.bench.ms) and r.bench.ms > 0, r
        assert r.extra_bytes is not None and r.extra_bytes >= 0, r
        assert r.extra_ratio == r.extra_bytes / (4 * 10_000)
        assert r.extra_ratio < 1e3  # a few MiB of resident noise at most, over 39 KiB
        if r.bench.kind != "floor":
            assert r.bench.ratio is not None and r.bench.ratio > 0
    assert curves.memory_method == "rss"
    # the d curve: n = 20, d capped at 10_000 // 20 = 500; time only
    d_rows = [r for r in curves.rows if r.axis == "d"]
    assert sorted({(r.bench.n, r.bench.d) for r in d_rows}) == [(20, 100), (20, 500)]
    assert all(r.extra_bytes is None and r.bench.ms > 0 for r in d_rows)


def test_markdown_section_is_rewritten_between_its_markers(curves, tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(bench_render, "plot_curves", lambda c, path: drawn.append(path))
    out = tmp_path / "docs" / "results.md"
    out.parent.mkdir()
    out.write_text(f"# Results\n\nbefore\n\n{MARK_START}\nold\n{MARK_END}\n\nafter\n")
    image = write_curves(curves, out, "byzance bench rules --curves")
    assert image == tmp_path / "docs" / "img" / "bench_curves.png" and drawn == [image]
    text = out.read_text()
    assert text.startswith("# Results\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "old" not in text and text.count(MARK_START) == text.count(MARK_END) == 1
    assert "](img/bench_curves.png)" in text
    long_rows = [
        line for line in text.splitlines() if line.startswith(("| median | 4 |", "| median | 8 |"))
    ]
    assert len(long_rows) == 2  # the n table's rows of median, at n = 4 and 8
    assert "peak extra MiB" in text and "x input" in text
    other = tmp_path / "notes.md"
    other.write_text("no markers\n")
    with pytest.raises(InvalidParameterError, match="bench-curves:start"):
        write_curves(curves, other, "x")


def test_markdown_lists_every_case_in_the_ratio_table(curves):
    text = curves_markdown(curves, "cmd", "img/c.png")
    for name in CASES:
        assert f"| {name} | " in text
    assert "n=4" in text and "d=1e4" not in text  # d capped at 500


def test_slow_cases_are_timed_once():
    rows = bench.run_bench(ns=(5,), ds=(64,), repeat=3, rules=("median",), once_over_ms=0.0)
    assert all("timed once (a call over 0 s)" in r.note for r in rows), rows
    assert all(r.ms == r.min_ms for r in rows)


def test_memory_counts_what_a_call_allocates():
    """nnm returns a fresh (n, d) tensor, x.sum(0) a (d,) one, x @ x.T an (n, n) one."""
    n, d = 8, 262_144  # an 8 MiB input
    got = measure_memory(n, d, ("nnm",))
    assert set(got) == {bench.PASS, bench.GRAM, "nnm"}
    assert got["nnm"][0] >= 0.95 * n * d * 4
    assert got[bench.PASS][0] < 4 * 2**20  # 1 MiB, and the counters' resolution
    assert got[bench.GRAM][0] < 2**20


def test_curve_ds_are_capped_and_distinct():
    assert curve_ds(10**8) == [10_000, 100_000, 1_000_000, 5_000_000]
    assert curve_ds(10_000) == [500]


def test_unknown_rule_raises_before_timing():
    with pytest.raises(UnknownNameError):
        run_curves(ns=(4,), max_elements=100, rules=("no_such_rule",), memory=False)


def test_cli_curves_writes_the_section_with_memory_that_counts_the_output(tmp_path):
    """nnm returns an (n, d) tensor: its peak extra memory is at least most of the input's."""
    out = tmp_path / "curves.md"
    n, d = 8, 262_144  # an 8 MiB input
    args = ["bench", "rules", "--curves", "--n", str(n), "--d", "100", "--rule", "nnm"]
    args += ["--max-elements", str(n * d), "--repeat", "1", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.startswith(MARK_START) and text.rstrip().endswith(MARK_END)
    assert "`byzance bench rules --curves --n 8 --d 100 --rule nnm --repeat 1" in text
    assert (tmp_path / "img" / "bench_curves.png").stat().st_size > 10_000  # the plot
    rows = {
        line.split(" | ")[0][2:]: line.strip("| ").split(" | ")
        for line in text.splitlines()
        if line.startswith(("| nnm | 8 |", f"| {bench.PASS} | 8 |"))
    }
    nnm_mib, nnm_ratio = float(rows["nnm"][-2]), float(rows["nnm"][-1].rstrip("x"))
    sum_mib = float(rows[bench.PASS][-2])
    assert nnm_ratio >= 0.9 and nnm_mib >= 0.9 * 8
    assert sum_mib < 4  # x.sum(0): a (d,) result, 1 MiB
