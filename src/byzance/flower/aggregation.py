"""Robust aggregation of client models, independent of Flower's message types.

A Flower client sends its model as a list of arrays (one per layer). This
module turns the n replies of a round into one matrix of shape (n, d), hands
it to a byzance rule in a single call (so distance-based rules such as Krum or
Bulyan see whole models, not layer by layer), and turns the (d,) result back
into arrays of the model's shapes and dtypes. It imports numpy and torch only;
``byzance.flower.strategy`` and ``byzance.flower.legacy`` adapt it to Flower's
two strategy APIs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from byzance import aggregators
from byzance.aggregators import Rule
from byzance.aggregators._input import check_f
from byzance.errors import InvalidParameterError, NonFiniteInputError, ShapeError, ToleranceError

Arrays = Sequence[np.ndarray]
On = Literal["updates", "models"]


@dataclass(frozen=True)
class Layout:
    """Shapes and dtypes of a model's arrays, and where each lies in the flat vector."""

    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]

    @classmethod
    def of(cls, arrays: Arrays) -> Layout:
        arrays = [np.asarray(a) for a in arrays]
        return cls(tuple(a.shape for a in arrays), tuple(a.dtype for a in arrays))

    @property
    def sizes(self) -> list[int]:
        return [int(np.prod(s, dtype=np.int64)) for s in self.shapes]

    @property
    def size(self) -> int:
        """d: the number of coordinates of the flattened model."""
        return sum(self.sizes)

    def mismatch(self, arrays: Arrays) -> str | None:
        """Why ``arrays`` does not fit this layout, or None when it does."""
        if len(arrays) != len(self.shapes):
            return f"{len(arrays)} arrays instead of {len(self.shapes)}"
        for i, (a, shape) in enumerate(zip(arrays, self.shapes, strict=True)):
            a = np.asarray(a)
            if a.dtype.kind not in "biuf":
                return f"array {i} holds {a.dtype}, not numbers"
            if a.shape != shape:
                return f"array {i} has shape {a.shape} instead of {shape}"
        return None

    def flatten(self, rows: Sequence[Arrays], dtype: np.dtype) -> np.ndarray:
        """Stack n models into one matrix of shape (n, d)."""
        out = np.empty((len(rows), self.size), dtype=dtype)
        bounds = np.cumsum([0, *self.sizes])
        for i, arrays in enumerate(rows):
            for a, start, stop in zip(arrays, bounds[:-1], bounds[1:], strict=True):
                out[i, start:stop] = np.asarray(a).reshape(-1)
        return out

    def unflatten(self, vector: np.ndarray) -> list[np.ndarray]:
        """Split a flat vector of shape (d,) into arrays of this layout's shapes and dtypes.

        Integer arrays (counters such as batch norm's ``num_batches_tracked``)
        are rounded to the nearest integer, booleans thresholded at 1/2.
        """
        out = []
        bounds = np.cumsum([0, *self.sizes])
        for shape, dtype, start, stop in zip(
            self.shapes, self.dtypes, bounds[:-1], bounds[1:], strict=True
        ):
            part = vector[start:stop].reshape(shape)
            if dtype.kind == "b":
                part = part >= 0.5
            elif dtype.kind in "iu":
                part = np.rint(part)
            out.append(np.array(part, dtype=dtype))  # a contiguous copy; keeps 0-d arrays 0-d
        return out

    def compute_dtype(self) -> np.dtype:
        """float32 for float32 (and smaller) models, float64 when a layer needs it."""
        return np.result_type(np.float32, *(d for d in self.dtypes if d.kind == "f"))


@dataclass
class RoundReport:
    """What happened to each client's reply in one aggregation.

    Client identifiers are whatever the caller passes (Flower node ids, or the
    legacy API's client ids).
    """

    aggregated: list[Hashable] = field(default_factory=list)
    failed: dict[Hashable, str] = field(default_factory=dict)
    malformed: dict[Hashable, str] = field(default_factory=dict)
    nonfinite: list[Hashable] = field(default_factory=list)
    f: int = 0

    def metrics(self) -> dict[str, int]:
        """Counts for Flower's metric records (ids stay out: they may not fit int64)."""
        return {
            "byzance-aggregated": len(self.aggregated),
            "byzance-failed": len(self.failed),
            "byzance-malformed": len(self.malformed),
            "byzance-nonfinite": len(self.nonfinite),
        }


class RobustAggregator:
    """Aggregate client models with a byzance rule: n lists of arrays -> one list of arrays.

    Args:
        rule: a registered rule name (``"median"``, ``"krum"``, a pipeline
            ``"nnm>trimmed_mean"``) or a :class:`byzance.aggregators.Rule`
            (``aggregators.compose(aggregators.get("bucketing", s=2), "median")``).
        f: the number of Byzantine clients tolerated per round.
        rule_params: the rule's parameters, e.g. ``{"selection": "krum"}`` for
            Bulyan or ``{"tau": 1.0}`` for centered clipping; checked now.
        on: ``"updates"`` (default) aggregates each client's change to the
            model it was sent, x_i - w, and returns w + rule(x - w); this is
            what the rules' guarantees are stated for, and it matters for the
            rules that are not translation equivariant (clipping, ARC,
            centered clipping). ``"models"`` aggregates the returned models
            themselves, as Flower's Krum and median strategies do.

    Centered clipping (Karimireddy et al., ICML 2021) keeps its state: each
    round starts from the previous round's aggregated update.

    Client weights (Flower's ``num-examples``) are ignored on purpose: a
    Byzantine client could claim any number of examples.
    """

    def __init__(
        self,
        rule: str | Rule,
        f: int,
        *,
        rule_params: Mapping[str, Any] | None = None,
        on: On = "updates",
        device: str = "cpu",
    ) -> None:
        from byzance.devices import resolve_device

        self.device = resolve_device(device)  # where the (n, d) replies are aggregated
        self.rule = aggregators.get(rule, **dict(rule_params or {}))
        if self.rule.kind != "aggregator":
            raise InvalidParameterError(
                f"{self.rule.name} is a pre-aggregator (n, d) -> (m, d); put an aggregation "
                f"rule after it, e.g. rule='{self.rule.name}>median'."
            )
        self.f = check_f(f, self.rule.name)
        if on not in ("updates", "models"):
            raise InvalidParameterError(f"on must be 'updates' or 'models'; got {on!r}.")
        self.on: On = on
        self.uses_center = self.rule.carries_center and "center" not in self.rule.defaults
        self.center: torch.Tensor | None = None

    @property
    def min_clients(self) -> int:
        """The fewest replies per round that the rule accepts with this f."""
        return self.rule.min_n(self.f)

    def aggregate(
        self,
        replies: Sequence[tuple[Hashable, Arrays]],
        reference: Arrays | None = None,
        *,
        failed: Mapping[Hashable, str] | None = None,
        malformed: Mapping[Hashable, str] | None = None,
        where: str = "",
    ) -> tuple[list[np.ndarray], RoundReport]:
        """One robust aggregate of the clients' models.

        Args:
            replies: (client id, arrays) for each client that answered.
            reference: the arrays the clients were sent this round (the global
                model): it fixes the expected shapes, and ``on="updates"``
                needs it. Without it (``on="models"`` only) the layout shared
                by most replies is the expected one.
            failed: clients that answered with an error, by id, with the
                reason; reported only (they sent nothing to aggregate).
            malformed: clients whose reply could not be read as arrays
                (detected by the caller); like replies that do not match the
                layout, each is counted as one of the f Byzantine clients.
            where: a prefix for error messages, e.g. ``"round 3"``.

        Returns:
            The aggregated arrays (the model's shapes and dtypes) and the
            :class:`RoundReport`.

        Raises:
            ToleranceError: fewer usable replies than the rule needs, or more
                faulty (malformed or non-finite) replies than f.
        """
        report = RoundReport(failed=dict(failed or {}), malformed=dict(malformed or {}))
        if self.on == "updates" and reference is None:
            raise InvalidParameterError(
                "on='updates' needs the arrays sent to the clients this round (reference=...); "
                "a Flower strategy records them in configure_train/configure_fit, so call that "
                "first, or aggregate the models themselves with on='models'."
            )
        layout = Layout.of(reference) if reference is not None else _majority_layout(replies)
        usable: list[tuple[Hashable, Arrays]] = []
        for cid, arrays in replies:
            why = layout.mismatch(arrays)
            if why is None:
                usable.append((cid, arrays))
            else:
                report.malformed[cid] = why
        prefix = f"{where}: " if where else ""
        faulty = len(report.malformed)
        if faulty > self.f:
            raise ToleranceError(
                f"{prefix}{faulty} clients sent replies that do not fit the model "
                f"({_describe(report.malformed)}), more than the f={self.f} Byzantine clients "
                f"tolerated. Fix those clients, or raise f (with enough clients for "
                f"{self.rule.name}: {self.rule.requirement})."
            )
        f = self.f - faulty
        if not usable:
            raise ToleranceError(
                f"{prefix}no usable reply to aggregate ({len(report.failed)} failed, "
                f"{faulty} malformed); {self.rule.name} needs at least {self.rule.min_n(f)}."
            )
        dtype = layout.compute_dtype()
        x = torch.from_numpy(layout.flatten([a for _, a in usable], dtype)).to(
            self.device
        )  # (n, d)
        ref = None
        if self.on == "updates":
            ref = torch.from_numpy(layout.flatten([reference], dtype)[0]).to(self.device)  # (d,)
            x -= ref
        finite = torch.isfinite(x).all(dim=1)
        report.aggregated = [
            cid for (cid, _), ok in zip(usable, finite.tolist(), strict=True) if ok
        ]
        report.nonfinite = [
            cid for (cid, _), ok in zip(usable, finite.tolist(), strict=True) if not ok
        ]
        report.f = f
        params = {"center": self.center} if self.uses_center else {}
        try:
            out = self.rule(x, f, **params)  # (d,): the rule drops non-finite rows itself
        except (ToleranceError, NonFiniteInputError) as err:
            raise type(err)(
                f"{prefix}{len(usable)} usable replies ({len(report.failed)} clients failed; "
                f"{faulty} malformed, each counted as one of the f={self.f}): {err} "
                "Sample more clients per round (min_train_nodes / min_fit_clients) or lower f."
            ) from None
        if self.uses_center:
            self.center = out
        if ref is not None:
            out = out + ref
        return layout.unflatten(out.cpu().numpy()), report


def clients_per_round(
    aggregator: RobustAggregator, requested: int | None, option: str, too_few: str
) -> int:
    """The clients sampled per round: ``requested``, or the rule's minimum n for its f.

    ``option`` names the strategy's argument in the error (``min_train_nodes``, ...).
    """
    need = aggregator.min_clients
    chosen = need if requested is None else requested
    if chosen < need:
        raise ToleranceError(
            f"{aggregator.rule.name} requires {aggregator.rule.requirement} to tolerate "
            f"f={aggregator.f} Byzantine clients, but {option}={chosen}: sample at least "
            f"{need} clients per round ({option}={need}), or lower f."
        )
    if too_few not in ("raise", "skip"):
        raise InvalidParameterError(f"too_few must be 'raise' or 'skip'; got {too_few!r}.")
    return chosen


def _majority_layout(replies: Sequence[tuple[Hashable, Arrays]]) -> Layout:
    """The layout most replies share (with at most f < n/2 Byzantine ones, the honest one)."""
    if not replies:
        raise ToleranceError("no reply to aggregate.")
    layouts = []
    for _, arrays in replies:
        try:
            layouts.append(Layout.of(arrays))
        except (TypeError, ValueError):
            continue
    if not layouts:
        raise ShapeError("no reply holds a list of numeric arrays.")
    return Counter(layouts).most_common(1)[0][0]


def _describe(reasons: Mapping[Hashable, str], limit: int = 3) -> str:
    items = [f"client {cid}: {why}" for cid, why in list(reasons.items())[:limit]]
    more = len(reasons) - limit
    return "; ".join(items) + (f"; and {more} more" if more > 0 else "")
