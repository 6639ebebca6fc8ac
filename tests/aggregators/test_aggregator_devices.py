"""Every rule on every available device and float dtype: output on the input's device and dtype.

Runs on the CPU everywhere and on CUDA where present (the ``device`` fixture
of ``tests/conftest.py``). On the CPU, half-precision results are also
compared with the float32 result on the same (rounded) values.
"""

from __future__ import annotations

import pytest
import torch

from byzance import aggregators
from byzance.aggregators import compose, get

F = 2
D = 50
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Tolerance of a half-precision result against float32 on the same values: a few
# roundings of the output (float16 eps 2**-11, bfloat16 eps 2**-8) on values of order 1.
TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}
PIPELINES = ["nnm>trimmed_mean", "arc>krum", "clipping>median", "nnm>geometric_median"]


def _rule(name: str) -> aggregators.Rule:
    """The rule by name; bucketing seeded, so that two calls draw the same buckets."""
    if name == "bucketing>centered_clipping":
        return compose(get("bucketing", seed=0), "centered_clipping")
    return get(name, seed=0) if name == "bucketing" else get(name)


def _inputs(rule: aggregators.Rule, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    n = max(11, rule.min_n(F))
    x = torch.randn(n, D, generator=torch.Generator().manual_seed(n))
    x[:F] += 5.0  # the Byzantine ones, a little away
    return x.to(device=device, dtype=dtype)


ALL = [
    *aggregators.names("aggregator"),
    *aggregators.names("preaggregator"),
    *PIPELINES,
    "bucketing>centered_clipping",
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: str(t).removeprefix("torch."))
@pytest.mark.parametrize("name", ALL)
def test_rule_keeps_device_and_dtype(device, name, dtype):
    rule = _rule(name)
    x = _inputs(rule, device, dtype)
    out = rule(x, F)
    rows = rule.output_count(x.shape[0], F)
    assert out.shape == ((D,) if rule.kind == "aggregator" else (rows, D))
    assert out.device == x.device
    assert out.dtype == dtype
    assert bool(torch.isfinite(out).all())
    if device.type == "cpu" and dtype != torch.float32:
        want = rule(x.float(), F)  # float32 on the very same (rounded) values
        tol = TOLERANCE[dtype]
        torch.testing.assert_close(out.float(), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ["krum", "multi_krum", "bulyan", "mda"])
def test_selected_indices_on_the_input_device(device, name):
    rule = get(name)
    x = _inputs(rule, device, torch.float32)
    idx = rule.selected(x, F)
    assert idx.device == x.device
    assert not bool((idx < F).any())  # the Byzantine rows, far away, are not selected


def test_bucketing_draws_from_a_generator_on_the_device(device):
    x = _inputs(get("bucketing"), device, torch.float32)
    rule = get("bucketing").with_generator(torch.Generator(device=device).manual_seed(0))
    out = rule(x, F)
    assert out.device == x.device and out.shape == (6, D)
    # Every bucket mean is a mean of inputs: their total is the inputs' total (n even buckets).
    sizes = torch.tensor([2.0] * 5 + [1.0], device=device)
    torch.testing.assert_close((out * sizes[:, None]).sum(0), x.sum(0), rtol=1e-5, atol=1e-4)


def test_bucketing_seed_gives_the_same_buckets_on_every_device(device):
    x = _inputs(get("bucketing"), torch.device("cpu"), torch.float64)
    rule = get("bucketing", seed=3)
    torch.testing.assert_close(rule(x.to(device), F).cpu(), rule(x, F))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: str(t).removeprefix("torch."))
def test_parameters_follow_the_input_device(device, dtype):
    x = _inputs(get("median"), device, dtype)
    n = x.shape[0]
    weights = torch.ones(n)  # given on the CPU: moved to the input's device by the rule
    for name in ("weighted_average", "weighted_median", "geometric_median"):
        out = get(name, weights=weights)(x, F)
        assert out.device == x.device and out.dtype == dtype
    skew = 2.0 * torch.eye(D)
    out = get("skewed_geometric_median", skew=skew)(x, F)
    assert out.device == x.device and out.dtype == dtype and bool(torch.isfinite(out).all())
    center = torch.zeros(D)
    out = get("centered_clipping")(x, F, center=center)
    assert out.device == x.device and out.dtype == dtype


def test_missing_coordinates_on_the_device(device):
    x = _inputs(get("krum"), device, torch.float32)
    present = torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) > 0.1
    for name in ("median", "krum"):
        out = aggregators.aggregate_with_missing(name, x, present.to(device), F)
        assert out.device == x.device and out.shape == (D,)
        assert bool(torch.isfinite(out).all())


def test_nonfinite_rows_are_dropped_on_the_device(device):
    x = _inputs(get("krum"), device, torch.float16)
    x[0, 3] = float("nan")
    x[1, 7] = float("inf")
    out = get("krum")(x, F)
    assert out.device == x.device and out.dtype == torch.float16
    assert bool(torch.isfinite(out).all())


def test_half_precision_keeps_large_finite_rows():
    # Each value fits float16, but the rows' squared norms (and norms) do not: the
    # sums are taken in float32, so nothing overflows to inf inside the rules.
    x = torch.full((7, 4096), 2000.0, dtype=torch.float16)  # norms ~1.3e5
    x[1:] += torch.randn(6, 4096, generator=torch.Generator().manual_seed(0)).half()
    for name in (
        "trimmed_mean",
        "meamed",
        "krum",
        "multi_krum",
        "bulyan",
        "mda",
        "geometric_median",
        "centered_clipping",
        "nnm>median",
        "arc>median",
    ):
        out = get(name)(x, 1)
        assert bool(torch.isfinite(out).all()), name
    clipped = get("clipping", c=1.0)(x, 1)
    assert bool(torch.isfinite(clipped).all())
    norms = torch.linalg.vector_norm(clipped.float(), dim=1)
    torch.testing.assert_close(norms, torch.ones(7), rtol=1e-2, atol=1e-2)
