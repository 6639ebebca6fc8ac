"""Bad inputs to the rules, one row each: a clear error, or a finite output ("survived").

Rows come from the "Hardening the edges" review: parameters of the wrong type,
finite inputs near the dtype's largest value, inputs on the meta device, and
the pipeline's minimum n for a huge f.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from byzance import aggregators
from byzance.aggregators._pipeline import Pipeline
from byzance.aggregators._registry import Rule
from byzance.errors import InvalidParameterError, NonFiniteOutputError, ShapeError

F32_MAX = torch.finfo(torch.float32).max


def _rows(n: int = 9, d: int = 4) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(0))


def _at_max(n: int = 9, d: int = 3) -> torch.Tensor:
    return torch.full((n, d), F32_MAX)


def _near_max(n: int = 9, d: int = 3) -> torch.Tensor:
    return _rows(n, d).clamp(-1, 1) * 3.3e38


def _huge_norm_rows() -> torch.Tensor:
    return torch.randn(9, 50, generator=torch.Generator().manual_seed(1)) * 2e19


@dataclass(frozen=True)
class Row:
    id: str
    call: Callable[[], Any]
    error: type[Exception] | None = None  # None: "survived" (a finite result)
    match: str = ""


def _param(rule: str, **params: Any) -> Callable[[], Any]:
    return lambda: aggregators.get(rule)(_rows(), 1, **params)


def _bind(rule: str, **params: Any) -> Callable[[], Any]:
    return lambda: aggregators.get(rule, **params)


def _run(rule: str, x: Callable[[], torch.Tensor], f: int = 1) -> Callable[[], Any]:
    return lambda: aggregators.get(rule)(x(), f)


def _boom(x: torch.Tensor, f: int) -> torch.Tensor:
    return torch.full_like(x, float("inf"))


_OVERFLOWING = Rule(
    name="overflowing_stage",
    impl=_boom,
    requirement=aggregators.Requirement(0, 1),
    paper="test",
    summary="returns inf",
    cost="O(nd)",
    missing="whole_vectors",
    speed_floor="pass",
    kind="preaggregator",
)

ROWS = [
    # -- parameters of the wrong type: at call time and at binding time ------------
    Row(
        "multi_krum m='3'",
        _param("multi_krum", m="3"),
        InvalidParameterError,
        "multi_krum: parameter m",
    ),
    Row(
        "multi_krum m=2.5",
        _param("multi_krum", m=2.5),
        InvalidParameterError,
        "parameter m must be an integer",
    ),
    Row("multi_krum m=True", _param("multi_krum", m=True), InvalidParameterError, "got True"),
    Row("multi_krum m=3.0 (integral)", _param("multi_krum", m=3.0)),
    Row("get multi_krum m='3'", _bind("multi_krum", m="3"), InvalidParameterError, "multi_krum"),
    Row(
        "bulyan selection=None",
        _param("bulyan", selection=None),
        InvalidParameterError,
        "parameter selection",
    ),
    Row(
        "centered_clipping tau='1'",
        _param("centered_clipping", tau="1"),
        InvalidParameterError,
        "parameter tau must be a number",
    ),
    Row(
        "centered_clipping tau=nan",
        _param("centered_clipping", tau=float("nan")),
        InvalidParameterError,
        "parameter tau",
    ),
    Row(
        "centered_clipping iterations=1.5",
        _param("centered_clipping", iterations=1.5),
        InvalidParameterError,
        "parameter iterations",
    ),
    Row(
        "clipping c='1'", _param("clipping", c="1"), InvalidParameterError, "clipping: parameter c"
    ),
    Row("clipping c=True", _param("clipping", c=True), InvalidParameterError, "parameter c"),
    Row(
        "bucketing seed='a'", _param("bucketing", seed="a"), InvalidParameterError, "parameter seed"
    ),
    Row(
        "bucketing generator=5",
        _param("bucketing", generator=5),
        InvalidParameterError,
        "parameter generator",
    ),
    Row("bucketing s='2'", _bind("bucketing", s="2"), InvalidParameterError, "parameter s"),
    Row(
        "geometric_median init='bogus'",
        _param("geometric_median", init="bogus"),
        InvalidParameterError,
        "parameter init",
    ),
    Row(
        "geometric_median max_iter='5'",
        _param("geometric_median", max_iter="5"),
        InvalidParameterError,
        "parameter max_iter",
    ),
    Row(
        "geometric_median nu=None",
        _param("geometric_median", nu=None),
        InvalidParameterError,
        "parameter nu",
    ),
    Row("mda max_subsets=1e6 (integral float)", _param("mda", max_subsets=1e6)),
    Row(
        "mda max_subsets='many'",
        _param("mda", max_subsets="many"),
        InvalidParameterError,
        "parameter max_subsets",
    ),
    # -- parameters out of range, refused where they are bound -----------------------
    Row("get multi_krum m=0", _bind("multi_krum", m=0), InvalidParameterError, "need m >= 1"),
    Row("get bucketing s=0", _bind("bucketing", s=0), InvalidParameterError, "need s >= 1"),
    Row(
        "get bucketing seed=-1",
        _bind("bucketing", seed=-1),
        InvalidParameterError,
        "need seed >= 0",
    ),
    Row("get clipping c=0", _bind("clipping", c=0), InvalidParameterError, "need c > 0"),
    Row(
        "get centered_clipping tau=-1",
        _bind("centered_clipping", tau=-1.0),
        InvalidParameterError,
        "need tau > 0",
    ),
    Row(
        "get centered_clipping iterations=0",
        _bind("centered_clipping", iterations=0),
        InvalidParameterError,
        "need iterations >= 1",
    ),
    Row(
        "get geometric_median max_iter=0",
        _bind("geometric_median", max_iter=0),
        InvalidParameterError,
        "need max_iter >= 1",
    ),
    Row(
        "get mda max_subsets=0",
        _bind("mda", max_subsets=0),
        InvalidParameterError,
        "need max_subsets >= 1",
    ),
    # -- finite inputs at float32's largest value: finite outputs -------------------
    *(
        Row(f"{rule} on rows at float32 max", _run(rule, _at_max))
        for rule in (
            "average",
            "median",
            "trimmed_mean",
            "meamed",
            "bulyan",
            "weighted_median",
            "centered_clipping",
            "multi_krum",
            "geometric_median",
            "nnm>trimmed_mean",
            "bucketing>meamed",
        )
    ),
    *(
        Row(f"{rule} on rows near float32 max", _run(rule, _near_max))
        for rule in ("trimmed_mean", "meamed", "bulyan", "weighted_median", "centered_clipping")
    ),
    Row("arc on randn * 2e19 (float32)", _run("arc", _huge_norm_rows)),
    Row("arc>median on randn * 2e19 (float32)", _run("arc>median", _huge_norm_rows)),
    Row("clipping>median on randn * 2e19", _run("clipping>median", _huge_norm_rows)),
    Row(
        "pipeline stage producing inf is named",
        lambda: aggregators.compose(_OVERFLOWING, "median")(_rows(), 1),
        NonFiniteOutputError,
        "stage overflowing_stage",
    ),
    # -- the meta device: refused with a clear error ------------------------------
    *(
        Row(
            f"{rule} on the meta device",
            _run(rule, lambda: torch.zeros(9, 4, device="meta")),
            ShapeError,
            "meta device",
        )
        for rule in ("median", "krum", "trimmed_mean", "nnm>median")
    ),
    # -- the pipeline's minimum n, in closed form -----------------------------------
    Row("bucketing>krum min_n(10**7)", lambda: aggregators.get("bucketing>krum").min_n(10**7)),
]


def _finite(out: Any) -> bool:
    if isinstance(out, torch.Tensor):
        return bool(torch.isfinite(out).all())
    return True


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(row: Row) -> None:
    if row.error is None:
        out = row.call()
        assert _finite(out), f"{row.id}: non-finite output {out}"
    else:
        with pytest.raises(row.error, match=row.match) as info:
            row.call()
        assert "\n" not in str(info.value)


def test_table_outcomes_are_counted() -> None:
    errors = sum(r.error is not None for r in ROWS)
    assert errors and len(ROWS) - errors


@pytest.mark.parametrize(
    "stages", [("bucketing", "krum"), ("nnm", "bulyan"), ("arc", "bucketing", "mda"), ("median",)]
)
@pytest.mark.parametrize("f", [0, 1, 2, 5, 10**7])
def test_pipeline_min_n_is_the_smallest_n(stages: tuple[str, ...], f: int) -> None:
    pipe = aggregators.compose(*stages)
    assert isinstance(pipe, Pipeline)
    start = time.perf_counter()
    n = pipe.min_n(f)
    assert time.perf_counter() - start < 0.1
    pipe.check(n, f)
    if n > 1:
        with pytest.raises(ValueError):
            pipe.check(n - 1, f)


@pytest.mark.parametrize("s", [1, 2, 3, 7])
def test_bucketing_min_n_follows_bucket_size(s: int) -> None:
    pipe = aggregators.compose(aggregators.get("bucketing", s=s), "krum")
    for f in range(6):
        n = pipe.min_n(f)
        pipe.check(n, f)
        if n > 1:
            with pytest.raises(ValueError):
                pipe.check(n - 1, f)


def test_overflow_fallback_keeps_exact_values() -> None:
    x = _at_max()
    assert torch.equal(aggregators.trimmed_mean(x, 1), x[0])
    assert torch.equal(aggregators.meamed(x, 1), x[0])
    assert torch.equal(aggregators.average(x, 0), x[0])
