"""Bucketing, a pre-aggregator against heterogeneity attacks."""

from __future__ import annotations

import math
from typing import Annotated

import torch

from byzance.aggregators._alloc import empty_rows
from byzance.aggregators._input import all_finite, first_pass, first_pass_armed
from byzance.aggregators._registry import Requirement, Rule, register
from byzance.errors import InvalidParameterError
from byzance.registry import Bound


def _bucketing(
    x: torch.Tensor,
    f: int,
    *,
    s: Annotated[int, Bound(1)] = 2,
    generator: torch.Generator | None = None,
    seed: Annotated[int, Bound(0)] | None = None,
) -> torch.Tensor:
    """Shuffle the inputs into ceil(n / s) buckets of s (the last may be smaller), average each.

    Karimireddy, He, Jaggi, "Byzantine-Robust Learning on Heterogeneous
    Datasets via Bucketing", ICLR 2022. The permutation is drawn from
    ``generator`` (or a fresh generator seeded with ``seed``; else torch's
    global CPU generator), on the CPU so that runs repeat across devices (a
    CUDA generator draws on its device), and moved to the input's device. The
    next rule keeps the same f (each Byzantine input spoils at most one bucket).

    Args:
        x: inputs, shape (n, d).
        f: Byzantine inputs tolerated (passed on unchanged).
        s: bucket size >= 1.
        generator: source of the random permutation.
        seed: seed for a fresh generator, when no generator is given.

    Returns:
        Shape (ceil(n / s), d).
    """
    if isinstance(s, bool) or not isinstance(s, int) or s < 1:
        raise InvalidParameterError(
            f"bucketing: bucket size s must be an integer >= 1; got s={s!r}."
        )
    n = x.shape[0]
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    # Drawn on the generator's device (the CPU, unless a device generator is given), then
    # moved to x's device: the same seed gives the same buckets on every device.
    draw_on = generator.device if generator is not None else torch.device("cpu")
    perm = torch.randperm(n, generator=generator, device=draw_on).to(x.device)
    m = math.ceil(n / s)
    bucket = torch.arange(n, device=x.device) // s  # bucket of the i-th row of the permutation
    out = empty_rows((m, x.shape[1]), like=x)
    if x.device.type == "cpu":
        # out[b] = sum of (1/s) x_i over bucket b's rows, in one pass over x (index_add
        # is sequential on the CPU: a fixed order). An (m, n) mixing product would
        # cost O(n^2 d / s) multiply-adds: 30x one pass at n = 1000.
        row_bucket = torch.empty_like(bucket)
        row_bucket[perm] = bucket
        out.zero_().index_add_(0, row_bucket, x, alpha=1.0 / s)
        if n % s:  # the last bucket holds n % s rows: its sum / s times s / (n % s)
            out[-1].mul_(s / (n % s))
    else:  # one mixing product: deterministic, where index_add accumulates atomically
        sizes = torch.bincount(bucket, minlength=m).to(x.dtype)
        mixing = torch.zeros(m, n, dtype=x.dtype, device=x.device)
        mixing[bucket, perm] = 1.0 / sizes[bucket]
        out = torch.mm(mixing, x, out=out)
    if first_pass_armed():
        # A NaN/inf input row makes its bucket's average non-finite (its weight 1/s is
        # not zero): one reduction over the (m, d) result stands for a pass over x.
        first_pass(all_finite(out))
    return out


bucketing = register(
    Rule(
        name="bucketing",
        impl=_bucketing,
        requirement=Requirement(0, 1),
        paper="Karimireddy, He, Jaggi, Byzantine-Robust Learning on Heterogeneous Datasets "
        "via Bucketing, ICLR 2022",
        summary="random buckets of s inputs, averaged",
        cost=(
            "O(nd): one pass adding each input into its bucket (on the CPU; elsewhere one "
            "(m x n) by (n x d) product, m = ceil(n / s)); output (m, d)."
        ),
        missing="whole_vectors",
        speed_floor="pass",
        takes_generator=True,
        kind="preaggregator",
        checks_rows=True,
        out_count=lambda n, f, params: math.ceil(n / params.get("s", 2)),
        # ceil(n / s) >= m exactly when n >= (m - 1) s + 1.
        in_count=lambda m, f, params: (max(m, 1) - 1) * params.get("s", 2) + 1,
    )
)
