"""The rules both libraries have, and how each library is called on the same input.

Each :class:`SharedRule` says how byzance computes the rule (through its
registry, as users call it), how ByzFL does (its class, built and called),
with the same parameters on both sides wherever the two libraries' defaults
differ, and, where ByzFL's definition differs from byzance's (and the
paper's), a byzance call that computes ByzFL's definition, so that the two
outputs can still be compared.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

import byzance.aggregators as agg

# Same parameters on both sides where the libraries' defaults differ.
GM_NU = 0.1  # ByzFL GeometricMedian(nu=0.1, T=3): 3 smoothed Weiszfeld steps from z = 0
GM_ITERATIONS = 3
CC_TAU = 100.0  # ByzFL CenteredClipping(tau=100.0, L=1), from m = 0
CC_ITERATIONS = 1
BUCKET_SIZE = 2  # ByzFL Bucketing defaults to s=1 (a permutation, no averaging)

# ByzFL cases that would run too long or allocate too much, skipped and said so.
MDA_MAX_SUBSETS = 100_000  # ByzFL loops in Python over every subset (~0.1 ms each)
NNM_MAX_GATHER_BYTES = 2 << 30  # ByzFL's NNM gathers an (n, n - f, d) tensor


@dataclass(frozen=True)
class Case:
    """One input and what both sides are called with: x (n, d), f, and derived parameters."""

    x: torch.Tensor
    f: int
    seed: int
    clip_c: float  # static clipping threshold: the median norm of the inputs

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def d(self) -> int:
        return self.x.shape[1]


def bench_f(n: int) -> int:
    """f used at n: n // 5 (2 of 10, 4 of 20, 10 of 50); every shared rule tolerates it."""
    return max(1, n // 5)


def make_case(n: int, d: int, *, seed: int = 0, f: int | None = None) -> Case:
    """n - f honest vectors N(0.1, 1) and f Byzantine ones near -4 times their mean, float32."""
    f = bench_f(n) if f is None else f
    g = torch.Generator().manual_seed(seed)
    honest = 0.1 + torch.randn(n - f, d, generator=g)
    byzantine = -4.0 * honest.mean(dim=0) + 0.5 * torch.randn(f, d, generator=g)
    x = torch.cat([honest, byzantine]).contiguous()
    clip_c = float(torch.linalg.vector_norm(x, dim=1).median())
    return Case(x, f, seed, clip_c)


Ours = Callable[[torch.Tensor, Case], torch.Tensor]
Theirs = Callable[[Any, Any, Case], Any]  # (byzfl, x as tensor or numpy, case) -> output
Skip = Callable[[int, int, int], str | None]  # (n, d, f) -> why ByzFL is not run, or None


def _never(n: int, d: int, f: int) -> str | None:
    return None


def _mda_skip(n: int, d: int, f: int) -> str | None:
    count = math.comb(n, f)
    if count <= MDA_MAX_SUBSETS:
        return None
    return (
        f"not run: C({n}, {f}) = {count:.2e} subsets, each a Python iteration "
        f"(and all listed in memory first)"
    )


def _nnm_skip(n: int, d: int, f: int) -> str | None:
    size = n * (n - f) * d * 4
    if size <= NNM_MAX_GATHER_BYTES:
        return None
    return f"not run: would gather an (n, n - f, d) = ({n}, {n - f}, {d}) tensor, {size / 2**30:.1f} GiB"


@dataclass(frozen=True)
class SharedRule:
    """A rule both libraries implement.

    Attributes:
        name: byzance's registry name.
        byzfl_name: ByzFL's class name.
        ours: byzance's call, (x, case) -> output.
        theirs: ByzFL's call, (byzfl, x, case) -> output.
        params: the parameters both sides get, as text for the report.
        reference: byzance computing ByzFL's definition, where it differs from
            byzance's; None when ``ours`` already is (the outputs are compared
            to ``reference`` or ``ours``).
        difference: how ByzFL's definition differs from the paper's ("" if not).
        python_loop: what ByzFL loops over in Python ("" if it does not).
        theirs_skip: when ByzFL is not run (too long or too much memory).
        passes: the fewest passes over the input (or Gram products) this call needs, with
            these parameters, on an input larger than the caches: a pass that depends on a
            whole-vector result of the previous one (a norm, a distance) cannot share its
            read. ByzFL's time over the floor, divided by it, bounds the speed-up any
            implementation can reach.
    """

    name: str
    byzfl_name: str
    ours: Ours
    theirs: Theirs
    params: str = ""
    reference: Ours | None = None
    difference: str = ""
    python_loop: str = ""
    theirs_skip: Skip = _never
    passes: int = 1

    def compare_with(self, case: Case, ours_out: torch.Tensor) -> torch.Tensor | None:
        """The byzance output to compare with ByzFL's (None: no comparable definition)."""
        return ours_out if self.reference is None else self.reference(case.x, case)


def _krum_like_reference(name: str) -> Ours:
    """byzance's Krum/Multi-Krum with ByzFL's neighbour count n - f - 1, i.e. with f - 1."""

    def reference(x: torch.Tensor, case: Case) -> torch.Tensor:
        params = {"m": case.n - case.f} if name == "multi_krum" else {}
        return agg.get(name)(x, case.f - 1, **params)

    return reference


SHARED_RULES: tuple[SharedRule, ...] = (
    SharedRule(
        "average",
        "Average",
        lambda x, c: agg.average(x, c.f),
        lambda B, x, c: B.aggregators.Average()(x),
    ),
    SharedRule(
        "median",
        "Median",
        lambda x, c: agg.median(x, c.f),
        lambda B, x, c: B.aggregators.Median()(x),
        difference="same definition (`torch.quantile(q=0.5)`: the mean of the two middle values)",
    ),
    SharedRule(
        "trimmed_mean",
        "TrMean",
        lambda x, c: agg.trimmed_mean(x, c.f),
        lambda B, x, c: B.aggregators.TrMean(f=c.f)(x),
    ),
    SharedRule(
        "geometric_median",
        "GeometricMedian",
        lambda x, c: agg.geometric_median(
            x,
            c.f,
            nu=GM_NU,
            max_iter=GM_ITERATIONS,
            tol=0.0,
            init=torch.zeros(c.d, dtype=x.dtype),
        ),
        lambda B, x, c: B.aggregators.GeometricMedian(nu=GM_NU, T=GM_ITERATIONS)(x),
        params=f"nu={GM_NU}, {GM_ITERATIONS} iterations from 0",
        # The distances to the start, then each iteration's weighted mean (the distances to
        # it read with it, panel by panel: they only sum over the columns).
        passes=GM_ITERATIONS + 1,
        difference=(
            "a fixed T=3 smoothed Weiszfeld steps from z = 0 with no convergence test: an "
            "approximation of the geometric median (Pillutla et al., IEEE TSP 2022, iterate "
            "to a tolerance); byzance's default iterates until the objective's relative "
            "decrease is < 1e-6, from the coordinate-wise median, and is timed here with "
            "ByzFL's settings"
        ),
    ),
    SharedRule(
        "krum",
        "Krum",
        lambda x, c: agg.krum(x, c.f),
        lambda B, x, c: B.aggregators.Krum(f=c.f)(x),
        reference=_krum_like_reference("krum"),
        difference=(
            "scores use the n - f - 1 nearest neighbours (`sort(dist)[:, 1:n-f]`); Blanchard "
            "et al., NeurIPS 2017, use n - f - 2; it also accepts any n > 2f, where the paper "
            "needs n > 2f + 2. Compared with byzance's Krum at f - 1 (same neighbour count)"
        ),
    ),
    SharedRule(
        "multi_krum",
        "MultiKrum",
        lambda x, c: agg.multi_krum(x, c.f),
        lambda B, x, c: B.aggregators.MultiKrum(f=c.f)(x),
        params="m = n - f",
        reference=_krum_like_reference("multi_krum"),
        difference=(
            "as Krum: n - f - 1 neighbours instead of n - f - 2 (Blanchard et al., NeurIPS "
            "2017); m = n - f averaged (El Mhamdi et al., ICML 2018). Compared with byzance's "
            "Multi-Krum at f - 1, m = n - f"
        ),
    ),
    SharedRule(
        "centered_clipping",
        "CenteredClipping",
        lambda x, c: agg.centered_clipping(x, c.f, tau=CC_TAU, iterations=CC_ITERATIONS),
        lambda B, x, c: B.aggregators.CenteredClipping(tau=CC_TAU, L=CC_ITERATIONS)(x),
        params=f"tau={CC_TAU:g}, L={CC_ITERATIONS}, from 0",
        passes=CC_ITERATIONS + 1,  # the distances to the center, then each clipped step
        difference=(
            "same update (Karimireddy et al., ICML 2021); but the state lives in the "
            "object, and its constructor rejects every explicit center m (its type check "
            "`not isinstance(m, ndarray) or not isinstance(m, Tensor)` is always true)"
        ),
    ),
    SharedRule(
        "mda",
        "MDA",
        lambda x, c: agg.mda(x, c.f),
        lambda B, x, c: B.aggregators.MDA(f=c.f)(x),
        python_loop="every subset of n - f inputs",
        theirs_skip=_mda_skip,
    ),
    SharedRule(
        "meamed",
        "Meamed",
        lambda x, c: agg.meamed(x, c.f),
        lambda B, x, c: B.aggregators.Meamed(f=c.f)(x),
        difference=(
            "same definition (Xie et al., 2018); where two values are equally close to the "
            "median in float32, byzance keeps the lower window, ByzFL whichever `torch.topk` "
            "returns, so a few of 1e6 coordinates may differ"
        ),
    ),
    SharedRule(
        "nnm",
        "NNM",
        lambda x, c: agg.nnm(x, c.f),
        lambda B, x, c: B.preaggregators.NNM(f=c.f)(x),
        theirs_skip=_nnm_skip,
    ),
    SharedRule(
        "bucketing",
        "Bucketing",
        lambda x, c: agg.bucketing(x, c.f, s=BUCKET_SIZE, seed=c.seed),
        lambda B, x, c: _seeded(c.seed, lambda: B.preaggregators.Bucketing(s=BUCKET_SIZE)(x)),
        params=f"s={BUCKET_SIZE}, same permutation",
        difference=(
            "same (Karimireddy et al., ICLR 2022), but the default s=1 only permutes; the "
            "permutation comes from torch's global generator (byzance: a generator or seed "
            "passed in); seeded alike here, the permutations are identical"
        ),
    ),
    SharedRule(
        "clipping",
        "Clipping",
        lambda x, c: agg.clipping(x, c.f, c=c.clip_c, out=x),
        lambda B, x, c: B.preaggregators.Clipping(c=c.clip_c)(x),
        params="c = median input norm",
        difference=(
            "same; both clip their input in place here (byzance with out=x); default c=2.0 "
            "in ByzFL, 1.0 in byzance"
        ),
        python_loop="the n inputs",
    ),
    SharedRule(
        "arc",
        "ARC",
        lambda x, c: agg.arc(x, c.f, out=x),
        lambda B, x, c: B.preaggregators.ARC(f=c.f)(x),
        difference=(
            "same k = floor(2f(n - f)/n) (Allouah et al., ICLR 2025); both clip in place "
            "here (byzance with out=x); ByzFL accepts any f <= n, where the paper assumes n > 2f"
        ),
        python_loop="the n inputs (norms, sort, clipping)",
    ),
)


def _seeded(seed: int, call: Callable[[], Any]) -> Any:
    """ByzFL draws from torch's global generator: seed it as byzance seeds its own."""
    torch.manual_seed(seed)
    return call()


def shared_rule(name: str) -> SharedRule:
    """The shared rule called ``name`` (byzance's name)."""
    for rule in SHARED_RULES:
        if rule.name == name:
            return rule
    raise KeyError(f"no shared rule {name!r}; known: {[r.name for r in SHARED_RULES]}")
