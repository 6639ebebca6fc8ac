"""Small cases worked by hand: one exact expected output per rule."""

from __future__ import annotations

import math

import pytest
import torch

import byzance.aggregators as agg
from byzance.aggregators.bulyan import bulyan_selection

DTYPES = [torch.float32, torch.float64]


def t(rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype)


# Five points in the plane: a tight cluster, one further, one far away.
# Squared distances: d01 = d02 = 1, d12 = 2, d03 = 50, d13 = d23 = 41, p4 far.
# Krum scores with f = 1 (n - f - 2 = 2 neighbours): 2, 3, 3, 82, huge.
PLANE = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [100.0, 100.0]]


@pytest.mark.parametrize("dtype", DTYPES)
class TestExact:
    def test_average(self, dtype):
        assert torch.equal(agg.average(t([[0, 1], [2, 3]], dtype), f=0), t([1, 2], dtype))

    def test_median_odd_and_even(self, dtype):
        assert torch.equal(agg.median(t([[0], [1], [100]], dtype), f=1), t([1], dtype))
        # Even n: mean of the two middle values.
        assert torch.equal(agg.median(t([[1], [2], [3], [100]], dtype), f=1), t([2.5], dtype))
        assert torch.equal(agg.median(t([[1, 9], [2, 8], [3, 7]], dtype), f=1), t([2, 8], dtype))

    def test_trimmed_mean(self, dtype):
        assert torch.equal(
            agg.trimmed_mean(t([[-50], [1], [2], [3], [99]], dtype), f=1), t([2], dtype)
        )
        # Columns are trimmed independently: [1..5] -> 3; [-100, 10, 20, 30, 50] -> 20.
        x = t([[1, 10], [2, 20], [3, 30], [4, -100], [5, 50]], dtype)
        assert torch.allclose(agg.trimmed_mean(x, f=1), t([3, 20], dtype))
        assert torch.allclose(agg.trimmed_mean(x, f=0), x.mean(0))

    def test_meamed(self, dtype):
        # median 2, windows of 4: [0, 1, 2, 2.5] reaches 2, [1, 2, 2.5, 100] reaches 98.
        out = agg.meamed(t([[0], [1], [2], [2.5], [100]], dtype), f=1)
        assert torch.allclose(out, t([1.375], dtype))
        # n = 5, f = 2, windows of 3 around the median 11: [10, 11, 12].
        out = agg.meamed(t([[0], [10], [11], [12], [50]], dtype), f=2)
        assert torch.allclose(out, t([11], dtype))

    def test_krum_and_multi_krum(self, dtype):
        x = t(PLANE, dtype)
        assert torch.equal(agg.krum(x, f=1), t([0, 0], dtype))
        # m = n - f = 4 lowest scores: p0..p3.
        assert torch.allclose(agg.multi_krum(x, f=1), t([1.5, 1.5], dtype))
        assert torch.allclose(agg.multi_krum(x, f=1, m=3), t([1 / 3, 1 / 3], dtype))
        assert torch.equal(agg.multi_krum(x, f=1, m=1), agg.krum(x, f=1))

    def test_krum_ties_are_decided_by_the_total_distance(self, dtype):
        # Scores with f = 1 (2 neighbours): 5, 2, 2, 5, huge: inputs 1 and 2 tie.
        # Sums of squared distances to all: 7927 for 1, 7750 for 2, so 2 wins,
        # whatever the order of the inputs.
        x = t([[0], [1], [2], [3], [90]], dtype)
        assert torch.equal(agg.krum(x, f=1), t([2], dtype))
        assert torch.equal(agg.krum(x.flip(0), f=1), t([2], dtype))

    def test_mda(self, dtype):
        x = t(PLANE, dtype)
        assert torch.allclose(agg.mda(x, f=1), t([1.5, 1.5], dtype))
        assert torch.allclose(agg.mda(x, f=2), t([1 / 3, 1 / 3], dtype))
        assert torch.allclose(agg.mda(x, f=0), x.mean(0))

    def test_geometric_median(self, dtype):
        # In one dimension the geometric median is the median.
        out = agg.geometric_median(t([[0], [1], [10]], dtype), f=1, tol=1e-12, max_iter=1000)
        assert torch.allclose(out, t([1], dtype), atol=1e-4)
        # Symmetric square: the centre.
        square = t([[0, 0], [2, 0], [0, 2], [2, 2]], dtype)
        assert torch.allclose(agg.geometric_median(square, f=1), t([1, 1], dtype), atol=1e-5)
        # Weighted: weight 5 of 7 on the point 10 makes it the weighted median.
        out = agg.geometric_median(
            t([[0], [1], [10]], dtype), f=1, weights=[1.0, 1.0, 5.0], tol=1e-12, max_iter=1000
        )
        assert torch.allclose(out, t([10], dtype), atol=1e-4)

    def test_bulyan(self, dtype):
        # Worked by hand: Krum rounds pick 3, 2, 4, 1, 5 (each round's tied
        # scores decided by the smaller total distance, i.e. further from 1000);
        # phase 2 averages the beta = 3 values closest to the median 3: {2, 3, 4}.
        x = t([[0], [1], [2], [3], [4], [5], [1000]], dtype)
        assert bulyan_selection(x, 1).tolist() == [3, 2, 4, 1, 5]
        assert torch.allclose(agg.bulyan(x, f=1), t([3], dtype))

    def test_bulyan_with_median_selection(self, dtype):
        # Medians of the remaining inputs: 3, 3, 4, 3, 5; the nearest inputs (ties
        # to the lower position) are 3, 2, 4, 1, 5; the 3 closest to their median
        # 3 are {2, 3, 4}.
        x = t([[0], [1], [2], [3], [4], [5], [1000]], dtype)
        assert bulyan_selection(x, 1, "median").tolist() == [3, 2, 4, 1, 5]
        assert torch.allclose(agg.bulyan(x, f=1, selection="median"), t([3], dtype))

    def test_centered_clipping(self, dtype):
        x = t([[0], [1], [100]], dtype)
        # From 0 with tau = 2: steps 0, 1, 2 -> v = 1; then -1, 0, 2 -> v = 1 + 1/3.
        one = agg.centered_clipping(x, f=1, center=t([0], dtype), tau=2.0, iterations=1)
        assert torch.allclose(one, t([1], dtype))
        two = agg.centered_clipping(x, f=1, center=t([0], dtype), tau=2.0, iterations=2)
        assert torch.allclose(two, t([4 / 3], dtype))
        # The state is explicit: continuing from the first result is the second.
        again = agg.centered_clipping(x, f=1, center=one, tau=2.0, iterations=1)
        assert torch.allclose(again, two)

    def test_nnm(self, dtype):
        # n - f = 3 nearest, self included: {0, 1, 3} for the first three, {10, 3, 1} for 10.
        out = agg.nnm(t([[0], [1], [3], [10]], dtype), f=1)
        assert torch.allclose(out, t([[4 / 3], [4 / 3], [4 / 3], [14 / 3]], dtype))

    def test_bucketing(self, dtype):
        x = t([[1], [2], [4], [8], [16]], dtype)
        out = agg.bucketing(x, f=1, s=2, seed=3)
        assert out.shape == (3, 1)
        # Buckets of 2, 2 and 1 inputs partition the input: weighted sums agree.
        assert torch.allclose(2 * out[0] + 2 * out[1] + out[2], x.sum(0))
        assert torch.equal(out, agg.bucketing(x, f=1, s=2, seed=3))
        assert torch.allclose(agg.bucketing(x, f=1, s=1, seed=0).sort(0).values, x)

    def test_clipping(self, dtype):
        out = agg.clipping(t([[3, 4], [0.3, 0.4]], dtype), f=0, c=1.0)
        assert torch.allclose(out, t([[0.6, 0.8], [0.3, 0.4]], dtype))

    def test_arc(self, dtype):
        # n = 5, f = 1: k = floor(2 * 1 * 4 / 5) = 1, so the largest norm (100)
        # is clipped to the second largest (4).
        out = agg.arc(t([[1], [2], [3], [4], [-100]], dtype), f=1)
        assert torch.allclose(out, t([[1], [2], [3], [4], [-4]], dtype))
        # f = 0: k = 0, nothing is clipped.
        x = t([[1], [2], [-100]], dtype)
        assert torch.equal(agg.arc(x, f=0), x)

    def test_pipeline(self, dtype):
        x = t([[0], [1], [3], [10]], dtype)
        expected = agg.trimmed_mean(agg.nnm(x, f=1), f=1)
        assert torch.allclose(agg.get("nnm>trimmed_mean")(x, f=1), expected)
        assert torch.allclose(agg.compose("nnm", "trimmed_mean")(x, f=1), expected)


def test_requirements_match_the_papers():
    expected = {
        "krum": 5,  # n >= 2f + 3 at f = 1
        "multi_krum": 5,
        "bulyan": 7,  # n >= 4f + 3
        "median": 3,
        "trimmed_mean": 3,
        "meamed": 3,
        "geometric_median": 3,
        "mda": 3,
        "centered_clipping": 3,
        "nnm": 3,
        "arc": 3,
    }
    for name, n in expected.items():
        assert agg.get(name).min_n(1) == n, name
    assert str(agg.krum.requirement) == "n >= 2f + 3"
    assert str(agg.bulyan.requirement) == "n >= 4f + 3"


def test_registry_metadata_is_complete():
    for rule in agg.rules():
        assert rule.paper and rule.summary, rule.name
        assert "Args:" in rule.doc and "Returns:" in rule.doc, rule.name
    assert set(agg.names("preaggregator")) == {"nnm", "bucketing", "clipping", "arc"}
    assert not agg.average.robust and agg.krum.robust


def test_bucketing_output_count():
    assert agg.bucketing.output_count(7, 1, s=3) == math.ceil(7 / 3)
    assert agg.get("bucketing", s=2).output_count(5, 1) == 3
    assert agg.nnm.output_count(5, 1) == 5
