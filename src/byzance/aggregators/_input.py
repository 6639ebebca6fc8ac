"""Boundary checks shared by every rule: conversion, shapes, f, non-finite rows, per-row
parameters and ``out=``.

Non-finite rows are found either by an explicit pass (:func:`drop_nonfinite`)
or, for free, by the rule's own first pass over its rows: a rule registered
with ``checks_rows`` computes, before anything else, a quantity of each row
that every element of it enters (row norms, distances to a finite point,
the Gram matrix's diagonal) and reports whether it is finite with
:func:`first_pass`. A NaN or inf element makes that quantity NaN or inf, so
a finite report proves the rows finite; a non-finite one (a bad row, or a
finite row whose norm overflows) raises :class:`NonFiniteRows` inside the
rule, and the caller (:class:`~byzance.aggregators.Rule`) falls back to the
explicit pass, drops the bad rows and runs the rule again, which then
handles overflow as it always did. The report is armed only by that caller
(:func:`first_pass_checks`) and only for its first call, so a rule called
directly, or a later pass of the same rule, is unaffected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import numpy as np
import torch

from byzance.aggregators._shard import any_block, whole
from byzance.errors import InvalidFError, InvalidParameterError, NonFiniteInputError, ShapeError

GradsLike = torch.Tensor | np.ndarray | Sequence[Any]


def as_matrix(grads: GradsLike, who: str) -> torch.Tensor:
    """Convert ``grads`` once into a floating tensor of shape (n, d).

    Accepts a tensor or numpy array of shape (n, d), or a sequence of n
    same-shaped tensors/arrays (each flattened to d coordinates). Integer and
    boolean inputs become the default float dtype; float dtypes are kept.
    """
    if isinstance(grads, torch.Tensor):
        x = grads
        if x.ndim == 2 and x.is_floating_point() and not x.is_meta and x.numel():
            return x  # the common case, which every check below accepts
    elif isinstance(grads, np.ndarray):
        if grads.dtype.kind not in "biuf":
            raise ShapeError(f"{who}: grads must hold numbers; got a numpy array of {grads.dtype}.")
        x = torch.from_numpy(np.ascontiguousarray(grads))
    elif isinstance(grads, Sequence) and not isinstance(grads, str | bytes):
        x = _stack_sequence(grads, who)
    else:
        raise ShapeError(
            f"{who}: grads must be a tensor or array of shape (n, d) or a list of n "
            f"same-shaped vectors; got {type(grads).__name__}."
        )
    if x.is_meta:
        raise ShapeError(
            f"{who}: grads is on the meta device, which holds shapes but no values; "
            "a rule needs the values (for shape inference, use output_count or min_n)."
        )
    if x.ndim != 2:
        hint = (
            " A single vector is one participant: stack the n vectors into (n, d), "
            "e.g. torch.stack(vectors)."
            if x.ndim == 1
            else " Flatten each participant's tensor: grads.reshape(n, -1)."
            if x.ndim > 2
            else ""
        )
        raise ShapeError(
            f"{who}: grads must be 2-D of shape (n, d), one row per participant; "
            f"got {x.ndim}-D of shape {tuple(x.shape)}.{hint}"
        )
    n, d = x.shape
    if n == 0 or d == 0:
        raise ShapeError(
            f"{who}: grads is empty (shape {tuple(x.shape)}); it needs at least one "
            "participant (n >= 1) and one coordinate (d >= 1)."
        )
    if not x.is_floating_point():
        if x.is_complex():
            raise ShapeError(f"{who}: complex inputs are not supported (dtype {x.dtype}).")
        x = x.to(torch.get_default_dtype())
    return x


def _stack_sequence(grads: Sequence[Any], who: str) -> torch.Tensor:
    if len(grads) == 0:
        raise ShapeError(f"{who}: grads is an empty list; it needs at least one vector.")
    try:
        first = grads[0]
        if not isinstance(first, torch.Tensor | np.ndarray | Sequence) or isinstance(first, str):
            # A flat list of numbers is a single vector, which is a shape error below.
            return torch.as_tensor(grads)
        tensors = [_as_tensor(v) for v in grads]
    except (TypeError, ValueError, RuntimeError) as err:
        raise ShapeError(f"{who}: grads must hold numbers: {err}") from None
    shape0 = tensors[0].shape
    for i, t in enumerate(tensors):
        if t.shape != shape0:
            raise ShapeError(
                f"{who}: vector {i} has shape {tuple(t.shape)} but vector 0 has shape "
                f"{tuple(shape0)}; every participant must send the same number of coordinates."
            )
    return torch.stack([t.reshape(-1) for t in tensors])


def _as_tensor(v: Any) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v
    if isinstance(v, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(v))
    return torch.as_tensor(v)  # Python numbers: the default float dtype


def _brief(v: Any) -> str:
    """``v`` for a one-line message: an array by its type and shape, else a short repr."""
    if isinstance(v, torch.Tensor | np.ndarray):
        return f"a {type(v).__name__} of shape {tuple(v.shape)}"
    text = repr(v)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} of type {type(v).__name__}"


def check_f(f: Any, who: str) -> int:
    """Return ``f`` as an int, rejecting negatives and non-integers."""
    if type(f) is int and f >= 0:  # the common case, before the checks below
        return f
    if isinstance(f, bool) or not isinstance(f, int | np.integer):
        raise InvalidFError(
            f"{who}: f (number of Byzantine inputs tolerated) must be a non-negative "
            f"integer; got {_brief(f)}."
        )
    if f < 0:
        raise InvalidFError(
            f"{who}: f (number of Byzantine inputs tolerated) must be >= 0; got f={f}. "
            "Use f=0 when every participant is trusted."
        )
    return int(f)


def finite_rows(x: torch.Tensor) -> torch.Tensor:
    """Boolean mask of shape (n,): rows of ``x`` (n, d) holding no NaN or inf.

    One pass: a row sum is non-finite whenever the row holds a NaN or inf;
    only rows whose sum is non-finite (including finite rows whose sum
    overflows) are checked element-wise. The sum stays in the input's dtype
    (float32 for half precision): accumulating in float64 costs ~14 passes.
    """
    return _finite_rows(x)[0]


def _finite_rows(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``finite_rows(x)`` and whether every row is finite, for one host synchronization.

    The one synchronization (is any row sum non-finite?) decides whether the
    rows must be checked element-wise; it is the boundary check every robust
    rule makes, since the number of rows kept sets the output's shape.
    """
    acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    suspect = ~torch.isfinite(whole(lambda t: t.sum(dim=-1, dtype=acc), x))
    if not bool(suspect.any()):
        return ~suspect, True
    mask = ~suspect
    idx = suspect.nonzero().flatten()
    bad = whole(lambda t: (~torch.isfinite(t)).sum(dim=-1), x[idx])  # counts, over every block
    mask[idx] = bad == 0
    return mask, False


def drop_nonfinite(
    x: torch.Tensor, f: int, who: str
) -> tuple[torch.Tensor, int, torch.Tensor | None]:
    """Drop the rows of ``x`` (n, d) that hold NaN/inf, counting them among the f faulty.

    Returns ``(kept, f_left, mask)``: ``kept`` of shape (n - dropped, d),
    ``f_left = f - dropped`` and ``mask`` (n,) of the kept rows, or None when
    every row was kept. Raises when more rows than ``f`` are non-finite.
    """
    mask, all_finite = _finite_rows(x)
    if all_finite:  # the common case: one host synchronization in all
        return x, f, None
    dropped = int(x.shape[0] - int(mask.sum()))
    if dropped == 0:
        return x, f, None
    if dropped > f:
        bad = (~mask).nonzero().flatten().tolist()
        raise NonFiniteInputError(
            f"{who}: {dropped} of {x.shape[0]} inputs hold NaN or inf (rows {bad[:10]}"
            f"{'...' if len(bad) > 10 else ''}) but only f={f} faulty inputs are tolerated. "
            f"A non-finite vector is known to be faulty and is dropped; raise f to at least "
            f"{dropped} (with enough inputs for the rule) or find why those participants fail."
        )
    return x[mask], f - dropped, mask


def keep_row_params(
    params: dict[str, Any], row_params: tuple[str, ...], kept: torch.Tensor, n: int, who: str
) -> dict[str, Any]:
    """Drop, from per-row parameters (e.g. weights), the entries of dropped rows."""
    out = dict(params)
    for name in row_params:
        value = out.get(name)
        if value is None:
            continue
        value = row_param(value, name, n, who)
        out[name] = value[kept.to(value.device)]
    return out


def row_param(value: Any, name: str, n: int, who: str) -> torch.Tensor:
    """A per-row parameter as a tensor, checked to hold one entry per input."""
    value = torch.as_tensor(value)
    if value.shape[:1] != (n,):
        raise InvalidParameterError(
            f"{who}: {name} must have shape ({n},), one per input; got {tuple(value.shape)}."
        )
    return value


def check_out(out: Any, x: torch.Tensor, who: str, *, accepted: bool) -> None:
    """Refuse ``out=`` unless the rule ``accepted`` it and it matches the result ``x`` (n, d)."""
    if not accepted:
        raise InvalidParameterError(
            f"{who}: out= is accepted only by the pre-aggregators that can write "
            "their rows into a given tensor (clipping, arc)."
        )
    if not isinstance(out, torch.Tensor) or out.shape != x.shape or out.dtype != x.dtype:
        raise InvalidParameterError(
            f"{who}: out must be a tensor of the result's shape {tuple(x.shape)} and "
            f"dtype {x.dtype}; got "
            + (
                f"shape {tuple(out.shape)}, dtype {out.dtype}."
                if isinstance(out, torch.Tensor)
                else f"{type(out).__name__}."
            )
        )
    if out.device != x.device:
        raise InvalidParameterError(f"{who}: out is on {out.device}, the inputs on {x.device}.")


def all_finite(t: torch.Tensor) -> bool:
    """Whether ``t`` holds no NaN or inf, in one reduction (no boolean temporary).

    The sum is non-finite whenever an element is; only when it is (NaN/inf, or
    finite values whose sum overflows) are the elements checked one by one.
    torch.isfinite(t).all() allocates a boolean tensor of t's size: about 4 ms
    for 1e6 values where the sum takes 0.1 ms. On a block of a sharded
    evaluation, the answer for every block (the same everywhere).
    """
    acc = torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype
    if not t.is_floating_point() or math.isfinite(t.sum(dtype=acc).item()):
        local = True
    else:
        local = bool(torch.isfinite(t).all())
    return not any_block(not local)


class NonFiniteRows(Exception):  # noqa: N818 (a signal between first_pass and Rule, never seen)
    """Raised by :func:`first_pass` when the armed check finds a non-finite value."""


# One cell per armed rule call: [True] until its first pass reports.
_ARMED: ContextVar[list[bool] | None] = ContextVar("byzance_first_pass", default=None)


class first_pass_checks:  # noqa: N801 (used as a function: ``with first_pass_checks(...)``)
    """Run a rule with its first pass checking the rows (``armed``), or with no check.

    ``with first_pass_checks(armed) as checks:``; then ``checks.reported()``:
    whether the rule's first pass reported (if not, the rule took a branch
    without such a pass and the caller checks the rows). Not armed, it
    shields the rule from an enclosing armed call. A class, not a generator:
    entering a ``contextlib.contextmanager`` costs over a microsecond, on
    every call of a rule.
    """

    __slots__ = ("_cell", "_token")

    def __init__(self, armed: bool) -> None:
        self._cell = [True] if armed else None

    def __enter__(self) -> first_pass_checks:
        self._token = _ARMED.set(self._cell)
        return self

    def __exit__(self, *exc: object) -> None:
        _ARMED.reset(self._token)

    def reported(self) -> bool:
        """Whether the rule's first pass reported."""
        return self._cell is not None and not self._cell[0]


def first_pass(finite: bool) -> None:
    """Report the first pass over the rows: ``finite`` is False when a value computed from
    every element of every row (norms, distances, Gram diagonal) is NaN or inf.

    Raises :class:`NonFiniteRows` when armed (see :func:`first_pass_checks`) and
    ``finite`` is False; else does nothing. Only the first report counts.
    """
    cell = _ARMED.get()
    if cell is None or not cell[0]:
        return
    cell[0] = False
    if not finite:
        raise NonFiniteRows


def first_pass_armed() -> bool:
    """Whether a :func:`first_pass` report would be checked now (skip computing it if not)."""
    cell = _ARMED.get()
    return cell is not None and cell[0]


def tracked(x: torch.Tensor, params: dict[str, Any]) -> bool:
    """Whether autograd would record a rule on ``x`` and ``params`` (a tensor that requires
    grad, with grad mode on): the caller then runs it under ``torch.no_grad()``, which
    costs microseconds to enter on every call of a rule on small inputs."""
    return torch.is_grad_enabled() and (
        x.requires_grad
        or (
            bool(params)
            and any(isinstance(v, torch.Tensor) and v.requires_grad for v in params.values())
        )
    )
