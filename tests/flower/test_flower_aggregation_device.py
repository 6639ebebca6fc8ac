"""The Flower aggregation on each available device: replies aggregated there, arrays back on the host."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")

from byzance.errors import InvalidParameterError
from byzance.flower.aggregation import RobustAggregator


def test_the_median_of_replies_on_the_device(device):
    agg = RobustAggregator("median", 1, device=device.type)
    reference = [np.zeros((2, 2), dtype=np.float32), np.zeros(3, dtype=np.float32)]
    replies = [
        (i, [np.full((2, 2), v, dtype=np.float32), np.full(3, v, dtype=np.float32)])
        for i, v in enumerate([1.0, 2.0, 1e9])
    ]
    out, report = agg.aggregate(replies, reference)
    assert isinstance(out[0], np.ndarray) and out[0].dtype == np.float32
    assert np.all(out[0] == 2.0) and np.all(out[1] == 2.0)
    assert report.aggregated == [0, 1, 2]


def test_a_device_that_is_not_here_is_one_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InvalidParameterError, match="no CUDA device"):
        RobustAggregator("median", 1, device="cuda")
