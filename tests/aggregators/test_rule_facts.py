"""A rule carries its facts: declared where it is registered, true of its behaviour.

The facts (``missing``, ``speed_floor``, ``speed_target``, ``carries_center``,
``takes_generator``, ``cost``) are fields of :class:`byzance.aggregators.Rule`;
no module keeps them in a table keyed by the rule's name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import byzance.aggregators as agg
from byzance.aggregators import missing
from byzance.aggregators._registry import MISSING_HANDLING, SPEED_FLOORS
from byzance.errors import InvalidParameterError
from byzance.experiments import bench

ROOT = Path(__file__).resolve().parents[2]
RULES = list(agg.rules())
PIPELINES = ["nnm>trimmed_mean", "bucketing>krum", "clipping>centered_clipping", "arc>median"]


def _ids(rule: agg.Rule) -> str:
    return rule.name


def _inputs(rule: agg.Rule, d: int = 6, seed: int = 0) -> tuple[torch.Tensor, int]:
    """Gaussian inputs (n, d) and f = 1, with n the rule's smallest n for f = 1 (at least 5)."""
    n = max(5, rule.min_n(1))
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), 1


@pytest.mark.parametrize("rule", RULES, ids=_ids)
def test_every_registered_rule_declares_its_facts(rule: agg.Rule) -> None:
    assert rule.missing in MISSING_HANDLING
    assert rule.speed_floor in SPEED_FLOORS
    assert rule.speed_target is None or rule.speed_target >= 1.0
    assert isinstance(rule.carries_center, bool) and isinstance(rule.takes_generator, bool)
    assert isinstance(rule.cost, str) and rule.cost.strip()
    if rule.missing == "coordinate_wise":  # reading the input once is its cost
        assert rule.kind == "aggregator" and rule.speed_floor == "pass"


def test_a_rule_cannot_be_made_without_its_facts() -> None:
    known = dict(
        name="x",
        impl=lambda x, f: x.mean(0),
        requirement=agg.Requirement(0, 1),
        paper="p",
        summary="s",
        cost="O(nd).",
    )
    with pytest.raises(TypeError, match="missing"):
        agg.Rule(**known)  # no missing-coordinate handling, no speed floor
    with pytest.raises(InvalidParameterError, match="missing must be one of"):
        agg.Rule(**known, missing="coordinatewise", speed_floor="pass")
    with pytest.raises(InvalidParameterError, match="speed_floor must be one of"):
        agg.Rule(**known, missing="whole_vectors", speed_floor="sort")
    with pytest.raises(InvalidParameterError, match="per-input parameters"):
        agg.Rule(**known, missing="coordinate_wise", speed_floor="pass", row_params=("w",))


@pytest.mark.parametrize("rule", RULES, ids=_ids)
def test_carries_center_is_accepting_a_center(rule: agg.Rule) -> None:
    x, f = _inputs(rule)
    center = torch.full((x.shape[1],), 3.0, dtype=x.dtype)
    if rule.carries_center:
        moved = rule(x, f, center=center, tau=0.1)
        assert not torch.equal(moved, rule(x, f, tau=0.1))  # the state is used
    else:
        with pytest.raises(InvalidParameterError, match="no parameter 'center'"):
            rule(x, f, center=center)


@pytest.mark.parametrize("rule", RULES, ids=_ids)
def test_takes_generator_is_accepting_a_generator(rule: agg.Rule) -> None:
    x, f = _inputs(rule, seed=1)
    gen = torch.Generator().manual_seed(7)
    if rule.takes_generator:
        first = rule(x, f, generator=torch.Generator().manual_seed(7))
        assert torch.equal(first, rule(x, f, generator=torch.Generator().manual_seed(7)))
        bound = rule.with_generator(gen)
        assert bound.defaults["generator"] is gen
        assert torch.equal(bound(x, f), first)
        seeded = rule.partial(seed=3)
        assert seeded.with_generator(gen) is seeded  # an explicit seed wins
    else:
        with pytest.raises(InvalidParameterError, match="no parameter 'generator'"):
            rule(x, f, generator=gen)
        assert rule.with_generator(gen) is rule


@pytest.mark.parametrize("rule", [r for r in RULES if r.missing == "coordinate_wise"], ids=_ids)
def test_a_coordinate_wise_rule_reads_only_its_coordinates_column(rule: agg.Rule) -> None:
    x, _ = _inputs(rule, d=5, seed=2)
    f = (x.shape[0] - 1) // 2
    out = rule(x, f)
    for j in range(x.shape[1]):
        torch.testing.assert_close(rule(x[:, j : j + 1], f)[0], out[j], rtol=1e-12, atol=0)
    other = x.clone()
    noise = torch.randn(x.shape[0], x.shape[1] - 1, generator=torch.Generator().manual_seed(4))
    other[:, 1:] = 1e6 * noise.to(x.dtype)
    assert rule(other, f)[0] == out[0]


@pytest.mark.parametrize("name", PIPELINES)
def test_a_pipeline_derives_its_facts_from_its_stages(name: str) -> None:
    pipeline = agg.get(name)
    stages = pipeline.stages
    assert pipeline.missing == "whole_vectors"
    assert pipeline.carries_center == stages[-1].carries_center  # the last stage's center
    assert pipeline.takes_generator == any(s.takes_generator for s in stages)
    dearest = "gram" if any(s.speed_floor == "gram" for s in stages) else "pass"
    assert pipeline.speed_floor == dearest
    assert all(s.cost in pipeline.cost for s in stages)
    assert pipeline.speed_target is None


def test_a_pipeline_binds_a_generator_to_its_random_stages() -> None:
    x = torch.randn(9, 4, generator=torch.Generator().manual_seed(3))
    pipeline = agg.get("bucketing>krum")
    bound = pipeline.with_generator(torch.Generator().manual_seed(11))
    again = pipeline.with_generator(torch.Generator().manual_seed(11))
    assert bound.takes_generator and torch.equal(bound(x, 1), again(x, 1))
    plain = agg.get("nnm>median")
    assert not plain.takes_generator
    assert plain.with_generator(torch.Generator()) is plain


def test_no_table_keyed_by_rule_names_is_left() -> None:
    assert not hasattr(missing, "COORDINATE_WISE")
    assert not hasattr(bench, "FLOORS") and not hasattr(bench, "TARGETS")
    names = set(agg.names())
    offenders = []
    for path in [*sorted((ROOT / "src" / "byzance").rglob("*.py")), ROOT / "docs/gen/reference.py"]:
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:  # module level: tables, not local choices
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            if isinstance(value, ast.Call) and getattr(value.func, "id", "") in (
                "frozenset",
                "set",
            ):
                value = value.args[0] if value.args else None
            keys = (
                value.keys
                if isinstance(value, ast.Dict)
                else value.elts
                if isinstance(value, ast.Set)
                else []
            )
            keyed = {k.value for k in keys if isinstance(k, ast.Constant)} & names
            if len(keyed) >= 2:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {sorted(keyed)}")
    assert not offenders, f"facts about rules kept by name outside the rules: {offenders}"
