"""Rule objects, their n/f requirements, composition and the name registry.

A :class:`Rule` wraps a pure implementation ``impl(x, f, **params)`` that may
assume a validated input: ``x`` a finite floating tensor of shape (n, d) and
``f`` an int the rule tolerates at that n. The wrapper does the boundary work
once for every rule: conversion, shape checks, dropping non-finite rows
(each one counts as one of the f faulty inputs), the n/f requirement and
unknown parameter names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from byzance.aggregators._input import GradsLike, as_matrix, check_f, drop_nonfinite
from byzance.errors import InvalidParameterError, NonFiniteOutputError, ToleranceError
from byzance.registry import Registry, bind_params

Kind = Literal["aggregator", "preaggregator"]
Missing = Literal["coordinate_wise", "whole_vectors"]
Floor = Literal["pass", "gram"]
Impl = Callable[..., torch.Tensor]

MISSING_HANDLING: tuple[Missing, ...] = ("coordinate_wise", "whole_vectors")
SPEED_FLOORS: tuple[Floor, ...] = ("pass", "gram")  # cheapest first: a pipeline takes the dearest


@dataclass(frozen=True)
class Requirement:
    """A linear requirement ``n >= a * f + b`` on the number of inputs n."""

    a: int
    b: int

    def min_n(self, f: int) -> int:
        """Smallest number of inputs that tolerates ``f`` Byzantine ones."""
        return self.a * f + self.b

    def max_f(self, n: int) -> int:
        """Largest f tolerated with ``n`` inputs (-1 when none is)."""
        if self.a == 0:
            return n if n >= self.b else -1
        return (n - self.b) // self.a if n >= self.b else -1

    def __str__(self) -> str:
        if self.a == 0:
            return f"n >= {self.b}"
        af = "f" if self.a == 1 else f"{self.a}f"
        return f"n >= {af} + {self.b}" if self.b else f"n >= {af}"


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
      ``generator`` parameter (see :meth:`with_generator`).
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
    defaults: dict[str, Any] = field(default_factory=dict)
    row_params: tuple[str, ...] = ()
    selector: Impl | None = field(default=None, repr=False)
    out_count: Callable[[int, int, dict[str, Any]], int] | None = field(default=None, repr=False)
    in_count: Callable[[int, int, dict[str, Any]], int] | None = field(default=None, repr=False)

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

    def __call__(self, grads: GradsLike, f: int, **params: Any) -> torch.Tensor:
        who = self.name
        f = check_f(f, who)
        x = as_matrix(grads, who)
        params = self._merge(params)
        n = x.shape[0]
        x, f, kept = self._drop_nonfinite(x, f)
        if kept is not None:
            params = _keep_rows(params, self.row_params, kept, n, who)
        self.check(x.shape[0], f, dropped=n - x.shape[0], params=params)
        with torch.no_grad():
            return self.impl(x, f, **params)

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
        need = self.requirement.min_n(f)
        if n >= need:
            return
        after = (
            f" (after dropping {dropped} non-finite input{'s' if dropped > 1 else ''}, "
            "each counted as one of the faulty ones)"
            if dropped
            else ""
        )
        max_f = self.requirement.max_f(n)
        lower = f", lower f to {max_f}" if max_f >= 0 else ""
        weaker = (
            ", or choose a rule with a weaker requirement (median and trimmed_mean "
            "need n >= 2f + 1)"
            if self.requirement.min_n(f) > 2 * f + 1
            else ""
        )
        raise ToleranceError(
            f"{self.name} requires {self.requirement} to tolerate f Byzantine inputs: "
            f"f={f} needs at least n={need} inputs, got n={n}{after}. "
            f"Use at least {need} inputs{lower}{weaker}."
        )

    def partial(self, **params: Any) -> Rule:
        """The same rule with new default parameters (validated now)."""
        return _replace(self, defaults=self._merge(params))

    def _merge(self, params: dict[str, Any]) -> dict[str, Any]:
        return bind_params(self.impl, self.defaults, params, self.name)


def _keep_rows(
    params: dict[str, Any], row_params: tuple[str, ...], kept: torch.Tensor, n: int, who: str
) -> dict[str, Any]:
    """Drop, from per-row parameters (e.g. weights), the entries of dropped rows."""
    out = dict(params)
    for name in row_params:
        value = out.get(name)
        if value is None:
            continue
        value = torch.as_tensor(value)
        if value.shape[:1] != (n,):
            raise InvalidParameterError(
                f"{who}: {name} must have one entry per input (shape ({n},)); "
                f"got shape {tuple(value.shape)}."
            )
        out[name] = value[kept.to(value.device)]
    return out


def _check_output(stage: Rule, out: torch.Tensor, pipeline: str) -> None:
    """Raise :class:`NonFiniteOutputError` when a stage made NaN or inf out of finite rows.

    A robust pipeline hands each stage finite rows (the non-finite ones are
    dropped first); a stage that returns NaN or inf from them is a bug or an
    overflow that the next stage would silently pass on.
    """
    if bool(torch.isfinite(out).all()):
        return
    raise NonFiniteOutputError(
        f"in pipeline {pipeline}: stage {stage.name} returned NaN or inf from finite "
        "inputs (an overflow in that stage); rescale the inputs or report this as a bug."
    )


def _replace(rule: Rule, **changes: Any) -> Rule:
    from dataclasses import replace

    return replace(rule, **changes)


@dataclass(frozen=True)
class Pipeline(Rule):
    """Pre-aggregators followed by an aggregation rule, itself a rule (n, d) -> (d,).

    Every stage sees the same f; a stage's requirement is checked at the number
    of rows it receives (bucketing, for instance, leaves ceil(n / s) rows). Its
    facts come from its stages (see :func:`compose`): it carries the center of
    its last stage (``bucketing>centered_clipping`` starts from the previous
    aggregate, as Karimireddy et al. 2022 do; pass it as ``center=``), needs
    whole vectors, takes a generator when a stage does, and its speed
    floor is the dearest of its stages'.
    """

    stages: tuple[Rule, ...] = ()

    def __call__(self, grads: GradsLike, f: int, **params: Any) -> torch.Tensor:
        center = params.pop("center", None) if self.carries_center else None
        if params:
            raise InvalidParameterError(
                f"{self.name}: give each stage its parameters with "
                "get(name, ...) before composing; the pipeline takes none"
                + (" but center." if self.carries_center else ".")
            )
        f = check_f(f, self.name)
        x = as_matrix(grads, self.name)
        n = x.shape[0]
        x, f, kept = self._drop_nonfinite(x, f)
        self.check(x.shape[0], f, dropped=n - x.shape[0])
        n_kept = x.shape[0]  # rows left after dropping the non-finite ones (no device sync)
        # Finite rows must give finite rows at every stage (a robust pipeline has dropped
        # the non-finite ones; a baseline's NaN in gives NaN out, as defined).
        check_outputs = self.robust or bool(torch.isfinite(x).all())
        with torch.no_grad():
            for stage in self.stages:
                stage_params = stage.defaults
                if kept is not None and x.shape[0] == n_kept:
                    # Still one row per kept input (bucketing changes that): per-row
                    # parameters lose the entries of the dropped inputs.
                    stage_params = _keep_rows(stage_params, stage.row_params, kept, n, stage.name)
                if stage is self.stages[-1] and center is not None:
                    stage_params = {**stage_params, "center": center}
                x = stage.impl(x, f, **stage_params)
                if check_outputs:
                    _check_output(stage, x, self.name)
        return x

    def with_generator(self, generator: torch.Generator) -> Rule:
        """The pipeline with every stage that draws random numbers drawing from ``generator``."""
        if not self.takes_generator:
            return self
        return compose(*(stage.with_generator(generator) for stage in self.stages))

    def partial(self, **params: Any) -> Rule:
        raise InvalidParameterError(
            f"{self.name}: a pipeline takes no parameters; bind them to its stages with "
            "get(name, ...) before composing."
        )

    def min_n(self, f: int) -> int:
        """Smallest n every stage accepts, in closed form, from the last stage back.

        The last stage needs ``m >= its min_n(f)`` rows; a stage before it needs
        its own minimum and enough inputs to hand on that many rows (bucketing:
        ceil(n / s) >= m when n >= (m - 1) s + 1; other pre-aggregators keep n).
        """
        need = 1
        for stage in reversed(self.stages):
            need = max(stage.min_n(f), stage.input_count(need, f))
        return need

    def check(
        self, n: int, f: int, *, dropped: int = 0, params: dict[str, Any] | None = None
    ) -> None:
        m = n
        for stage in self.stages:
            try:
                stage.check(m, f, dropped=dropped)
            except ToleranceError as err:
                where = "" if m == n else f" (it receives {m} rows from the stages before it)"
                raise ToleranceError(f"in pipeline {self.name}{where}: {err}") from None
            m = stage.output_count(m, f)


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
        return compose(*(get(part.strip()) for part in name.split(">")))
    rule = _REGISTRY.get(name)
    return rule.partial(**params) if params else rule


def compose(*stages: str | Rule) -> Pipeline:
    """Chain pre-aggregators and a final aggregation rule into one rule.

    Example: ``compose("nnm", "trimmed_mean")(grads, f=2)`` has shape (d,).
    """
    rules = tuple(get(s) for s in stages)
    if not rules:
        raise InvalidParameterError("compose needs at least one rule.")
    *pre, last = rules
    for r in pre:
        if r.kind != "preaggregator":
            raise InvalidParameterError(
                f"compose: {r.name} is an aggregation rule (n, d) -> (d,); only "
                f"pre-aggregators ({', '.join(names('preaggregator'))}) may come before the last stage."
            )
    if last.kind != "aggregator":
        raise InvalidParameterError(
            f"compose: the last stage must be an aggregation rule, not the "
            f"pre-aggregator {last.name}."
        )
    return Pipeline(
        name=">".join(r.name for r in rules),
        impl=last.impl,
        requirement=last.requirement,
        paper="; ".join(dict.fromkeys(r.paper for r in rules)),
        summary=" then ".join(r.name for r in rules),
        cost=" ".join(f"{r.name}: {r.cost}" for r in rules),
        # The stages pass whole rows to each other: a coordinate missing from one
        # input changes what a pre-aggregator hands on at every coordinate.
        missing="whole_vectors",
        speed_floor=max((r.speed_floor for r in rules), key=SPEED_FLOORS.index),
        robust=all(r.robust for r in rules),
        carries_center=last.carries_center,  # the last stage gets the previous output
        takes_generator=any(r.takes_generator for r in rules),
        stages=rules,
    )


def rules(kind: Kind | None = None) -> Iterable[Rule]:
    """The registered rules, in name order."""
    return (_REGISTRY.get(n) for n in names(kind))
