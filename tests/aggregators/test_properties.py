"""Property-based tests (hypothesis) of the aggregation rules and pre-aggregators.

Properties checked for every registered rule (and a few pipelines), in float32
and float64:

- permutation invariance (aggregators) / equivariance (pre-aggregators);
- translation equivariance, rule(x + c) == rule(x) + c, and positive scaling
  equivariance, rule(a x) == a rule(x), where the rule's definition has them;
- unanimity: n copies of one vector aggregate to that vector;
- the pre-aggregators' shapes and definitions (clipping, ARC, NNM, bucketing);
- numpy arrays, lists of tensors and lists of arrays give the tensor's result,
  in the input's dtype, without an autograd graph (lists of Python numbers
  give the default float dtype);
- selection rules: the selected inputs explain the output and follow a permutation.

Data: the matrices are Gaussian samples from a seed hypothesis chooses
(hypothesis chooses n, f, d, the scale, the permutation, the translation...).
Continuous random data has no accidental ties, neither between the values of a
coordinate nor between distances, so the rules that break exact ties by index
are permutation invariant on it. Structural ties, which the rule's own
objective creates on such data (the two mutually nearest inputs when Krum
counts one neighbour, subsets of MDA spanned by the same farthest pair), must
be decided without the index. One exception is left out: NNM followed by
Krum, as NNM maps inputs with the same neighbours to exactly equal rows, whose
symmetric configurations tie on every key. Inputs stay tiny (n <= 15, d <= 8),
far below the size at which the coordinate-wise rules switch to compiled
kernels.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import byzance.aggregators as agg
from byzance.aggregators import Rule, sq_distances
from byzance.errors import ToleranceError

DTYPES = [torch.float32, torch.float64]
MAX_N = 12
MAX_D = 8
MAX_F = 3

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Pipelines checked beside the registered rules. Bucketing is random: its seed is fixed.
PIPELINES: dict[str, Rule] = {
    "nnm>trimmed_mean": agg.get("nnm>trimmed_mean"),
    "nnm>median": agg.get("nnm>median"),
    "nnm>krum": agg.get("nnm>krum"),
    "arc>trimmed_mean": agg.get("arc>trimmed_mean"),
    "clipping>median": agg.compose(agg.get("clipping", c=5.0), "median"),
    "bucketing>median": agg.compose(agg.get("bucketing", seed=0), "median"),
}

AGGREGATORS = agg.names("aggregator")
PREAGGREGATORS = agg.names("preaggregator")

# Rules whose output depends on a random draw, even with a fixed seed (the seed
# fixes the permutation of the row indices, not of the rows' values).
RANDOM = {"bucketing", "bucketing>median"}
# NNM often maps inputs to exactly equal rows (two inputs with the same n - f
# nearest neighbours), whose symmetric configurations tie Krum's scores.
STRUCTURAL_TIES = {"nnm>krum"}
UNORDERED = RANDOM | STRUCTURAL_TIES
# Norm-based rules, not translation equivariant by definition (their reference
# point is the origin): clipping, ARC, and centered clipping from its center
# (tested separately with the center translated too).
NOT_TRANSLATION_EQUIVARIANT = {"clipping", "arc", "centered_clipping"}
# Rules with a parameter on the scale of the data (clipping threshold, tau).
NOT_SCALE_EQUIVARIANT = {"clipping", "arc", "centered_clipping", "clipping>median"}

# Keyword parameters used in the invariance tests. The geometric median is an
# iterative approximation whose stopping test (a relative decrease of the
# objective) may stop one iteration earlier or later after a rounding change:
# a tight tolerance makes both stopping points agree to well below the
# comparison tolerance.
PARAMS: dict[str, dict] = {
    "geometric_median": {"tol": 1e-12, "max_iter": 500},
    "skewed_geometric_median": {"tol": 1e-12, "max_iter": 500},
    "bucketing": {"seed": 0},
}


def rule_of(name: str) -> Rule:
    return PIPELINES[name] if name in PIPELINES else agg.get(name)


def params_of(name: str) -> dict:
    return dict(PARAMS.get(name, {}))


def rel_tol(dtype: torch.dtype, name: str = "") -> float:
    """Relative tolerance of a comparison, against the magnitude of the data."""
    if name in ("geometric_median", "skewed_geometric_median"):
        # An approximate minimizer is located to about the square root of the
        # precision of the objective it minimizes.
        return 2e-3 if dtype == torch.float32 else 1e-7
    return 2e-5 if dtype == torch.float32 else 1e-11


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, msg: str = "") -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    if actual.numel() == 0:
        return
    err = float((actual.double() - expected.double()).abs().max())
    assert err <= atol, f"{msg} max error {err:.3g} > {atol:.3g}\n{actual}\n{expected}"


def max_f_for(rule: Rule, max_n: int) -> int:
    f = 0
    while f < MAX_F and rule.min_n(f + 1) <= max_n:
        f += 1
    return f


def max_n_for(name: str) -> int:
    if name == "bulyan":
        return 15  # n >= 4f + 3: f = 3 needs 15 inputs
    return 10 if "mda" in name else MAX_N  # MDA enumerates C(n, f) subsets


def draw_size(data: st.DataObject, rule: Rule, name: str) -> tuple[int, int, int]:
    """(n, f, d) with n meeting the rule's requirement."""
    hi = max_n_for(name)
    f = data.draw(st.integers(0, max_f_for(rule, hi)), label="f")
    n = data.draw(st.integers(max(rule.min_n(f), 1), hi), label="n")
    d = data.draw(st.integers(1, MAX_D), label="d")
    return n, f, d


def mda_subsets(
    x: torch.Tensor, f: int, dist: torch.Tensor | None = None
) -> list[tuple[float, float, tuple[int, ...]]]:
    """(squared diameter, spread, removed rows) of every subset of n - f rows, by
    brute force, sorted; the spread is the sum of the squared distances within the
    subset. Squared distances from ``dist``, else exact ones in float64."""
    if dist is None:
        x64 = x.double()
        dist = torch.cdist(x64, x64).square()
    dist = dist.double()
    n = x.shape[0]
    out = []
    for removed in itertools.combinations(range(n), f):
        keep = [i for i in range(n) if i not in removed]
        inside = dist[keep][:, keep]
        out.append((float(inside.max()), float(inside.sum()), removed))
    return sorted(out)


def gaussian(data: st.DataObject, n: int, d: int, dtype: torch.dtype) -> torch.Tensor:
    """A Gaussian (n, d) matrix with a random scale and offset: no ties, almost surely."""
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    scale = data.draw(st.sampled_from([0.01, 0.3, 1.0, 7.0, 100.0]), label="scale")
    rng = np.random.default_rng(seed)
    offset = rng.uniform(-3, 3, size=d) * scale
    x = rng.standard_normal((n, d)) * scale + offset
    return torch.from_numpy(x).to(dtype)


def magnitude(*tensors: torch.Tensor) -> float:
    return max(float(t.double().abs().max()) for t in tensors)


GEOMETRIC = ("geometric_median", "skewed_geometric_median")


def objective(x: torch.Tensor, z: torch.Tensor) -> float:
    """The geometric median's objective sum_i |x_i - z|, in float64."""
    return float(torch.linalg.vector_norm(x.double() - z.double(), dim=1).sum())


def unique_minimizer(x: torch.Tensor) -> bool:
    """False where the geometric median is a segment: the rows collinear (rank <= 1
    once centered) and their count even."""
    centered = x.double() - x.double().mean(0)
    collinear = x.shape[0] <= 2 or int(torch.linalg.matrix_rank(centered)) <= 1
    return not (collinear and x.shape[0] % 2 == 0)


# -- permutation ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", [n for n in [*AGGREGATORS, *PIPELINES] if n not in UNORDERED])
@SETTINGS
@given(data=st.data())
def test_permuting_the_inputs_leaves_the_aggregate_unchanged(name, dtype, data):
    rule = rule_of(name)
    n, f, d = draw_size(data, rule, name)
    x = gaussian(data, n, d, dtype)
    perm = torch.tensor(data.draw(st.permutations(range(n)), label="perm"))
    out = rule(x, f, **params_of(name))
    out_perm = rule(x[perm], f, **params_of(name))
    assert_close(out_perm, out, rel_tol(dtype, name) * (1 + magnitude(x)))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", [n for n in PREAGGREGATORS if n not in RANDOM])
@SETTINGS
@given(data=st.data())
def test_permuting_the_inputs_permutes_the_preaggregated_rows(name, dtype, data):
    rule = rule_of(name)
    n, f, d = draw_size(data, rule, name)
    x = gaussian(data, n, d, dtype)
    perm = torch.tensor(data.draw(st.permutations(range(n)), label="perm"))
    out = rule(x, f, **params_of(name))
    out_perm = rule(x[perm], f, **params_of(name))
    assert_close(out_perm, out[perm], rel_tol(dtype, name) * (1 + magnitude(x)))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bulyan_does_not_depend_on_the_order_of_the_inputs(dtype):
    """Regression: Bulyan's last selection rounds run Krum with one neighbour, where
    the two mutually nearest inputs always tie; with ties going to the lower index,
    reversing these rows moved the aggregate from 3.83 to 12.75."""
    # Multiples of 1/8: every distance is exact, and no two pairwise distances are equal.
    v = [0.875, 2.625, 8.0, 12.875, 17.375, 20.25, 25.75]
    x = torch.tensor(v, dtype=dtype)[:, None]
    for perm in ([6, 5, 4, 3, 2, 1, 0], [1, 0, 3, 2, 5, 4, 6], [3, 0, 6, 1, 5, 2, 4]):
        assert_close(agg.bulyan(x[perm], 1), agg.bulyan(x, 1), 1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@SETTINGS
@given(data=st.data())
def test_mda_averages_the_subset_of_smallest_diameter_then_spread(dtype, data):
    """Against brute force. Equal diameters are common (the same pair spans several
    subsets) and are decided by the spread, which does not depend on the order."""
    n, f, d = draw_size(data, agg.mda, "mda")
    x = gaussian(data, n, d, dtype)
    out = agg.mda(x, f)
    kept = agg.mda.selected(x, f).tolist()
    removed = tuple(i for i in range(n) if i not in kept)
    assert len(kept) == n - f
    assert_close(out, x[kept].mean(0), rel_tol(dtype) * (1 + magnitude(x)))
    # The selection, on the distances the rule computes: the smallest diameter,
    # then (among exactly equal diameters) the smallest spread.
    subsets = mda_subsets(x, f, sq_distances(x))
    tied = [sub for sub in subsets if sub[0] == subsets[0][0]]
    spread = min(sub[1] for sub in tied)
    assert removed in [sub[2] for sub in tied if sub[1] <= spread * (1 + 1e-6)]
    # ... whose diameter is the smallest one up to the precision of those distances.
    exact = {sub[2]: sub[0] for sub in mda_subsets(x, f)}
    rel = 1e-3 if dtype == torch.float32 else 1e-9
    assert exact[removed] <= min(exact.values()) * (1 + rel)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_mda_decides_equal_diameters_by_the_spread(dtype):
    # The four corners of a square and its center: removing any one point leaves
    # a diagonal, so all five subsets have the same diameter; removing the center
    # leaves the largest spread, so the center is kept, in any order.
    x = torch.tensor([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0], [5.0, 5.0]], dtype=dtype)
    assert len({dia for dia, _, _ in mda_subsets(x, 1)}) == 1
    for perm in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 4, 0, 3, 1]):
        center = perm.index(4)
        assert center in agg.mda.selected(x[perm], 1).tolist()


# -- translation -----------------------------------------------------------------------
TRANSLATED = [n for n in [*AGGREGATORS, *PIPELINES] if n not in NOT_TRANSLATION_EQUIVARIANT]
TRANSLATED = [
    n for n in TRANSLATED if not n.startswith(("arc>", "clipping>")) and n not in STRUCTURAL_TIES
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", TRANSLATED)
@SETTINGS
@given(data=st.data())
def test_translating_the_inputs_translates_the_aggregate(name, dtype, data):
    rule = rule_of(name)
    n, f, d = draw_size(data, rule, name)
    x = gaussian(data, n, d, dtype)
    c = data.draw(st.lists(st.floats(-50, 50, width=32), min_size=d, max_size=d), label="c")
    c = torch.tensor(c, dtype=dtype)
    out = rule(x + c, f, **params_of(name))
    expected = rule(x, f, **params_of(name)) + c
    if name in GEOMETRIC and not unique_minimizer(x):
        # Collinear inputs, an even count: every point between the two middle
        # ones minimizes; compare the objective (on x + c) instead of the point.
        obj_out, obj_exp = objective(x + c, out), objective(x + c, expected)
        tol = rel_tol(dtype, name) * (1 + magnitude(x, c)) * 4 * x.shape[0]
        assert abs(obj_out - obj_exp) <= tol, (obj_out, obj_exp, tol)
        return
    assert_close(out, expected, rel_tol(dtype, name) * (1 + magnitude(x, c)) * 4)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@SETTINGS
@given(data=st.data())
def test_nnm_is_translation_equivariant(dtype, data):
    rule = agg.nnm
    n, f, d = draw_size(data, rule, "nnm")
    x = gaussian(data, n, d, dtype)
    c = torch.tensor(
        data.draw(st.lists(st.floats(-50, 50, width=32), min_size=d, max_size=d)), dtype=dtype
    )
    assert_close(rule(x + c, f), rule(x, f) + c, rel_tol(dtype) * (1 + magnitude(x, c)) * 4)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@SETTINGS
@given(data=st.data())
def test_centered_clipping_is_translation_equivariant_with_its_center(dtype, data):
    rule = agg.centered_clipping
    n, f, d = draw_size(data, rule, "centered_clipping")
    x = gaussian(data, n, d, dtype)
    v = gaussian(data, 1, d, dtype)[0]
    c = torch.tensor(
        data.draw(st.lists(st.floats(-50, 50, width=32), min_size=d, max_size=d)), dtype=dtype
    )
    tau = data.draw(st.floats(0.01, 100), label="tau")
    iterations = data.draw(st.integers(1, 4), label="iterations")
    out = rule(x + c, f, center=v + c, tau=tau, iterations=iterations)
    expected = rule(x, f, center=v, tau=tau, iterations=iterations) + c
    assert_close(out, expected, rel_tol(dtype) * (1 + magnitude(x, c, v)) * 4)


def test_norm_based_rules_are_indeed_not_translation_equivariant():
    """Sanity check of the exclusions above: clipping and ARC depend on the origin."""
    x = torch.tensor([[3.0, 4.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    c = torch.tensor([10.0, 0.0], dtype=torch.float64)
    assert not torch.allclose(agg.clipping(x + c, 0, c=1.0), agg.clipping(x, 0, c=1.0) + c)
    assert not torch.allclose(agg.arc(x + c, 1), agg.arc(x, 1) + c)


# -- scaling -------------------------------------------------------------------------------
SCALED = [
    n for n in [*AGGREGATORS, *PIPELINES, "nnm", "bucketing"] if n not in NOT_SCALE_EQUIVARIANT
]
SCALED = [n for n in SCALED if not n.startswith("arc>")]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", SCALED)
@settings(parent=SETTINGS, max_examples=15)
@given(data=st.data())
def test_scaling_the_inputs_scales_the_output(name, dtype, data):
    rule = rule_of(name)
    n, f, d = draw_size(data, rule, name)
    x = gaussian(data, n, d, dtype)
    # Powers of two: the scaled inputs are exact, so selections cannot flip.
    a = 2.0 ** data.draw(st.integers(-8, 8), label="log2 a")
    out = rule(x * a, f, **params_of(name))
    expected = rule(x, f, **params_of(name)) * a
    tol = rel_tol(dtype, name) * (1 + magnitude(x)) * a
    if name in ("geometric_median", "skewed_geometric_median"):
        # Its nu (1e-6: closer to an input counts as on it) is absolute, not relative.
        tol += 4e-6 * max(a, 1.0)
    assert_close(out, expected, tol)


# -- unanimity -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "name", [n for n in [*AGGREGATORS, *PIPELINES, "nnm", "bucketing"] if n != "clipping>median"]
)
@settings(parent=SETTINGS, max_examples=10)
@given(data=st.data())
def test_identical_inputs_aggregate_to_that_input(name, dtype, data):
    rule = rule_of(name)
    n, f, d = draw_size(data, rule, name)
    v = gaussian(data, 1, d, dtype)
    x = v.repeat(n, 1)
    params = params_of(name)
    if name == "centered_clipping":
        params = {"tau": 1.0 + 2 * magnitude(v) * math.sqrt(d)}  # the first step reaches v
    out = rule(x, f, **params)
    expected = v[0] if rule.kind == "aggregator" else v.expand_as(out)
    assert_close(out, expected, rel_tol(dtype, name) * (1 + magnitude(v)))


# -- pre-aggregators ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", PREAGGREGATORS)
@SETTINGS
@given(data=st.data())
def test_preaggregator_output_shape(name, dtype, data):
    rule = rule_of(name)
    n, f, d = draw_size(data, rule, name)
    x = gaussian(data, n, d, dtype)
    params = params_of(name)
    if name == "bucketing":
        params["s"] = data.draw(st.integers(1, n + 1), label="s")
        expected_rows = math.ceil(n / params["s"])
    else:
        expected_rows = n
    out = rule(x, f, **params)
    assert out.shape == (expected_rows, d)
    assert out.dtype == dtype
    assert rule.output_count(n, f, **params) == expected_rows


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@SETTINGS
@given(data=st.data())
def test_clipping_bounds_the_norms_and_keeps_small_rows(dtype, data):
    n, f, d = draw_size(data, agg.clipping, "clipping")
    x = gaussian(data, n, d, dtype)
    c = data.draw(st.floats(1e-3, 1e3), label="c")
    out = agg.clipping(x, f, c=c)
    norms = torch.linalg.vector_norm(x.double(), dim=1)
    out_norms = torch.linalg.vector_norm(out.double(), dim=1)
    assert bool((out_norms <= c * (1 + rel_tol(dtype))).all()), (out_norms, c)
    small = norms <= c
    assert torch.equal(out[small], x[small])
    # Clipped rows keep their direction and reach the threshold.
    big = ~small
    assert_close(out_norms[big], torch.full_like(out_norms[big], c), rel_tol(dtype) * c)
    cos = (out[big].double() * x[big].double()).sum(1) / (out_norms[big] * norms[big])
    assert_close(cos, torch.ones_like(cos), 1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@SETTINGS
@given(data=st.data())
def test_arc_keeps_the_smallest_rows_and_clips_the_k_largest(dtype, data):
    n, f, d = draw_size(data, agg.arc, "arc")
    x = gaussian(data, n, d, dtype)
    out = agg.arc(x, f)
    k = (2 * f * (n - f)) // n
    norms = torch.linalg.vector_norm(x, dim=1)
    order = torch.argsort(norms, descending=True)
    largest, rest = order[:k], order[k:]
    assert out.shape == x.shape
    # The n - k smallest rows are returned unchanged.
    assert torch.equal(out[rest], x[rest])
    if k:
        threshold = float(norms[order[k]])
        out_norms = torch.linalg.vector_norm(out[largest].double(), dim=1)
        tol = rel_tol(dtype) * (1 + threshold)
        assert_close(out_norms, torch.full_like(out_norms, threshold), tol)
        cos = (out[largest].double() * x[largest].double()).sum(1) / (
            out_norms * norms[largest].double()
        )
        assert_close(cos, torch.ones_like(cos), 1e-5)
    # k is at least f whenever n >= 2f: the f largest inputs are always clipped.
    assert k >= f


def nnm_reference(x: torch.Tensor, f: int) -> torch.Tensor:
    """Mean of each row's n - f nearest rows (itself included), by direct distances."""
    x64 = x.double()
    n = x.shape[0]
    out = torch.empty_like(x64)
    for i in range(n):
        dist = torch.linalg.vector_norm(x64 - x64[i], dim=1)
        dist[i] = -1.0
        out[i] = x64[torch.argsort(dist)[: n - f]].mean(0)
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@SETTINGS
@given(data=st.data())
def test_nnm_rows_are_means_of_nearest_neighbours_inside_the_input_box(dtype, data):
    n, f, d = draw_size(data, agg.nnm, "nnm")
    x = gaussian(data, n, d, dtype)
    out = agg.nnm(x, f)
    assert out.shape == (n, d)
    tol = rel_tol(dtype) * (1 + magnitude(x))
    lo, hi = x.double().min(0).values, x.double().max(0).values
    assert bool((out.double() >= lo - tol).all() and (out.double() <= hi + tol).all())
    assert_close(out.double(), nnm_reference(x, f), tol)
    if f == 0:
        assert_close(out, x.mean(0).expand_as(out), tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@SETTINGS
@given(data=st.data())
def test_bucketing_averages_buckets_of_s_inputs(dtype, data):
    n = data.draw(st.integers(1, MAX_N), label="n")
    d = data.draw(st.integers(1, MAX_D), label="d")
    x = gaussian(data, n, d, dtype)
    s = data.draw(st.integers(1, n + 1), label="s")
    seed = data.draw(st.integers(0, 2**16), label="bucket seed")
    out = agg.bucketing(x, 0, s=s, seed=seed)
    m = math.ceil(n / s)
    assert out.shape == (m, d)
    tol = rel_tol(dtype) * (1 + magnitude(x)) * n
    # Bucket sizes are s except the last: the size-weighted sum of the means is the total.
    sizes = torch.tensor([s] * (m - 1) + [n - s * (m - 1)], dtype=torch.float64)
    assert_close(sizes @ out.double(), x.double().sum(0), tol)
    lo, hi = x.double().min(0).values, x.double().max(0).values
    assert bool((out.double() >= lo - tol).all() and (out.double() <= hi + tol).all())
    # A fixed seed repeats; s = 1 permutes the rows.
    assert torch.equal(agg.bucketing(x, 0, s=s, seed=seed), out)
    gen = torch.Generator().manual_seed(seed)
    assert torch.equal(agg.bucketing(x, 0, s=s, generator=gen), out)
    if s == 1:
        assert torch.equal(torch.sort(out, dim=0).values, torch.sort(x, dim=0).values)


# -- selection rules -------------------------------------------------------------------------
SELECTION = [r.name for r in agg.rules("aggregator") if r.selector is not None]


def test_only_selection_rules_report_a_selection():
    assert {"krum", "multi_krum", "bulyan", "mda"} <= set(SELECTION)
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(0))
    for rule in agg.rules():
        if rule.name not in SELECTION:
            assert rule.selected(x, 1) is None, rule.name


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", SELECTION)
@SETTINGS
@given(data=st.data())
def test_selected_inputs_explain_the_output_and_follow_a_permutation(name, dtype, data):
    rule = rule_of(name)
    n, f, d = draw_size(data, rule, name)
    x = gaussian(data, n, d, dtype)
    sel = rule.selected(x, f)
    out = rule(x, f)
    tol = rel_tol(dtype) * (1 + magnitude(x))
    assert sel.dtype == torch.int64
    assert len(set(sel.tolist())) == len(sel)
    assert all(0 <= i < n for i in sel.tolist())
    if name == "krum":
        assert sel.shape == (1,)
        assert torch.equal(out, x[sel[0]])
    elif name in ("multi_krum", "mda"):
        assert sel.shape == (n - f,)
        assert_close(out, x[sel].mean(0), tol)
    elif name == "bulyan":
        # Phase 2: the mean of the theta - 2f selected values closest to the median.
        assert sel.shape == (n - 2 * f,)
        assert_close(out, agg.meamed.impl(x[sel], 2 * f), tol)
    perm = torch.tensor(data.draw(st.permutations(range(n)), label="perm"))
    assert sorted(perm[rule.selected(x[perm], f)].tolist()) == sorted(sel.tolist())


# -- input types ---------------------------------------------------------------------------------
ALL = [*AGGREGATORS, *PREAGGREGATORS, *PIPELINES]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ALL)
@settings(parent=SETTINGS, max_examples=8)
@given(data=st.data())
def test_numpy_and_lists_give_the_tensor_result_in_the_input_dtype(name, dtype, data):
    rule = rule_of(name)
    n, f, d = draw_size(data, rule, name)
    x = gaussian(data, n, d, dtype)
    params = params_of(name)
    expected = rule(x, f, **params)
    assert expected.dtype == dtype
    forms = {
        "numpy": x.numpy(),
        "list of tensors": list(x),
        "list of arrays": list(x.numpy()),
        "list of (1, d) tensors": [row.reshape(1, d) for row in x],
    }
    for form, grads in forms.items():
        out = rule(grads, f, **params)
        assert isinstance(out, torch.Tensor), form
        assert out.dtype == dtype, form
        assert torch.equal(out, expected), form
    # Python numbers carry no dtype: they become the default float dtype.
    out = rule(x.tolist(), f, **params)
    assert out.dtype == torch.get_default_dtype()
    assert torch.equal(out, rule(torch.tensor(x.tolist()), f, **params))
    # No autograd graph leaks out, and the input is left untouched.
    xg = x.clone().requires_grad_(True)
    out = rule(xg, f, **params)
    assert not out.requires_grad
    assert torch.equal(xg.detach(), x)


@pytest.mark.parametrize("name", ["median", "trimmed_mean", "krum", "geometric_median", "nnm"])
@SETTINGS
@given(data=st.data())
def test_integer_inputs_become_the_default_float_dtype(name, data):
    rule = rule_of(name)
    n, f, d = draw_size(data, rule, name)
    seed = data.draw(st.integers(0, 2**32 - 1))
    xi = torch.from_numpy(np.random.default_rng(seed).integers(-1000, 1000, size=(n, d)))
    out = rule(xi, f)
    assert out.dtype == torch.get_default_dtype()
    assert torch.equal(out, rule(xi.to(torch.get_default_dtype()), f))


# -- requirements ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [*AGGREGATORS, *PREAGGREGATORS, *PIPELINES])
@settings(max_examples=10, deadline=None, derandomize=True, database=None)
@given(f=st.integers(0, 3))
def test_min_n_is_exactly_the_smallest_accepted_n(name, f):
    rule = rule_of(name)
    need = rule.min_n(f)
    if need > 15:
        return
    x = torch.randn(need, 2, generator=torch.Generator().manual_seed(f), dtype=torch.float64)
    rule(x, f, **params_of(name))
    if need > 1:
        with pytest.raises(ToleranceError):
            rule(x[:-1], f, **params_of(name))
