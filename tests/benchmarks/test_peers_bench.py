"""The ByzFL side-by-side harness (benchmarks/peers) without ByzFL: byzance's side, on tiny sizes.

ByzFL itself lives only in .venv-peers (``make bench-peers``); here a fake
peer, written from ByzFL's documented definitions, stands in for it, so that
the timing, agreement, fallback and report logic cannot rot unnoticed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.peers import byzfl_loader, compare, report, rules, step, timing  # noqa: E402

QUICK = compare.Settings(repeat=1, budget_s=0.0)


# -- a fake ByzFL: a few classes, from ByzFL's documented definitions ---------------------
class Average:
    def __call__(self, x):
        return x.mean(0)


class Median:
    """torch.quantile(q=0.5) on tensors (refuses more than 2**24 elements), np.median on arrays."""

    limit = 2**24

    def __call__(self, x):
        if isinstance(x, np.ndarray):
            return np.median(x, axis=0)
        if x.numel() > self.limit:
            raise RuntimeError("quantile() input tensor is too large")
        return torch.quantile(x, 0.5, dim=0)


class WrongMedian:
    def __call__(self, x):
        return x.mean(0)


class Krum:
    """Scores over the n - f - 1 nearest neighbours (ByzFL's count)."""

    def __init__(self, f):
        self.f = f

    def __call__(self, x):
        n = len(x)
        dist = torch.cdist(x, x) ** 2
        scores = torch.sort(dist, dim=1).values[:, 1 : n - self.f].sum(1)
        return x[int(torch.argmin(scores))]


class Bucketing:
    """Global-generator permutation, floor(n / s) buckets of s, the rest averaged last."""

    def __init__(self, s):
        self.s = s

    def __call__(self, x):
        x = x[torch.randperm(len(x))]
        full = len(x) // self.s
        out = x[: full * self.s].reshape(full, self.s, -1).mean(1)
        if full * self.s < len(x):
            out = torch.cat([out, x[full * self.s :].mean(0, keepdim=True)])
        return out


def fake_peer(**overrides) -> SimpleNamespace:
    classes = {"Average": Average, "Median": Median, "Krum": Krum, "Bucketing": Bucketing}
    classes.update(overrides)
    namespace = SimpleNamespace(**classes)
    return SimpleNamespace(aggregators=namespace, preaggregators=namespace)


# -- byzance's side on tiny sizes -----------------------------------------------------------
def test_every_shared_rule_runs_on_byzance_side():
    rows = compare.run_comparison(None, [10], [64], settings=QUICK)
    by_rule = {row.rule: row for row in rows}
    assert {compare.FLOOR_PASS, compare.FLOOR_GRAM} <= set(by_rule)
    for rule in rules.SHARED_RULES:
        row = by_rule[rule.name]
        assert row.ours is not None, (rule.name, row.ours_note)
        assert row.ours.median_ms > 0 and row.theirs is None
        assert row.f == rules.bench_f(10) == 2


def test_every_shared_rule_names_a_byzfl_class_and_a_reference():
    case = rules.make_case(10, 32)
    for rule in rules.SHARED_RULES:
        assert rule.byzfl_name[0].isupper()
        out = rule.ours(case.x, case)
        reference = rule.compare_with(case, out)
        assert reference is not None and reference.shape[-1] == 32


def test_make_case_shapes_and_byzantine_rows():
    case = rules.make_case(20, 100, seed=3)
    assert case.x.shape == (20, 100) and case.x.dtype == torch.float32 and case.f == 4
    honest_mean = case.x[:16].mean(0)
    assert torch.allclose(case.x[16:].mean(0), -4 * honest_mean, atol=1.0)
    assert case.clip_c == pytest.approx(float(case.x.norm(dim=1).median()))
    assert torch.equal(rules.make_case(20, 100, seed=3).x, case.x)  # deterministic


def test_byzfl_cases_too_long_or_too_large_are_skipped_with_a_reason():
    mda, nnm = rules.shared_rule("mda"), rules.shared_rule("nnm")
    assert mda.theirs_skip(20, 10**6, 4) is None  # C(20, 4) = 4845 subsets: run
    assert "C(50, 10)" in mda.theirs_skip(50, 10**6, 10)
    assert nnm.theirs_skip(20, 10**6, 4) is None  # 1.2 GiB gather: run
    assert "GiB" in nnm.theirs_skip(50, 10**6, 10)
    with pytest.raises(KeyError):
        rules.shared_rule("bulyan")


# -- against a fake peer: agreement, definitions, fallback ------------------------------------
@pytest.mark.parametrize("name", ["average", "median", "krum", "bucketing"])
def test_outputs_agree_with_a_peer_of_the_same_definitions(name):
    case = rules.make_case(11, 257, seed=1)  # odd n: the last bucket is smaller
    row = compare.compare_rule(rules.shared_rule(name), fake_peer(), case, QUICK)
    assert row.theirs is not None and row.theirs_note == ""
    assert row.agreement is not None and row.agreement.agree, row.agreement
    assert row.speedup is not None and row.speedup > 0


def test_krum_is_compared_at_byzfl_neighbour_count():
    """ByzFL's Krum(f) counts n - f - 1 neighbours: byzance's Krum at f - 1."""
    case = rules.make_case(10, 50, seed=2)
    krum = rules.shared_rule("krum")
    theirs = Krum(case.f)(case.x)
    assert torch.equal(krum.compare_with(case, krum.ours(case.x, case)), theirs)


def test_a_peer_that_computes_something_else_is_flagged():
    case = rules.make_case(10, 64)
    row = compare.compare_rule(
        rules.shared_rule("median"), fake_peer(Median=WrongMedian), case, QUICK
    )
    assert row.agreement is not None and not row.agreement.agree
    assert "no" in str(row.agreement) and "vs float64" in str(row.agreement)
    # byzance's median is exact up to float32 rounding; the "median" that averages is not
    assert row.agreement.ours_error < 1e-6 < row.agreement.theirs_error


def test_numpy_path_is_timed_when_the_torch_path_raises(monkeypatch):
    monkeypatch.setattr(Median, "limit", 100)
    case = rules.make_case(10, 64)
    row = compare.compare_rule(rules.shared_rule("median"), fake_peer(), case, QUICK)
    assert row.theirs is not None and "numpy path" in row.theirs_note
    assert "too large" in row.theirs_note
    assert row.agreement is not None and row.agreement.agree


def test_a_peer_failing_both_ways_is_reported_not_raised():
    class Broken:
        def __call__(self, x):
            raise ValueError("nope")

    case = rules.make_case(10, 16)
    row = compare.compare_rule(rules.shared_rule("average"), fake_peer(Average=Broken), case, QUICK)
    assert row.theirs is None and row.agreement is None
    assert "fails on torch" in row.theirs_note and row.ours is not None


# -- timing and agreement ----------------------------------------------------------------------
def test_agreement_tolerances_and_shapes():
    a = torch.tensor([1.0, 2.0, 3.0])
    assert timing.agreement(a, a.numpy()).agree
    assert timing.agreement(a + 1e-7, a).agree
    off = timing.agreement(a + torch.tensor([0.0, 0.0, 0.1]), a)
    assert not off.agree and off.max_abs_diff == pytest.approx(0.1, rel=1e-4)
    assert (off.mismatched, off.total) == (1, 3) and "1 of 3 differ" in str(off)
    assert not timing.agreement(a, a[:2]).agree
    assert timing.agreement(torch.tensor([float("inf")]), torch.tensor([float("inf")])).agree
    assert not timing.agreement(torch.tensor([float("nan")]), torch.tensor([1.0])).agree


def test_interleaved_timing_gives_fresh_inputs_and_stops_slow_calls():
    calls = {"a": 0, "b": 0}
    inputs = []

    def make_input():
        inputs.append(object())
        return inputs[-1]

    def call(name):
        def run(x):
            assert x is inputs[-1]  # made just before this call
            calls[name] += 1
            return name

        return run

    results = timing.measure_interleaved(
        [timing.Timed(call("a"), make_input), timing.Timed(call("b"), make_input, slow_s=0.0)],
        repeat=3,
        budget_s=60.0,
    )
    assert calls == {"a": 4, "b": 1}  # a: warm-up + 3 rounds; b: its warm-up was "slow"
    (ta, out_a), (tb, out_b) = results
    assert (ta.reps, tb.reps, out_a, out_b) == (3, 1, "a", "b")
    assert tb.median_ms == tb.first_ms


# -- simulated step, report, loader ------------------------------------------------------------
def tiny_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))


def test_byzance_step_runs_and_updates_the_model():
    config = step.StepConfig(n=5, f=1, batch=4, batches_per_worker=2)
    torch.manual_seed(0)
    model = tiny_model()
    before = [p.clone() for p in model.parameters()]
    step.byzance_step(model, step.synthetic_data(config), config)()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))

    rows = step.run_steps(
        None,
        [config, step.StepConfig(n=5, f=1, rule="nnm>trimmed_mean", batch=4)],
        model_factory=tiny_model,
        repeat=1,
        budget_s=0.0,
    )
    assert [r.config.rule for r in rows] == ["trimmed_mean", "nnm>trimmed_mean"]
    assert all(r.ours and r.floor and r.theirs is None and r.params == 7850 for r in rows)
    with pytest.raises(ValueError, match="ByzFL equivalent"):
        step.run_steps(None, [step.StepConfig(5, 1, rule="krum")], model_factory=tiny_model)


def test_report_renders_targets_verdicts_and_definitions():
    case = rules.make_case(report.TARGET_N, 64)
    fast = timing.Timing(1.0, 1.0, 1)

    def row(name, theirs_ms, ours=fast):
        return compare.RuleRow(
            name, case.n, report.TARGET_D, case.f, ours, timing.Timing(theirs_ms, theirs_ms, 1)
        )

    floor = compare.RuleRow(
        compare.FLOOR_PASS, case.n, report.TARGET_D, case.f, timing.Timing(0.5, 0.5, 1), None
    )
    rows = [floor, row("median", 20.0), row("average", 2.0)]
    assert report.verdict(rows[1], rules.shared_rule("median"), floor.ours) == "met"
    assert "out of reach" in report.verdict(rows[2], rules.shared_rule("average"), floor.ours)
    assert "missed: byzance" in report.verdict(
        row("clipping", 30.0), rules.shared_rule("clipping"), floor.ours
    )  # 30x < 50x, and ByzFL takes 60x the floor: byzance's fault
    # Centered clipping needs two dependent passes: 10x asks ByzFL for 20 floors or more.
    clip = rules.shared_rule("centered_clipping")
    assert clip.passes == 2
    assert "needs 2 passes" in report.verdict(row("centered_clipping", 7.5), clip, floor.ours)
    slow = timing.Timing(2.0, 2.0, 1)
    assert "missed: byzance" in report.verdict(
        row("centered_clipping", 15.0, slow), clip, floor.ours
    )
    assert report.floor_name("krum") == compare.FLOOR_GRAM  # the rule's own speed_floor
    assert report.floor_name("median") == compare.FLOOR_PASS
    env = report.Environment("cpu", 2, 2, "3.11", "2.13", "0.0.11", "0.1.0", "now", "cmd", "0")
    text = report.render(env, rows, [], "settings")
    assert "## Targets at n = 20" in text and "| median | 20.00 | 1.00 | 20.0x | 10x |" in text
    assert "n - f - 2" in text and "## One simulated training step" in text


def test_loader_says_how_to_get_byzfl_when_missing(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(byzfl_loader.ByzFLUnavailableError, match="make bench-peers"):
        byzfl_loader.load_byzfl()


def test_step_verdicts():
    config = step.StepConfig(20, 4)

    def row(theirs_ms, ours_ms, floor_ms):
        return step.StepRow(
            config,
            1,
            timing.Timing(ours_ms, ours_ms, 1),
            timing.Timing(theirs_ms, theirs_ms, 1),
            timing.Timing(floor_ms, floor_ms, 1),
        )

    assert report.step_verdict(row(100.0, 10.0, 5.0)) == "met"
    assert "out of reach" in report.step_verdict(row(20.0, 10.0, 5.0))  # ByzFL 4x its floor
    assert report.step_verdict(row(100.0, 50.0, 5.0)) == "missed"
