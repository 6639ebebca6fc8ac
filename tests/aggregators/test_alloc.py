"""Fresh result blocks for the rules that return rows (huge pages above 32 MiB on CPU)."""

from __future__ import annotations

import pickle

import pytest
import torch

import byzance.aggregators as agg
from byzance.aggregators import _alloc
from byzance.aggregators._alloc import empty_rows

BIG = (4, (8 << 20) // 4 + 1)  # just over 32 MiB of float32: the mapped path


def test_small_blocks_and_other_dtypes_are_plain_tensors():
    like = torch.zeros(3, dtype=torch.bfloat16)
    out = empty_rows((4, 5), like=like)
    assert out.shape == (4, 5) and out.dtype == torch.bfloat16 and out.is_contiguous()


def test_a_large_block_is_a_usable_private_tensor():
    x = torch.ones(BIG)
    out = empty_rows(BIG, like=x)
    assert out.shape == BIG and out.dtype == torch.float32 and out.is_contiguous()
    if _alloc._MADV_HUGEPAGE is not None:  # Linux: the mapping, not torch's allocator
        assert not out.untyped_storage().resizable()
    torch.mul(x, 3.0, out=out)
    assert out.data_ptr() != x.data_ptr() and bool((out == 3.0).all()) and bool((x == 1.0).all())
    again = pickle.loads(pickle.dumps(out[:, :10]))
    assert torch.equal(again, torch.full((4, 10), 3.0))


def test_falls_back_to_torch_empty_without_huge_pages(monkeypatch):
    monkeypatch.setattr(_alloc, "_MADV_HUGEPAGE", None)
    out = empty_rows(BIG, like=torch.zeros(1))
    assert out.shape == BIG and out.is_contiguous() and out.untyped_storage().resizable()


@pytest.mark.parametrize("name", ["clipping", "arc", "bucketing"])
def test_large_row_outputs_match_the_definition_and_leave_the_input_alone(name):
    x = torch.randn(BIG, generator=torch.Generator().manual_seed(0))
    x *= torch.tensor([[1e-4], [2e-4], [3e-4], [1.0]])  # row 3 above the threshold c = 1
    before = x.clone()
    params = {"s": 4, "seed": 0} if name == "bucketing" else {}
    out = agg.get(name)(x, f=1, **params)
    assert torch.equal(x, before)
    norms = torch.linalg.vector_norm(x, dim=1)
    if name == "bucketing":  # one bucket of all four rows
        torch.testing.assert_close(out, x.mean(dim=0, keepdim=True))
    elif name == "clipping":
        torch.testing.assert_close(out, x * torch.clamp(1.0 / norms, max=1.0)[:, None])
    else:  # k = floor(2 * 1 * 3 / 4) = 1: the largest row clipped to the second largest norm
        torch.testing.assert_close(out, x * torch.clamp(norms[2] / norms, max=1.0)[:, None])
