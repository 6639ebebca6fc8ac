"""aggregate_with_missing: rules on (n, d) inputs where some coordinates never arrived."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import byzance.aggregators as agg
from byzance.aggregators.missing import masked_coordinate_rule
from byzance.errors import InvalidParameterError, NonFiniteInputError, ShapeError, ToleranceError

T, F = True, False
COORDINATE_WISE = sorted(r.name for r in agg.rules() if r.missing == "coordinate_wise")


def _reference(name: str, x: torch.Tensor, present: torch.Tensor, f: int) -> torch.Tensor:
    """The definition, one coordinate at a time: the rule on the m present values."""
    out = torch.zeros(x.shape[1], dtype=x.dtype)
    for j in range(x.shape[1]):
        values = x[present[:, j], j]
        m = values.numel()
        if m == 0 or (name != "average" and m < 2 * f + 1):
            continue  # nothing, or too few values to outvote f Byzantine ones: 0
        out[j] = agg.get(name)(values[:, None], f)[0]
    return out


def test_a_coordinate_with_too_few_values_for_f_aggregates_to_zero() -> None:
    # Column 0: only the Byzantine 1e6 and one honest value arrived (2 < 2f + 1 = 3).
    x = torch.tensor([[1e6, 1.0], [0.5, 2.0], [0.0, 3.0], [0.0, 4.0], [0.0, 5.0]])
    present = torch.tensor([[T, T], [T, T], [F, T], [F, T], [F, T]])
    for name in ("median", "trimmed_mean", "meamed", "krum"):
        out = agg.aggregate_with_missing(name, x, present, f=1)
        assert out[0].abs() < 1.0, name


def test_hand_worked_median_trimmed_mean_meamed_average() -> None:
    x = torch.tensor(
        [
            [1.0, 10.0, 0.0],
            [2.0, 20.0, 1.0],
            [3.0, 30.0, 2.0],
            [4.0, 40.0, 2.5],
            [100.0, 50.0, 100.0],
        ]
    )
    present = torch.tensor([[T, T, T], [T, F, T], [F, T, T], [T, F, T], [T, T, T]])
    # column 0 present: 1, 2, 4, 100; column 1: 10, 30, 50; column 2: all five.
    assert torch.equal(
        agg.aggregate_with_missing("median", x, present, f=1), torch.tensor([3.0, 30.0, 2.0])
    )
    # trimmed mean, f=1: column 0 keeps 2, 4; column 1 keeps 30; column 2 keeps 1, 2, 2.5.
    got = agg.aggregate_with_missing("trimmed_mean", x, present, f=1)
    torch.testing.assert_close(got, torch.tensor([3.0, 30.0, 5.5 / 3]))
    # MeaMed, f=1: column 0 median 3, the 3 closest are 1, 2, 4; column 1: 10, 30 (tie
    # with 30, 50 goes to the lower window); column 2: the 4 closest to 2 are 0, 1, 2, 2.5.
    got = agg.aggregate_with_missing("meamed", x, present, f=1)
    torch.testing.assert_close(got, torch.tensor([7.0 / 3, 20.0, 5.5 / 4]))
    got = agg.aggregate_with_missing("average", x, present, f=1)
    torch.testing.assert_close(got, torch.tensor([107.0 / 4, 30.0, 105.5 / 5]))
    zero = agg.aggregate_with_missing("average", x, present, f=1, fill="zero")
    torch.testing.assert_close(zero, torch.tensor([107.0 / 5, 90.0 / 5, 105.5 / 5]))


@pytest.mark.parametrize("name", COORDINATE_WISE)
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 12),
    d=st.integers(1, 12),
    loss=st.floats(0.0, 0.9),
    f_frac=st.floats(0.0, 0.5),
)
def test_coordinate_wise_rules_use_exactly_the_present_values(
    name: str, seed: int, n: int, d: int, loss: float, f_frac: float
) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    present = torch.rand(n, d, generator=g) >= loss
    f = int(f_frac * (n - 1))
    expected = _reference(name, x, present, f)
    torch.testing.assert_close(masked_coordinate_rule(name, x, present, f), expected)
    # Values at missing entries must not matter at all.
    garbage = torch.where(present, x, torch.full_like(x, 1e30))
    torch.testing.assert_close(masked_coordinate_rule(name, garbage, present, f), expected)


@pytest.mark.parametrize("name", COORDINATE_WISE)
@pytest.mark.parametrize("n", [1, 2, 3, 7, 10])
def test_masked_kernels_equal_the_rules_exactly_when_nothing_is_missing(name: str, n: int) -> None:
    x = torch.randn(n, 257, generator=torch.Generator().manual_seed(n))
    f = (n - 1) // 2
    present = torch.ones_like(x, dtype=torch.bool)
    assert torch.equal(masked_coordinate_rule(name, x, present, f), agg.get(name)(x, f))


@pytest.mark.parametrize(
    "name",
    ["krum", "multi_krum", "bulyan", "geometric_median", "mda", "nnm>trimmed_mean", "median"],
)
def test_every_rule_is_unchanged_when_nothing_is_missing(name: str) -> None:
    x = torch.randn(11, 16, generator=torch.Generator().manual_seed(3))
    present = torch.ones_like(x, dtype=torch.bool)
    assert torch.equal(agg.aggregate_with_missing(name, x, present, f=2), agg.get(name)(x, 2))


def test_distance_based_rules_see_missing_coordinates_filled_with_the_median() -> None:
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 9.0], [2.0, 2.0], [50.0, 50.0], [1.5, 1.0]])
    present = torch.ones_like(x, dtype=torch.bool)
    present[2, 1] = False  # median of column 1 over the others: 1.0
    filled = x.clone()
    filled[2, 1] = 1.0
    assert torch.equal(agg.fill_with_median(x, present), filled)
    for name in ["krum", "geometric_median", "nnm>median"]:
        got = agg.aggregate_with_missing(name, x, present, f=1)
        assert torch.equal(got, agg.get(name)(filled, 1)), name
    # fill="median" applies the same fill to a coordinate-wise rule.
    got = agg.aggregate_with_missing("average", x, present, f=1, fill="median")
    assert torch.equal(got, filled.mean(dim=0))


def test_centered_clipping_takes_its_parameters_through() -> None:
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    present = torch.rand(7, 5, generator=torch.Generator().manual_seed(2)) > 0.3
    present[:, 0] = True
    center = torch.ones(5)
    got = agg.aggregate_with_missing("centered_clipping", x, present, f=1, center=center, tau=0.5)
    filled = agg.fill_with_median(x, present)
    assert torch.equal(got, agg.centered_clipping(filled, 1, center=center, tau=0.5))


def test_a_worker_with_nothing_present_is_dropped_as_crashed() -> None:
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(5))
    present = torch.ones_like(x, dtype=torch.bool)
    present[4] = False
    x[4] = 1e9  # whatever its buffer held must not matter
    assert agg.crashed_workers(present).tolist() == [4]
    live = torch.cat([x[:4], x[5:]])
    for name in ["median", "krum", "trimmed_mean"]:
        got = agg.aggregate_with_missing(name, x, present, f=1)
        assert torch.equal(got, agg.get(name)(live, 1)), name


def test_too_few_live_workers_is_a_clear_error() -> None:
    x = torch.randn(5, 3)
    present = torch.ones_like(x, dtype=torch.bool)
    present[:2] = False
    with pytest.raises(
        ToleranceError, match=r"krum requires.*2 workers whose whole gradient was lost"
    ):
        agg.aggregate_with_missing("krum", x, present, f=1)


def test_median_resists_a_byzantine_worker_when_coordinates_are_missing() -> None:
    honest = torch.randn(6, 40, generator=torch.Generator().manual_seed(9)) * 0.1 + 1.0
    x = torch.cat([honest, torch.full((1, 40), 1e6)])
    present = torch.rand(7, 40, generator=torch.Generator().manual_seed(10)) > 0.2
    present[6] = True  # the attacker always delivers
    # At least 3 honest values at every coordinate (3 of 4 or more present): the honest
    # majority that each coordinate needs. Loss does not change which values are Byzantine,
    # but it thins out the honest ones: with fewer, a coordinate-wise rule is exposed.
    present[:3] = True
    present[3:6, 0] = False
    for name in ["median", "trimmed_mean", "meamed", "krum"]:
        got = agg.aggregate_with_missing(name, x, present, f=1)
        assert got.abs().max() < 2.0, name
    assert agg.aggregate_with_missing("average", x, present, f=1).abs().max() > 1e4


def test_a_coordinate_nobody_delivered_aggregates_to_zero() -> None:
    x = torch.randn(5, 3)
    present = torch.ones_like(x, dtype=torch.bool)
    present[:, 1] = False
    for name in [*COORDINATE_WISE, "krum"]:
        assert agg.aggregate_with_missing(name, x, present, f=1)[1] == 0.0, name


def test_non_finite_present_values_count_as_faulty_but_missing_ones_do_not() -> None:
    x = torch.randn(5, 3)
    present = torch.ones_like(x, dtype=torch.bool)
    x[1, 2] = float("nan")
    present[1, 2] = False  # a NaN that did not arrive is not the worker's fault
    agg.aggregate_with_missing("median", x, present, f=0)
    present[1, 2] = True
    with pytest.raises(NonFiniteInputError, match="NaN or inf"):
        agg.aggregate_with_missing("median", x, present, f=0)
    got = agg.aggregate_with_missing("median", x, present, f=1)
    assert torch.equal(got, agg.median(torch.cat([x[:1], x[2:]]), 0))


def test_bad_masks_are_rejected() -> None:
    x = torch.randn(4, 3)
    with pytest.raises(ShapeError, match="boolean"):
        agg.aggregate_with_missing("median", x, torch.ones(4, 3), f=1)
    with pytest.raises(ShapeError, match="shape of grads"):
        agg.aggregate_with_missing("median", x, torch.ones(4, 2, dtype=torch.bool), f=1)


def test_the_coordinate_wise_rules_are_those_registered_so() -> None:
    assert COORDINATE_WISE == ["average", "meamed", "median", "trimmed_mean"]
    with pytest.raises(InvalidParameterError, match="krum needs whole vectors"):
        masked_coordinate_rule("krum", torch.ones(3, 2), torch.ones(3, 2, dtype=torch.bool), 0)
    with pytest.raises(InvalidParameterError, match="no parameter 'tau'"):
        agg.aggregate_with_missing(
            "median", torch.ones(3, 2), torch.tensor([[T, F], [T, T], [T, T]]), 0, tau=1.0
        )
