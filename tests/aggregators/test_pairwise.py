"""Pairwise distances from one Gram product, checked against the direct formula."""

from __future__ import annotations

import math

import pytest
import torch

from byzance.aggregators import _pairwise, sq_distances
from byzance.aggregators._pairwise import distances_to


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


def test_distances_to_is_accurate_in_float32_at_a_million_coordinates():
    # torch.cdist's running sum reaches ~3e-4 relative error here; a pairwise
    # sum of the squared differences stays near float32's rounding.
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 1_000_000, generator=gen)
    z = 0.5 + 0.1 * torch.randn(1_000_000, generator=gen)
    got = distances_to(x, z)
    want = torch.linalg.vector_norm(x.double() - z.double(), dim=1)
    assert got.dtype == torch.float32 and got.shape == (4,)
    assert ((got.double() - want).abs() / want).max() < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_distances_to_over_several_row_blocks(monkeypatch, dtype):
    monkeypatch.setattr(_pairwise, "_BLOCK_ELEMENTS", 3 * 50)  # blocks of 3 rows; 7 = 3 + 3 + 1
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(7, 50, generator=gen).to(dtype)
    z = torch.randn(50, generator=gen).to(dtype)
    got = distances_to(x, z)
    want = torch.linalg.vector_norm(x.double() - z.double(), dim=1)
    assert got.dtype == dtype
    torch.testing.assert_close(
        got.double(), want, rtol=1e-2 if dtype == torch.bfloat16 else 1e-6, atol=0
    )
    assert torch.equal(distances_to(x, x[2])[2], torch.zeros((), dtype=dtype))


def test_distances_to_recovers_squares_that_overflow():
    # |x_0 - z|^2 = 2e40 overflows float32; the distance 1.4e20 does not. 4.2e38 does.
    x = torch.tensor([[1e20, -1e20, 0.0], [3e38, -3e38, 0.0], [1.0, 2.0, 2.0]])
    got = distances_to(x, torch.zeros(3))
    assert got[0].item() == pytest.approx(math.sqrt(2) * 1e20, rel=1e-6)
    assert got[1].item() == math.inf
    assert got[2].item() == 3.0
