"""Pairwise distances from one Gram product, checked against the direct formula."""

from __future__ import annotations

import pytest
import torch

from byzance.aggregators import sq_distances


def direct(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_direct_formula(dtype):
    x = torch.randn(12, 300, dtype=dtype, generator=torch.Generator().manual_seed(1))
    dist = sq_distances(x)
    assert dist.dtype == dtype and dist.shape == (12, 12)
    torch.testing.assert_close(dist.double(), direct(x), rtol=1e-5, atol=1e-4)
    assert torch.equal(dist, dist.T)
    assert (dist.diagonal() == 0).all() and (dist >= 0).all()


def test_large_common_offset_does_not_cancel():
    # Vectors 1e4 + small noise: the plain Gram formula in float32 loses every
    # digit of the distances (error ~ eps * |x|^2 ~ 1e3 vs distances ~ 1e-2).
    gen = torch.Generator().manual_seed(2)
    x = (1e4 + 1e-2 * torch.randn(10, 1000, generator=gen, dtype=torch.float64)).float()
    got = sq_distances(x).double()
    want = direct(x)
    off = ~torch.eye(10, dtype=torch.bool)
    assert ((got - want).abs()[off] / want[off]).max() < 1e-3


def test_duplicates_have_zero_distance():
    x = torch.randn(3, 50).repeat(2, 1)
    dist = sq_distances(x)
    assert torch.allclose(dist[:3, 3:].diagonal(), torch.zeros(3), atol=1e-5)
