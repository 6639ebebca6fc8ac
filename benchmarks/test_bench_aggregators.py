"""Every rule, its phases and the two floors at n = 20, d = 1e6 (float32), with pytest-benchmark.

    .venv/bin/python -m pytest benchmarks --benchmark-enable -q

Not part of the test suite (testpaths is tests/, and pyproject disables
benchmarks by default). The cases, and each rule's f, are those of
``byzance bench`` (see :mod:`byzance.experiments.bench`); each is called once
before timing, so that compiling the coordinate-wise kernels is not timed.
"""

from __future__ import annotations

import re

import pytest
import torch

from byzance.experiments.bench import TARGET_D, TARGET_N, bench_cases

CASES = [case for case in bench_cases(TARGET_N) if case.run is not None]


@pytest.fixture(scope="module")
def grads() -> torch.Tensor:
    return torch.randn(TARGET_N, TARGET_D, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "case", CASES, ids=[re.sub(r"\W+", "_", case.name).strip("_") for case in CASES]
)
def test_bench(benchmark, grads, case):
    benchmark.group = f"n={TARGET_N}, d={TARGET_D:.0e}"
    benchmark.extra_info.update(f=case.f, floor=case.floor or "", note=case.note)
    case.run(grads)  # warm-up: compiles the coordinate-wise kernels on the first call
    out = benchmark(case.run, grads)
    assert torch.is_tensor(out) and bool(torch.isfinite(out).all())
