"""Bad input gets a specific error that says what was wrong and what would work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import byzance.aggregators as agg
from byzance import errors


def honest(n: int = 7, d: int = 3, dtype=torch.float64) -> torch.Tensor:
    return torch.arange(n * d, dtype=dtype).reshape(n, d) / 10


def test_every_error_is_a_value_error():
    for cls in (
        errors.InvalidFError,
        errors.ToleranceError,
        errors.ShapeError,
        errors.NonFiniteInputError,
        errors.IntractableError,
        errors.UnknownNameError,
        errors.InvalidParameterError,
    ):
        assert issubclass(cls, ValueError)


@pytest.mark.parametrize("f", [-1, 1.5, "2", True, None])
def test_bad_f(f):
    with pytest.raises(errors.InvalidFError, match=r"non-negative integer|>= 0"):
        agg.median(honest(), f=f)


def test_wrong_f_is_named_in_one_short_line():
    """A tensor passed as f (say, weights in f's place) is named by its shape, not printed."""
    with pytest.raises(errors.InvalidFError) as caught:
        agg.median(honest(), f=torch.rand(1000))
    message = str(caught.value)
    assert "a Tensor of shape (1000,)" in message
    assert "\n" not in message and len(message) < 200


def test_numpy_integer_f_is_accepted():
    assert agg.median(honest(), f=np.int64(1)).shape == (3,)


@pytest.mark.parametrize(
    ("name", "n", "f", "need"),
    [("krum", 4, 1, 5), ("multi_krum", 6, 2, 7), ("bulyan", 10, 2, 11), ("median", 4, 2, 5)],
)
def test_f_too_large_names_the_requirement_and_the_smallest_n(name, n, f, need):
    with pytest.raises(errors.ToleranceError) as err:
        agg.get(name)(honest(n), f=f)
    msg = str(err.value)
    assert str(agg.get(name).requirement) in msg
    assert f"at least n={need}" in msg
    assert f"got n={n}" in msg


def test_tolerance_error_suggests_a_lower_f():
    with pytest.raises(errors.ToleranceError, match="lower f to 1"):
        agg.krum(honest(6), f=2)


def test_different_sizes_name_the_vector():
    vectors = [torch.zeros(4), torch.zeros(4), torch.zeros(5)]
    with pytest.raises(errors.ShapeError, match="vector 2 has shape \\(5,\\)"):
        agg.median(vectors, f=0)


@pytest.mark.parametrize(
    ("grads", "match"),
    [
        (torch.zeros(5), "1-D"),
        (torch.zeros(2, 3, 4), "3-D"),
        (torch.zeros(0, 4), "empty"),
        (torch.zeros(3, 0), "empty"),
        ([], "empty"),
        ("abc", "must be a tensor"),
        (torch.zeros(3, 2, dtype=torch.complex64), "complex"),
    ],
)
def test_bad_shapes(grads, match):
    with pytest.raises(errors.ShapeError, match=match):
        agg.average(grads, f=0)


def test_inputs_accepted_at_the_edge():
    x = honest()
    expected = agg.median(x, f=1)
    assert torch.equal(agg.median(x.numpy(), f=1), expected)
    assert torch.equal(agg.median(list(x), f=1), expected)
    # Python numbers become the default float dtype, as torch.tensor would make them.
    from_lists = agg.median(x.tolist(), f=1)
    assert from_lists.dtype == torch.get_default_dtype()
    assert torch.allclose(from_lists.double(), expected)
    # numpy arrays with negative strides, and non-numbers, at the edge.
    assert torch.equal(agg.median(x.numpy()[::-1], f=1), agg.median(x.flip(0), f=1))
    with pytest.raises(errors.ShapeError, match="must hold numbers"):
        agg.median([["a"], ["b"]], f=0)
    # A list of same-shaped matrices is flattened, one row per participant.
    assert agg.median([torch.ones(2, 3)] * 3, f=1).shape == (6,)
    # Integers become the default float dtype; float dtypes are kept.
    assert agg.median(torch.arange(6).reshape(3, 2), f=1).dtype == torch.get_default_dtype()
    assert agg.median(x.float(), f=1).dtype == torch.float32


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", ["median", "krum", "geometric_median", "bulyan"])
def test_a_non_finite_row_is_dropped_and_counts_as_faulty(name, bad):
    x = honest(8)
    poisoned = x.clone()
    poisoned[3, 1] = bad
    rule = agg.get(name)
    out = rule(poisoned, f=1)
    assert torch.isfinite(out).all()
    kept = torch.cat([x[:3], x[4:]])
    assert torch.allclose(out, rule(kept, f=0))


def test_more_non_finite_rows_than_f_raise():
    x = honest(7)
    x[0, 0] = float("nan")
    x[5, 2] = float("inf")
    with pytest.raises(errors.NonFiniteInputError, match=r"2 of 7 .*rows \[0, 5\].*f=1"):
        agg.median(x, f=1)


def test_huge_but_finite_rows_are_kept():
    x = honest(5, dtype=torch.float32)
    x[0] = torch.finfo(torch.float32).max  # the float64 row sum stays finite
    assert torch.isfinite(agg.median(x, f=1)).all()
    y = honest(5)
    y[0] = torch.finfo(torch.float64).max  # the row sum overflows: checked element-wise
    assert torch.isfinite(agg.median(y, f=1)).all()


def test_dropping_non_finite_rows_is_reported_in_tolerance_errors():
    x = honest(5)
    x[0, 0] = float("nan")
    # 4 finite rows, f = 1 -> 0 after dropping: krum needs n >= 3 and has 4, fine;
    # with f = 2 -> 1 after dropping: needs 5, has 4.
    with pytest.raises(errors.ToleranceError, match="after dropping 1 non-finite input"):
        agg.krum(x, f=2)


def test_weights_follow_dropped_rows():
    x = torch.tensor([[0.0], [1.0], [float("nan")], [10.0]])
    out = agg.geometric_median(x, f=1, weights=[1.0, 1.0, 100.0, 5.0], tol=1e-12, max_iter=500)
    assert torch.allclose(out, torch.tensor([10.0]), atol=1e-3)
    with pytest.raises(errors.InvalidParameterError, match="one per input"):
        agg.geometric_median(x, f=1, weights=[1.0, 1.0])


def test_unknown_rule_suggests_the_closest_name():
    with pytest.raises(errors.UnknownNameError, match="Did you mean 'krum'"):
        agg.get("krun")


def test_unknown_parameter_lists_the_accepted_ones():
    with pytest.raises(errors.InvalidParameterError, match="accepts: m"):
        agg.multi_krum(honest(), f=1, k=3)
    with pytest.raises(errors.InvalidParameterError, match="no parameters"):
        agg.get("median", tau=1.0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: agg.multi_krum(honest(), f=1, m=0), "need m >= 1"),
        (lambda: agg.geometric_median(honest(), f=1, max_iter=0), "max_iter"),
        (lambda: agg.geometric_median(honest(), f=1, weights=[0.0] * 7), "not all zero"),
        (lambda: agg.centered_clipping(honest(), f=1, tau=0.0), "need tau > 0"),
        (lambda: agg.centered_clipping(honest(), f=1, center=torch.zeros(4)), "shape"),
        (
            lambda: agg.centered_clipping(honest(), f=1, center=torch.full((3,), float("nan"))),
            "NaN",
        ),
        (lambda: agg.clipping(honest(), f=1, c=-1.0), "need c > 0"),
        (lambda: agg.bucketing(honest(), f=1, s=0), "need s >= 1"),
        (lambda: agg.bulyan(honest(), f=1, selection="nnm"), "selection rule"),
    ],
)
def test_bad_parameters(call, match):
    with pytest.raises(errors.InvalidParameterError, match=match):
        call()


def test_mda_refuses_intractable_enumeration():
    with pytest.raises(errors.IntractableError, match=r"C\(40, 15\).*multi_krum"):
        agg.mda(torch.randn(40, 3), f=15)


def test_compose_checks_stage_kinds_and_sizes():
    with pytest.raises(errors.InvalidParameterError, match="only pre-aggregators"):
        agg.compose("median", "krum")
    with pytest.raises(errors.InvalidParameterError, match="last stage must be"):
        agg.compose("nnm")
    # Bucketing by 2 leaves 4 rows for 7 inputs: krum with f = 1 needs 5.
    with pytest.raises(errors.ToleranceError, match="receives 4 rows"):
        agg.get("bucketing>krum")(honest(7), f=1)
    assert agg.get("bucketing>krum").min_n(1) == 9


def test_a_rule_or_pipeline_ending_in_a_center_carries_state_across_steps():
    import byzance.aggregators as agg

    assert agg.get("centered_clipping").carries_center
    assert not agg.get("median").carries_center
    assert agg.get("nnm>centered_clipping").carries_center


def test_weights_that_require_grad_leave_no_graph():
    # no_grad is entered only when autograd would record the call: here a per-row
    # parameter requires grad although the inputs do not.
    weights = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    x = torch.randn(3, 4)
    for rule in (agg.weighted_average, agg.weighted_median):
        assert not rule(x, 0, weights=weights).requires_grad
