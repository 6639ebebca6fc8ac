"""The quick demonstration: one huge vector moves the average anywhere; robust rules hold.

Honest participants send noisy copies of a true gradient; f Byzantine ones
send one vector of huge norm (the "billionaire in the room"). We report each
rule's distance to the honest mean as the Byzantine norm grows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from byzance import aggregators

DEMO_RULES = (
    "average",
    "krum",
    "multi_krum",
    "median",
    "trimmed_mean",
    "meamed",
    "geometric_median",
    "bulyan",
    "mda",
    "centered_clipping(iterations=30)",
    "nnm>trimmed_mean",
    "arc>krum",
)


@dataclass(frozen=True)
class DemoResult:
    """Distances to the honest mean, one per Byzantine norm, for one rule."""

    rule: str
    requirement: str
    errors: tuple[float, ...]


def run_demo(
    *,
    honest: int = 15,
    byzantine: int = 2,
    dim: int = 1000,
    norms: tuple[float, ...] = (0.0, 1e2, 1e4, 1e8, 1e12),
    noise: float = 1.0,
    seed: int = 0,
    rules: tuple[str, ...] = DEMO_RULES,
) -> list[DemoResult]:
    """Aggregate ``honest`` noisy vectors (shape (dim,)) plus ``byzantine`` huge ones.

    For each Byzantine norm (0 means the Byzantine participants behave), every
    rule aggregates the (honest + byzantine, dim) input with f = byzantine and
    reports the Euclidean distance from its output to the honest mean.
    """
    gen = torch.Generator().manual_seed(seed)
    truth = torch.randn(dim, generator=gen)
    good = truth + noise * torch.randn(honest, dim, generator=gen)
    direction = torch.randn(dim, generator=gen)
    direction /= direction.norm()
    behaving = truth + noise * torch.randn(byzantine, dim, generator=gen)
    honest_mean = good.mean(dim=0)
    results = []
    for name in rules:
        rule = _rule_from_spec(name)
        errors = []
        for norm in norms:
            bad = behaving if norm == 0 else (norm * direction).expand(byzantine, dim)
            grads = torch.cat([good, bad])
            out = rule(grads, f=byzantine)
            errors.append(float((out - honest_mean).norm()))
        results.append(DemoResult(name, str(rule.requirement), tuple(errors)))
    return results


def _rule_from_spec(spec: str) -> aggregators.Rule:
    """``"name"`` or ``"name(key=value, ...)"`` with integer/float values, as a Rule."""
    if "(" not in spec:
        return aggregators.get(spec)
    name, _, args = spec.rstrip(")").partition("(")
    params = {}
    for item in filter(None, (a.strip() for a in args.split(","))):
        key, _, value = item.partition("=")
        params[key.strip()] = float(value) if "." in value or "e" in value else int(value)
    return aggregators.get(name.strip(), **params)
