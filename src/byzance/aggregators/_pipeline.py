"""Pipelines: pre-aggregators followed by an aggregation rule, themselves a rule.

``compose("nnm", "trimmed_mean")`` (or the name ``"nnm>trimmed_mean"``) chains
(n, d) -> (m, d) pre-aggregators in front of an (m, d) -> (d,) rule. The
pipeline's facts come from its stages (see :func:`compose`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from byzance.aggregators._input import (
    GradsLike,
    NonFiniteRows,
    all_finite,
    as_matrix,
    check_f,
    keep_row_params,
)
from byzance.aggregators._registry import SPEED_FLOORS, Rule, get, names
from byzance.errors import InvalidParameterError, NonFiniteOutputError, ToleranceError


def _check_output(stage: Rule, out: torch.Tensor, pipeline: str) -> None:
    """Raise :class:`NonFiniteOutputError` when a stage made NaN or inf out of finite rows.

    A robust pipeline hands each stage finite rows (the non-finite ones are
    dropped first); a stage that returns NaN or inf from them is a bug or an
    overflow that the next stage would silently pass on. One reduction (see
    :func:`~byzance.aggregators._input.all_finite`).
    """
    if all_finite(out):
        return
    raise NonFiniteOutputError(
        f"in pipeline {pipeline}: stage {stage.name} returned NaN or inf from finite "
        "inputs (an overflow in that stage); rescale the inputs or report this as a bug."
    )


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

    def __call__(  # type: ignore[override]
        self, grads: GradsLike, f: int, **params: Any
    ) -> torch.Tensor:
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
        with torch.no_grad():
            if self._first_pass_can_check(n, f):
                try:
                    return self._stages(x, f, center, None, n, first_checks=True)
                except NonFiniteRows:
                    pass  # the first stage met a non-finite row (or an overflow)
            x, f, kept = self._drop_nonfinite(x, f)
            self.check(x.shape[0], f, dropped=n - x.shape[0])
            return self._stages(x, f, center, kept, n, first_checks=False)

    def _first_pass_can_check(self, n: int, f: int) -> bool:
        if not (self.robust and self.stages[0].checks_rows):
            return False
        try:
            self.check(n, f)
        except ToleranceError:
            return False  # dropping rows first may satisfy it, as it would have
        return True

    def _stages(
        self,
        x: torch.Tensor,
        f: int,
        center: torch.Tensor | None,
        kept: torch.Tensor | None,
        n: int,
        *,
        first_checks: bool,
    ) -> torch.Tensor:
        """Run the stages on ``x`` (the rows kept, ``kept`` their mask among n).

        Every stage's input is checked for NaN/inf: the first stage's by its
        first pass (``first_checks``) or before (the caller dropped the bad
        rows), a later stage's by its own first pass when it has one (a
        report of non-finite rows then blames the stage before, once its rows
        are seen to be non-finite), else by one reduction over it; the last
        output by one reduction. A pipeline that is not robust checks only
        when its input was finite: a NaN in gives a NaN out, as defined.
        """
        source = x
        checking = True  # False once a non-robust pipeline's input is seen non-finite
        n_kept = x.shape[0]  # rows left after dropping the non-finite ones (no device sync)
        owned = False  # whether x is a temporary of this pipeline, free to overwrite
        previous: Rule | None = None
        for i, stage in enumerate(self.stages):
            params = stage.defaults
            if kept is not None and x.shape[0] == n_kept:
                # Still one row per kept input (bucketing changes that): per-row
                # parameters lose the entries of the dropped inputs.
                params = keep_row_params(params, stage.row_params, kept, n, stage.name)
            if stage is self.stages[-1] and center is not None:
                params = {**params, "center": center}
            out = x if owned and stage.impl_into is not None else None
            if i == 0:
                armed = first_checks or (not self.robust and stage.checks_rows)
                try:
                    y = stage._run(x, f, params, out, armed=armed)
                except NonFiniteRows:
                    y = None
                if y is None:  # the input holds a non-finite row (or a norm overflows)
                    if first_checks:
                        raise NonFiniteRows
                    checking = all_finite(source)
                    y = stage._run(x, f, params, out, armed=False)
            else:
                assert previous is not None
                armed = checking and stage.checks_rows
                try:
                    y = stage._run(x, f, params, out, armed=armed) if armed else None
                except NonFiniteRows:
                    y = None
                if checking and (y is None or not armed):
                    checking = self._verify(previous, x, source)
                if y is None:
                    y = stage._run(x, f, params, out, armed=False)
            previous, owned, x = stage, True, y
        if checking and not all_finite(x):
            checking = self._verify(previous, x, source)
        return x

    def _verify(self, stage: Rule | None, out: torch.Tensor, source: torch.Tensor) -> bool:
        """Whether to go on checking after ``stage`` handed on ``out``: raise
        :class:`NonFiniteOutputError` if it made NaN/inf out of finite rows."""
        if all_finite(out):
            return True
        if not self.robust and not all_finite(source):
            return False  # NaN in, NaN out: the baseline as defined
        assert stage is not None
        _check_output(stage, out, self.name)
        return True

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
        shardable=all(r.shardable for r in rules),
        stages=rules,
    )
