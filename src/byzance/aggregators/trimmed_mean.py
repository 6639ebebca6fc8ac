"""Coordinate-wise trimmed mean."""

from __future__ import annotations

import torch

from byzance.aggregators._order import coordinate_trimmed_mean
from byzance.aggregators._registry import Requirement, Rule, register


def _trimmed_mean(x: torch.Tensor, f: int) -> torch.Tensor:
    """Coordinate-wise: drop the f largest and f smallest values, average the n - 2f left.

    Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning:
    Towards Optimal Statistical Rates", ICML 2018 (trimming parameter beta = f/n).

    Args:
        x: inputs, shape (n, d).
        f: values trimmed at each end of every coordinate; requires n >= 2f + 1.

    Returns:
        Shape (d,).

    Example:
        >>> trimmed_mean(torch.tensor([[-50.0], [1.0], [2.0], [3.0], [99.0]]), f=1)
        tensor([2.])
    """
    return coordinate_trimmed_mean(x, f)


trimmed_mean = register(
    Rule(
        name="trimmed_mean",
        impl=_trimmed_mean,
        requirement=Requirement(2, 1),
        paper="Yin et al., Byzantine-Robust Distributed Learning: Towards Optimal "
        "Statistical Rates, ICML 2018",
        summary="coordinate-wise mean without the f lowest and f highest values",
        cost=(
            "As median (a radix descent to each of the two order statistics), then one "
            "summing pass over the block: O(nd)."
        ),
        missing="coordinate_wise",
        checks_rows=True,
        speed_floor="pass",
        speed_target=5.0,
    )
)
