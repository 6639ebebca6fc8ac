"""The boundary check for non-finite rows: one cheap pass, exact classification."""

from __future__ import annotations

import pytest
import torch

from byzance.aggregators._input import finite_rows

INF = float("inf")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_classifies_nan_inf_and_overflowing_finite_rows(dtype):
    big = torch.finfo(dtype).max
    rows = [
        [1.0, 2.0, 3.0, 4.0],  # finite
        [1.0, float("nan"), 3.0, 4.0],  # NaN
        [INF, 2.0, 3.0, 4.0],  # +inf
        [1.0, 2.0, -INF, 4.0],  # -inf
        [INF, -INF, 0.0, 0.0],  # +inf and -inf: the sum is NaN, still non-finite
        [big, big, big, big],  # finite, but the row sum overflows to +inf
        [-big, -big, 0.0, 0.0],  # finite, the row sum overflows to -inf
        [big, -big, big, -big],  # finite, the row sum is finite
    ]
    x = torch.tensor(rows, dtype=dtype)
    want = torch.tensor([True, False, False, False, False, True, True, True])
    assert torch.equal(finite_rows(x), want)
    assert torch.equal(finite_rows(x), torch.isfinite(x).all(dim=1))


def test_float32_values_near_3e38_that_overflow_a_float32_sum_are_finite():
    x = torch.full((3, 1000), 3e38)
    x[1, 500] = float("nan")
    assert torch.equal(finite_rows(x), torch.tensor([True, False, True]))
