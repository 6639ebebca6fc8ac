"""Rule objects, composition and the name registry (the n/f requirement: :mod:`._requirement`).

A :class:`Rule` wraps a pure implementation ``impl(x, f, **params)`` that may
assume a validated input: ``x`` a finite floating tensor of shape (n, d) and
``f`` an int the rule tolerates at that n. The wrapper does the boundary work
once for every rule: conversion, shape checks, dropping non-finite rows
(each one counts as one of the f faulty inputs), the n/f requirement and
unknown parameter names.

Non-finite rows cost no pass of their own for the rules registered with
``checks_rows``: their first pass over the rows reveals them (see
:mod:`byzance.aggregators._input`), and only then are the rows checked one
by one, the bad ones dropped and the rule run again on the others, with
exactly the result and the errors of checking first.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from byzance.aggregators._input import (
    GradsLike,
    NonFiniteRows,
    as_matrix,
    check_f,
    check_out,
    drop_nonfinite,
    finite_rows,
    first_pass_armed,
    first_pass_checks,
    keep_row_params,
    row_param,
    tracked,
)
from byzance.aggregators._requirement import Requirement
from byzance.errors import InvalidParameterError
from byzance.registry import Registry, bind_params

Kind = Literal["aggregator", "preaggregator"]
Missing = Literal["coordinate_wise", "whole_vectors"]
Floor = Literal["pass", "gram"]
Impl = Callable[..., torch.Tensor]

MISSING_HANDLING: tuple[Missing, ...] = ("coordinate_wise", "whole_vectors")
SPEED_FLOORS: tuple[Floor, ...] = ("pass", "gram")  # cheapest first: a pipeline takes the dearest


@dataclass(frozen=True)
class Rule:
    """A robust aggregation rule (n, d) -> (d,) or a pre-aggregator (n, d) -> (m, d).

    Call it as ``rule(grads, f, **params)``. ``grads`` is a tensor of shape
    (n, d), a numpy array, or a list of n same-shaped vectors; the result is on
    the input's device and dtype (integers become the default float dtype) and
    carries no autograd graph.

    A rule carries its facts, set where it is registered (never in tables keyed
    by its name elsewhere):

    - ``requirement``, ``paper``, ``summary``, ``cost`` (time for an (n, d)
      input, as the reference pages print it);
    - ``missing``: how it treats coordinates that did not arrive (see
      :mod:`byzance.aggregators.missing`). ``"coordinate_wise"``: its output at
      a coordinate depends only on that coordinate's column, so it runs on the
      values present there; ``"whole_vectors"``: it needs whole vectors, so
      missing coordinates are filled first;
    - ``speed_floor``: the cheapest computation its cost is measured against,
      ``"pass"`` (``x.sum(0)``, reading the input once) or ``"gram"``
      (``x @ x.T``, one Gram product); ``speed_target``: the largest ratio of
      its time to that floor's promised on large inputs (``byzance bench``
      checks it), None where none is promised;
    - ``carries_center``: state across steps (centered clipping): callers pass
      the previous output back as ``center``;
    - ``takes_generator``: it draws random numbers (bucketing) from a
      ``generator`` parameter (see :meth:`with_generator`);
    - ``shardable``: it runs on a block of the coordinates with its whole-vector
      sums completed across blocks (:mod:`byzance.aggregators._shard`), as
      sharded aggregation on torch.distributed needs; False for a rule whose
      output mixes coordinates (a d x d matrix);
    - ``checks_rows``: its first pass over the rows reports whether they are
      finite (:func:`~byzance.aggregators._input.first_pass`), so that no
      separate pass looks for NaN/inf;
    - ``impl_into``: a pre-aggregator's computation written into a given
      (m, d) tensor, ``impl_into(x, f, out, **params)``, where ``out`` may be
      ``x`` itself: a pipeline scales its own intermediate rows in place, and
      callers pass ``out=`` to reuse a buffer (or ``out=grads`` to overwrite
      their input, ByzFL's way); never used on a caller's tensor unasked.
    """

    name: str
    impl: Impl = field(repr=False)
    requirement: Requirement
    paper: str
    summary: str
    cost: str
    missing: Missing
    speed_floor: Floor
    speed_target: float | None = None
    kind: Kind = "aggregator"
    robust: bool = True
    carries_center: bool = False
    takes_generator: bool = False
    checks_rows: bool = False
    shardable: bool = True
    defaults: dict[str, Any] = field(default_factory=dict)
    row_params: tuple[str, ...] = ()
    selector: Impl | None = field(default=None, repr=False)
    out_count: Callable[[int, int, dict[str, Any]], int] | None = field(default=None, repr=False)
    in_count: Callable[[int, int, dict[str, Any]], int] | None = field(default=None, repr=False)
    impl_into: Impl | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.missing not in MISSING_HANDLING:
            raise InvalidParameterError(
                f"{self.name}: missing must be one of {', '.join(MISSING_HANDLING)}; "
                f"got {self.missing!r}."
            )
        if self.speed_floor not in SPEED_FLOORS:
            raise InvalidParameterError(
                f"{self.name}: speed_floor must be one of {', '.join(SPEED_FLOORS)}; "
                f"got {self.speed_floor!r}."
            )
        if self.missing == "coordinate_wise" and (self.kind != "aggregator" or self.row_params):
            raise InvalidParameterError(
                f"{self.name}: only an aggregation rule without per-input parameters can "
                "handle missing coordinates coordinate-wise."
            )

    def __call__(
        self, grads: GradsLike, f: int, *, out: torch.Tensor | None = None, **params: Any
    ) -> torch.Tensor:
        """The rule on ``grads`` (n, d) with ``f`` faulty inputs tolerated.

        ``out``: for a pre-aggregator with ``impl_into`` (clipping, ARC), a
        tensor of the result's shape and dtype to write the result into (it
        may be ``grads`` itself, which is then overwritten); when non-finite
        rows are dropped the result is its first rows.
        """
        who = self.name
        f = check_f(f, who)
        x = as_matrix(grads, who)
        params = self._merge(params) if params else dict(self.defaults)  # defaults: checked
        if out is not None:
            check_out(out, x, who, accepted=self.impl_into is not None)
        if not tracked(x, params):  # no context to enter: microseconds on small inputs
            return self._call(x, f, params, out)
        with torch.no_grad():
            return self._call(x, f, params, out)

    def _call(
        self, x: torch.Tensor, f: int, params: dict[str, Any], out: torch.Tensor | None
    ) -> torch.Tensor:
        """:meth:`__call__` after the conversion and the parameters' checks."""
        who, n = self.name, x.shape[0]
        if self._first_pass_can_check(n, f):
            for name in self.row_params:  # checked as when rows are dropped first
                if params.get(name) is not None:
                    row_param(params[name], name, n, who)
            try:
                result = self._armed(x, f, params, out)
                if result is not None:
                    return result
            except NonFiniteRows:
                pass  # a non-finite row (or an overflow): check the rows one by one
        x, f, kept = self._drop_nonfinite(x, f)
        if kept is not None:
            params = keep_row_params(params, self.row_params, kept, n, who)
        self.check(x.shape[0], f, dropped=n - x.shape[0], params=params)
        if out is not None and kept is not None:
            out = out[: x.shape[0]]
        return self._unarmed(x, f, params, out)

    def _first_pass_can_check(self, n: int, f: int) -> bool:
        """Whether the rule's first pass can stand for the check of non-finite rows.

        Not when the requirement fails at n (dropping rows first may make it
        hold). On a block of columns too: every first pass reports a
        whole-vector number (completed across the blocks), so every block
        takes the same path.
        """
        return self.robust and self.checks_rows and n >= self.min_n(f)

    def _unarmed(
        self, x: torch.Tensor, f: int, params: dict[str, Any], out: torch.Tensor | None
    ) -> torch.Tensor:
        """The implementation with no first-pass report checked (shielded from a caller's)."""
        if not first_pass_armed():  # nothing to shield from: the common case
            return self._impl(x, f, params, out)
        with first_pass_checks(False):
            return self._impl(x, f, params, out)

    def _armed(
        self, x: torch.Tensor, f: int, params: dict[str, Any], out: torch.Tensor | None
    ) -> torch.Tensor | None:
        """The implementation with its first pass checking the rows: None when it made no
        report and a row is non-finite (the caller then drops them)."""
        with first_pass_checks(True) as checks:
            result = self._impl(x, f, params, out)
        if not checks.reported() and not bool(finite_rows(x).all()):
            return None
        return result

    def _run(
        self,
        x: torch.Tensor,
        f: int,
        params: dict[str, Any],
        out: torch.Tensor | None,
        *,
        armed: bool,
    ) -> torch.Tensor | None:
        """:meth:`_armed` or :meth:`_unarmed` (a pipeline's stages)."""
        return self._armed(x, f, params, out) if armed else self._unarmed(x, f, params, out)

    def _impl(
        self, x: torch.Tensor, f: int, params: dict[str, Any], out: torch.Tensor | None
    ) -> torch.Tensor:
        if out is None:
            return self.impl(x, f, **params)
        assert self.impl_into is not None
        return self.impl_into(x, f, out, **params)

    def selected(self, grads: GradsLike, f: int, **params: Any) -> torch.Tensor | None:
        """Indices (into ``grads``) of the inputs a selection rule uses; None for other rules.

        Krum: the one input returned; Multi-Krum: the m averaged; Bulyan: the
        theta selected; MDA: the n - f of smallest diameter. Non-finite inputs
        are dropped first, as when aggregating.
        """
        if self.selector is None:
            return None
        f = check_f(f, self.name)
        x = as_matrix(grads, self.name)
        params = self._merge(params)
        n = x.shape[0]
        x, f, kept = self._drop_nonfinite(x, f)
        self.check(x.shape[0], f, dropped=n - x.shape[0])
        with torch.no_grad():
            idx = self.selector(x, f, **params)
        return idx if kept is None else kept.nonzero().flatten()[idx.to(kept.device)]

    def _drop_nonfinite(
        self, x: torch.Tensor, f: int
    ) -> tuple[torch.Tensor, int, torch.Tensor | None]:
        """The NaN policy: a robust rule drops non-finite rows as faulty (counted among f).

        A rule that is not robust (the average, the baseline) is computed as
        defined: a NaN in, a NaN out. Dropping the NaN row would make the
        baseline robust to the crash faults it is meant to show breaking it.
        """
        if not self.robust:
            return x, f, None
        return drop_nonfinite(x, f, self.name)

    @property
    def doc(self) -> str:
        """The implementation's docstring: definition, paper, shapes."""
        return inspect.getdoc(self.impl) or ""

    # -- metadata -------------------------------------------------------------
    def with_generator(self, generator: torch.Generator) -> Rule:
        """This rule drawing from ``generator``, unless it was seeded or given one explicitly."""
        if not self.takes_generator or "generator" in self.defaults:
            return self
        if self.defaults.get("seed") is not None:
            return self
        return self.partial(generator=generator)

    def min_n(self, f: int) -> int:
        """Smallest n this rule accepts with ``f`` Byzantine inputs."""
        return self.requirement.min_n(f)

    def output_count(self, n: int, f: int, **params: Any) -> int:
        """Rows a pre-aggregator returns for n inputs (1 for an aggregator)."""
        if self.kind == "aggregator":
            return 1
        merged = self._merge(params)
        return self.out_count(n, f, merged) if self.out_count else n

    def input_count(self, m: int, f: int) -> int:
        """Fewest inputs for which this rule hands on at least ``m`` rows (1 for an aggregator)."""
        if self.kind == "aggregator":
            return 1
        if self.in_count is not None:
            return self.in_count(m, f, self.defaults)
        if self.out_count is None:
            return m
        lo, hi = 1, max(m, 1)  # out_count is non-decreasing in n: double, then bisect
        while self.out_count(hi, f, self.defaults) < m:
            lo, hi = hi + 1, hi * 2
        while lo < hi:
            mid = (lo + hi) // 2
            if self.out_count(mid, f, self.defaults) >= m:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def check(
        self, n: int, f: int, *, dropped: int = 0, params: dict[str, Any] | None = None
    ) -> None:
        """Raise :class:`ToleranceError` unless this rule tolerates f of n inputs."""
        self.requirement.check(self.name, n, f, dropped=dropped)

    def partial(self, **params: Any) -> Rule:
        """The same rule with new default parameters (validated now)."""
        return _replace(self, defaults=self._merge(params))

    def _merge(self, params: dict[str, Any]) -> dict[str, Any]:
        return bind_params(self.impl, self.defaults, params, self.name)


def _replace(rule: Rule, **changes: Any) -> Rule:
    from dataclasses import replace

    return replace(rule, **changes)


_REGISTRY: Registry[Rule] = Registry("aggregation rule")


def register(rule: Rule) -> Rule:
    """Add ``rule`` to the registry under ``rule.name`` and return it."""
    return _REGISTRY.register(rule)


def names(kind: Kind | None = None) -> list[str]:
    """Registered names, sorted; ``kind`` keeps only aggregators or pre-aggregators."""
    return _REGISTRY.names(None if kind is None else (lambda r: r.kind == kind))


def get(name: str | Rule, **params: Any) -> Rule:
    """The rule registered under ``name``, with ``params`` bound as defaults.

    ``"nnm>trimmed_mean"`` names a pipeline: pre-aggregators, then a rule.
    """
    if isinstance(name, Rule):
        return name.partial(**params) if params else name
    if ">" in name:
        if params:
            raise InvalidParameterError(
                f"{name!r}: bind parameters per stage with compose(get(a, ...), get(b, ...))."
            )
        from byzance.aggregators._pipeline import compose  # a pipeline is built from rules

        return compose(*(get(part.strip()) for part in name.split(">")))
    rule = _REGISTRY.get(name)
    return rule.partial(**params) if params else rule


def rules(kind: Kind | None = None) -> Iterable[Rule]:
    """The registered rules, in name order."""
    return (_REGISTRY.get(n) for n in names(kind))
