"""What a step reports, and evaluation: shared by every mode and by real distributed runs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from byzance.aggregators import Rule, finite_rows
from byzance.sim.gradients import LossFn


class TrainingDivergedError(RuntimeError):
    """The model's parameters or the honest gradients are no longer finite."""


def loss_for(task: str) -> LossFn:
    """Cross-entropy for classification, mean squared error for regression."""
    return F.cross_entropy if task == "classification" else F.mse_loss


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    loss_fn: LossFn,
    num_classes: int,
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int = 4096,
) -> dict[str, float]:
    """Mean loss (and accuracy when ``num_classes``) of ``model`` on (x, y), in batches."""
    total_loss, correct = 0.0, 0
    for i in range(0, len(x), batch):
        out = model(x[i : i + batch])
        total_loss += float(loss_fn(out, y[i : i + batch])) * len(out)
        if num_classes:
            correct += int((out.argmax(dim=1) == y[i : i + batch]).sum())
    result = {"test_loss": total_loss / len(x)}
    if num_classes:
        result["accuracy"] = correct / len(x)
    return result


@dataclass(frozen=True)
class StepStats:
    """What one step did, for the metrics and for understanding why a rule fails.

    ``deviation``: distance from the aggregate to the honest mean;
    ``byzantine_selected``: for selection rules, the fraction of the inputs
    the rule used that were Byzantine (None for other rules);
    ``nonfinite_dropped``: inputs holding NaN or inf that a robust rule
    dropped as faulty (a rule that is not robust drops none: it diverges).
    """

    loss: float
    honest_norm: float
    honest_spread: float
    deviation: float
    aggregate_norm: float
    byzantine_selected: float | None
    aggregation_seconds: float
    sim_time: float | None = None
    nonfinite_dropped: int = 0


def step_stats(
    rule: Rule,
    f: int,
    honest_losses: torch.Tensor,
    honest: torch.Tensor,
    inputs: torch.Tensor,
    byzantine_rows: torch.Tensor,
    aggregate: torch.Tensor,
    seconds: float,
    *,
    honest_mean: torch.Tensor | None = None,
) -> StepStats:
    """One step's statistics (shared by the simulator and real distributed runs).

    Args:
        rule: the rule that aggregated; f: its f.
        honest_losses: the honest workers' losses (h,).
        honest: the honest vectors (h, d); inputs: every vector aggregated (m, d).
        byzantine_rows: (m,) bool, which inputs came from Byzantine workers.
        aggregate: the rule's output (d,); seconds: how long the rule took.
        honest_mean: ``honest.mean(dim=0)`` when the caller has it already.
    """
    if honest_mean is None:
        honest_mean = honest.mean(dim=0)
    selected = None
    if rule.selector is not None and bool(byzantine_rows.any()):
        used = rule.selected(inputs, f)
        selected = float(byzantine_rows[used].float().mean()) if len(used) else 0.0
    dropped = int((~finite_rows(inputs)).sum()) if rule.robust else 0
    return StepStats(
        loss=float(honest_losses.mean()),
        honest_norm=float(honest_mean.norm()),
        honest_spread=float((honest - honest_mean).norm(dim=1).mean()),
        deviation=float((aggregate - honest_mean).norm()),
        aggregate_norm=float(aggregate.norm()),
        byzantine_selected=selected,
        aggregation_seconds=seconds,
        nonfinite_dropped=dropped,
    )
