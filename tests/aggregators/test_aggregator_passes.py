"""Passes over the input: rules must not read (n, d) more often than their definition needs."""

from __future__ import annotations

import sys

import torch

import byzance.aggregators as agg
from byzance.aggregators import _native_rows, _pairwise


def test_weiszfeld_skips_the_stopping_test_after_its_last_iteration(monkeypatch):
    module = sys.modules["byzance.aggregators.geometric_median"]
    calls = []

    def counting(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return _pairwise.distances_to(x, z)

    fused = _native_rows.step_and_sq_distances

    def counting_fused(*args):  # the C kernels' weighted mean with the distances to it
        calls.append(1)
        return fused(*args)

    monkeypatch.setattr(module, "distances_to", counting)
    monkeypatch.setattr(_native_rows, "step_and_sq_distances", counting_fused)
    x = torch.randn(7, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z, iterations = module.weiszfeld(x, tol=0.0, max_iter=3)
    assert iterations == 3
    # After iterations 1 and 2; none after 3; the start's distances come from the Gram
    # products that chose it (central_point_and_distances).
    assert len(calls) == 2
    calls.clear()
    module.weiszfeld(x, tol=0.0, max_iter=3, init=x.mean(0))
    assert len(calls) == 3  # a given start: its distances too
    # The third iterate (a fourth would still move it), also through the rule.
    longer, _ = module.weiszfeld(x, tol=0.0, max_iter=4)
    assert not torch.equal(z, longer)
    assert torch.equal(z, agg.geometric_median(x, f=1, tol=0.0, max_iter=3))


def test_arc_computes_the_norms_once(monkeypatch):
    norm = torch.linalg.vector_norm
    full = []

    def counting(t: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if t.ndim == 2:
            full.append(t.shape)
        return norm(t, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "vector_norm", counting)
    x = torch.randn(10, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = agg.arc(x, f=2)
    assert full == [(10, 40)]
    # k = floor(2 * 2 * 8 / 10) = 3: the 3 largest rows end at the 4th largest norm.
    norms = norm(x, dim=1)
    fourth = norms.sort(descending=True).values[3]
    torch.testing.assert_close(norm(out, dim=1), torch.minimum(norms, fourth))
