"""Property-based robustness tests (hypothesis): Byzantine and non-finite inputs.

n - f honest rows are drawn by hypothesis (ties, zeros and duplicates
included); f Byzantine rows replace the others, at random positions, from a
family of attacks: huge vectors (1e12) in random, identical or alternating
directions, a single huge coordinate, vectors just outside the honest ones,
"a little is enough" shifts, and arbitrary floats. Each robust rule must stay
within a bound of the honest inputs that its definition guarantees; the
average, the non-robust baseline, must not.

Notation (computed in float64 from the honest rows as the rule sees them):
mu is the honest mean, delta = max_i |h_i - mu| the honest radius, lo/hi the
coordinate-wise honest minimum and maximum, and R = hi - lo the honest range.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import byzance.aggregators as agg
from byzance.aggregators import Rule
from byzance.errors import NonFiniteInputError

DTYPES = [torch.float32, torch.float64]
MAX_N = 12
MAX_D = 8
HUGE = 2.0**40  # about 1e12, exact in float32

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

PIPELINES: dict[str, Rule] = {
    "nnm>trimmed_mean": agg.get("nnm>trimmed_mean"),
    "nnm>median": agg.get("nnm>median"),
    "nnm>krum": agg.get("nnm>krum"),
    "arc>trimmed_mean": agg.get("arc>trimmed_mean"),
    "clipping>median": agg.compose(agg.get("clipping", c=5.0), "median"),
    "bucketing>median": agg.compose(agg.get("bucketing", seed=0), "median"),
}
ROBUST = [n for n in agg.names("aggregator") if agg.get(n).robust]
HUGE_ATTACKS = ["huge random", "huge identical", "huge alternating", "huge coordinate"]
ATTACKS = [*HUGE_ATTACKS, "near", "just outside", "little is enough", "arbitrary"]


def rule_of(name: str) -> Rule:
    return PIPELINES[name] if name in PIPELINES else agg.get(name)


def max_n_for(name: str) -> int:
    if name == "bulyan":
        return 15  # n >= 4f + 3
    return 10 if "mda" in name else MAX_N  # MDA enumerates C(n, f) subsets


# -- data ------------------------------------------------------------------------------------
def draw_size(data: st.DataObject, rule: Rule, name: str, min_f: int = 1) -> tuple[int, int, int]:
    hi = max_n_for(name)
    f_max = min_f
    while rule.min_n(f_max + 1) <= hi and f_max < 3:
        f_max += 1
    f = data.draw(st.integers(min_f, f_max), label="f")
    n = data.draw(st.integers(rule.min_n(f), hi), label="n")
    d = data.draw(st.integers(1, MAX_D), label="d")
    return n, f, d


def draw_honest(data: st.DataObject, h: int, d: int, dtype: torch.dtype) -> torch.Tensor:
    """(h, d) honest rows: hypothesis floats (duplicates and zeros included), scaled and offset."""
    unit = data.draw(arrays(np.float64, (h, d), elements=st.floats(-1, 1, width=32)), label="h")
    scale = data.draw(st.sampled_from([1e-3, 1.0, 30.0, 1e3]), label="scale")
    offset = data.draw(arrays(np.float64, d, elements=st.floats(-100, 100, width=32)), label="o")
    return torch.from_numpy(unit * scale + offset).to(dtype)


def stats(honest: torch.Tensor) -> dict[str, torch.Tensor | float]:
    h = honest.double()
    mu = h.mean(0)
    lo, hi = h.min(0).values, h.max(0).values
    return {
        "mu": mu,
        "delta": float(torch.linalg.vector_norm(h - mu, dim=1).max()),
        "lo": lo,
        "hi": hi,
        "range": hi - lo,
        "norm": float(torch.linalg.vector_norm(h, dim=1).max()),
        "mag": float(h.abs().max()),
    }


def draw_byzantine(data: st.DataObject, honest: torch.Tensor, f: int, attack: str) -> torch.Tensor:
    """(f, d) Byzantine rows of the given attack family."""
    d = honest.shape[1]
    s = stats(honest)
    mu, delta = s["mu"], max(s["delta"], 1e-6)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="attack seed"))
    if attack == "huge random":
        u = rng.standard_normal((f, d))
        b = HUGE * u / np.linalg.norm(u, axis=1, keepdims=True)
    elif attack == "huge identical":
        u = rng.standard_normal(d)
        b = np.tile(HUGE * u / np.linalg.norm(u), (f, 1))
    elif attack == "huge alternating":
        b = HUGE * (-1.0) ** np.add.outer(np.arange(f), np.arange(d))
    elif attack == "huge coordinate":
        b = np.tile(mu.numpy(), (f, 1))
        b[np.arange(f), rng.integers(0, d, size=f)] = HUGE * rng.choice([-1.0, 1.0], size=f)
    elif attack == "near":
        b = mu.numpy() + delta * rng.uniform(-2, 2, size=(f, d))
    elif attack == "just outside":  # all on one side, a little beyond the honest maximum
        b = np.tile((s["hi"] + 0.1 * s["range"] + 1e-3 * delta).numpy(), (f, 1))
    elif attack == "little is enough":  # mean minus 1.5 standard deviations, identical
        sigma = honest.double().std(0, unbiased=False).numpy()
        b = np.tile(mu.numpy() - 1.5 * sigma, (f, 1))
    else:  # "arbitrary"
        b = data.draw(
            arrays(np.float64, (f, d), elements=st.floats(-HUGE, HUGE, width=32)),
            label="arbitrary",
        )
    return torch.from_numpy(np.asarray(b, dtype=np.float64)).to(honest.dtype)


def draw_case(data: st.DataObject, name: str, dtype: torch.dtype, attacks=ATTACKS):
    """(x, f, honest, attack): honest and Byzantine rows mixed in random order."""
    rule = rule_of(name)
    n, f, d = draw_size(data, rule, name)
    honest = draw_honest(data, n - f, d, dtype)
    attack = data.draw(st.sampled_from(attacks), label="attack")
    byz = draw_byzantine(data, honest, f, attack)
    order = torch.tensor(data.draw(st.permutations(range(n)), label="order"))
    x = torch.cat([honest, byz])[order]
    return x, f, honest, attack


# -- per-rule guarantees -----------------------------------------------------------------------
def dist_tol(dtype: torch.dtype, s) -> float:
    """Distance resolution of the rules built on squared distances from a Gram product:
    about sqrt(eps) times the magnitude of the vectors."""
    return (3e-3 if dtype == torch.float32 else 1e-7) * (1 + s["mag"])


def coord_tol(dtype: torch.dtype, s) -> float:
    return (2e-5 if dtype == torch.float32 else 1e-11) * (1 + s["mag"])


def krum_radius(n: int, f: int, radius: float) -> float:
    """Krum/Multi-Krum: if the honest rows lie within ``radius`` of mu, any selected
    row does too, or lies within 2 radius sqrt(k / (n - 2f - 1)) of an honest row:
    a selected Byzantine row scores at most an honest row's score, <= k (2 radius)^2,
    and at least n - 2f - 1 of its k = n - f - 2 nearest rows are honest."""
    k = n - f - 2
    return radius * (1 + 2 * math.sqrt(k / (n - 2 * f - 1)))


def check_bound(name: str, out: torch.Tensor, n: int, f: int, s, dtype, params) -> None:
    """Assert the guarantee of rule ``name`` on its output ``out``."""
    o = out.double()
    mu, delta = s["mu"], s["delta"]
    lo, hi, rng = s["lo"], s["hi"], s["range"]
    l2 = float(torch.linalg.vector_norm(o - mu))
    linf = float((o - mu).abs().max())
    ctol, dtol = coord_tol(dtype, s), dist_tol(dtype, s)

    def box(low: torch.Tensor, high: torch.Tensor, tol: float) -> None:
        assert bool(((o >= low - tol) & (o <= high + tol)).all()), (o, low, high)

    if name in ("median", "trimmed_mean", "bucketing>median"):
        # Every value kept is bracketed by honest values.
        box(lo, hi, ctol)
    elif name in ("meamed", "bulyan"):
        # The chosen window of values around the (honest-bracketed) median reaches
        # no farther than a window inside the honest range does: at most R.
        box(lo - rng, hi + rng, ctol)
    elif name in ("krum", "multi_krum"):
        assert l2 <= krum_radius(n, f, delta) * 1.001 + dtol, (l2, delta)
    elif name == "mda":
        # The chosen subset's diameter is at most the honest one's (<= 2 delta), and
        # it holds an honest row.
        assert l2 <= 3 * delta * 1.001 + dtol, (l2, delta)
    elif name in ("geometric_median", "skewed_geometric_median"):  # skew = I by default
        # (n - 2f) |z - mu| <= 2 sum_honest |h_i - mu| for the exact minimizer.
        # Iterates within nu = 1e-6 of an input count as on it: about n nu / (n - 2f) more.
        bound = (2 * (n - f) * delta + 2 * n * 1e-6) / (n - 2 * f)
        assert l2 <= bound * 1.01 + dtol, (l2, bound)
    elif name == "centered_clipping":
        # Each of the L steps moves by at most tau from a center within delta of mu.
        center = params["center"].double()
        assert float(torch.linalg.vector_norm(center - mu)) <= delta * 1.001 + ctol
        assert l2 <= delta + params["iterations"] * params["tau"] * 1.001 + ctol, (l2, params)
    elif name in ("nnm>trimmed_mean", "nnm>median"):
        # An honest row's n - f nearest rows lie within 2 delta of it: its mixture
        # lies within 3 delta of mu; the coordinate-wise rule stays within those.
        assert linf <= 3 * delta * 1.001 + dtol, (linf, delta)
    elif name == "nnm>krum":
        assert l2 <= krum_radius(n, f, 3 * delta) * 1.001 + dtol, (l2, delta)
    elif name in ("arc>trimmed_mean", "clipping>median"):
        # Clipping shrinks rows toward the origin: the honest box grows to include 0.
        box(torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0), ctol)
    else:  # a rule added later: a generous default
        assert l2 <= 3 * delta + dtol, (name, l2, delta)


def params_for(name: str, honest: torch.Tensor, data: st.DataObject) -> dict:
    if name == "centered_clipping":
        # Started from an honest row (the previous aggregate, in practice near the
        # honest ones), with a radius on the scale of the honest spread.
        s = stats(honest)
        return {
            "center": honest[0],
            "tau": 2 * s["delta"] + 1e-3 * (1 + s["mag"]),
            "iterations": data.draw(st.integers(1, 3), label="iterations"),
        }
    return {}


# -- robustness --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", [*ROBUST, *PIPELINES])
@SETTINGS
@given(data=st.data())
def test_robust_rules_stay_close_to_the_honest_inputs(name, dtype, data):
    x, f, honest, _attack = draw_case(data, name, dtype)
    params = params_for(name, honest, data)
    out = rule_of(name)(x, f, **params)
    assert out.shape == (x.shape[1],)
    assert out.dtype == dtype
    assert bool(torch.isfinite(out).all())
    check_bound(name, out, x.shape[0], f, stats(honest), dtype, params)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    ("name", "attacks"),
    [
        ("median", ATTACKS),
        ("trimmed_mean", ATTACKS),
        ("bucketing>median", ATTACKS),
        # The window of values around the median can take a Byzantine value that
        # is close to the honest ones (see test_meamed_can_leave_the_honest_box),
        # never one that is far away.
        ("meamed", HUGE_ATTACKS),
        ("bulyan", HUGE_ATTACKS),
    ],
    ids=lambda v: v if isinstance(v, str) else "attacks",
)
@SETTINGS
@given(data=st.data())
def test_output_stays_in_the_honest_bounding_box(name, attacks, dtype, data):
    x, f, honest, _attack = draw_case(data, name, dtype, attacks)
    out = rule_of(name)(x, f).double()
    s = stats(honest)
    tol = coord_tol(dtype, s)
    assert bool((out >= s["lo"] - tol).all()), (out, s["lo"])
    assert bool((out <= s["hi"] + tol).all()), (out, s["hi"])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_meamed_can_leave_the_honest_box(dtype):
    """Not a bug: meamed averages the n - f values closest to the median, which may
    be a Byzantine value next to the honest ones rather than a far honest one."""
    # Honest 0 and 1, Byzantine 1.5: the window [1, 1.5] beats [0, 1] around the median 1.
    x = torch.tensor([[0.0], [1.0], [1.5]], dtype=dtype)
    assert float(agg.meamed(x, 1)) == 1.25
    assert float(agg.median(x, 1)) == 1.0


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@SETTINGS
@given(data=st.data())
def test_the_average_is_not_robust(dtype, data):
    """The baseline: one huge vector drags the average arbitrarily far."""
    x, f, honest, _ = draw_case(data, "median", dtype, ["huge identical"])
    s = stats(honest)
    out = agg.average(x, f).double()
    shift = float(torch.linalg.vector_norm(out - s["mu"]))
    assert shift >= 0.5 * HUGE * f / x.shape[0]
    # ... while the same inputs leave the median in the honest box.
    med = agg.median(x, f).double()
    assert bool((med >= s["lo"] - coord_tol(dtype, s)).all())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", [*ROBUST, *PIPELINES])
@settings(parent=SETTINGS, max_examples=10)
@given(data=st.data())
def test_finite_byzantine_rows_near_the_largest_float(name, dtype, data):
    """Finite rows are kept (only NaN/inf rows are dropped), so an attacker may send
    float-max-sized values; the robust rules must still stay near the honest rows."""
    rule = rule_of(name)
    n, f, d = draw_size(data, rule, name)
    # Distinct positive honest rows: the Gram product with the Byzantine rows overflows.
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    honest = torch.from_numpy(rng.uniform(2.0, 3.0, size=(n - f, d))).to(dtype)
    big = torch.finfo(dtype).max / 2
    sign = data.draw(st.sampled_from([1.0, -1.0]), label="sign")
    byz = torch.full((f, d), sign * big, dtype=dtype)
    order = torch.tensor(data.draw(st.permutations(range(n)), label="order"))
    x = torch.cat([honest, byz])[order]
    params = params_for(name, honest, data)
    out = rule(x, f, **params)
    assert bool(torch.isfinite(out).all())
    check_bound(name, out, n, f, stats(honest), dtype, params)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_mda_with_a_row_near_the_largest_float(dtype):
    """Regression: the Gram product x_b . x_j overflowed to inf, the squared distances
    became inf - inf = NaN, every subset holding the row had a NaN diameter, and the
    running minimum (NaN < best is False) never updated: mda selected all n rows and
    averaged the Byzantine one in. The same NaN scores made krum return that row."""
    big = torch.finfo(dtype).max / 2
    x = torch.tensor([[2.0, 2.5], [2.5, 2.0], [3.0, 3.0], [big, big]], dtype=dtype)
    assert agg.mda.selected(x, 1).tolist() == [0, 1, 2]
    assert torch.allclose(agg.mda(x, 1), x[:3].mean(0))
    x5 = torch.cat([x[:3], x[:1] + 0.25, x[3:]])
    assert agg.krum.selected(x5, 1).tolist() != [4]
    assert bool((agg.krum(x5, 1) <= 3.25).all())


# -- non-finite inputs ---------------------------------------------------------------------------
ALL = [*agg.names("aggregator"), *agg.names("preaggregator"), *PIPELINES]
NON_FINITE_PARAMS: dict[str, dict] = {"bucketing": {"seed": 3}}


def corrupt(data: st.DataObject, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Put NaN/inf/-inf into k random rows (some of their coordinates); return (x, kept mask)."""
    n, d = x.shape
    rows = data.draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k, unique=True))
    x = x.clone()
    for r in rows:
        cols = data.draw(st.lists(st.integers(0, d - 1), min_size=1, max_size=d, unique=True))
        for c in cols:
            x[r, c] = data.draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    kept = torch.ones(n, dtype=torch.bool)
    kept[rows] = False
    return x, kept


DROPS_NONFINITE = [name for name in ALL if rule_of(name).robust]
PLAIN = [name for name in ALL if not rule_of(name).robust]


@pytest.mark.parametrize("name", PLAIN)
def test_a_rule_that_is_not_robust_passes_nan_through(name):
    """The baseline is the plain mean: a NaN in, a NaN out, never a silent drop."""
    assert PLAIN, "the average at least is not robust"
    x = torch.ones(4, 3)
    x[1, 2] = float("nan")
    out = rule_of(name)(x, 1)
    assert bool(torch.isnan(out[2])) and bool(torch.isfinite(out[:2]).all())
    assert bool(torch.isnan(rule_of(name)(x, 0)[2]))  # f = 0 too: no NonFiniteInputError


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", DROPS_NONFINITE)
@SETTINGS
@given(data=st.data())
def test_non_finite_rows_are_dropped_and_counted_among_f(name, dtype, data):
    rule = rule_of(name)
    n, f, d = draw_size(data, rule, name, min_f=0)
    x = draw_honest(data, n, d, dtype)
    k = data.draw(st.integers(0, min(f, n - 1)), label="non-finite rows")
    bad, kept = corrupt(data, x, k)
    params = NON_FINITE_PARAMS.get(name, {})
    out = rule(bad, f, **params)
    assert bool(torch.isfinite(out).all())
    expected = rule(x[kept], f - k, **params)
    assert torch.equal(out, expected)
    sel = rule.selected(bad, f, **params)
    if sel is not None:  # selection rules name original rows, never a dropped one
        assert bool(kept[sel].all())
        finite_rows = kept.nonzero().flatten()
        assert torch.equal(sel, finite_rows[rule.selected(x[kept], f - k, **params)])
    if f < n:
        # One more non-finite row than f is refused, naming the problem.
        worse, _ = corrupt(data, x, f + 1)
        with pytest.raises(NonFiniteInputError):
            rule(worse, f, **params)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@SETTINGS
@given(data=st.data())
def test_weights_of_dropped_rows_are_dropped(dtype, data):
    rule = agg.geometric_median
    n, f, d = draw_size(data, rule, "geometric_median", min_f=1)
    x = draw_honest(data, n, d, dtype)
    w = data.draw(arrays(np.float64, n, elements=st.floats(0.5, 2.0)), label="weights")
    k = data.draw(st.integers(1, f), label="non-finite rows")
    bad, kept = corrupt(data, x, k)
    w = torch.from_numpy(w)
    out = rule(bad, f, weights=w)
    assert bool(torch.isfinite(out).all())
    assert torch.equal(out, rule(x[kept], f - k, weights=w[kept]))
