"""The plain average: the brittle baseline that robust rules replace."""

from __future__ import annotations

import torch

from byzance.aggregators._registry import Requirement, Rule, register


def _average(x: torch.Tensor, f: int) -> torch.Tensor:
    """Coordinate-wise mean of the n inputs.

    Args:
        x: inputs, shape (n, d).
        f: ignored; the mean tolerates no Byzantine input (one vector of huge
            norm moves it anywhere), but it runs for any f, as the baseline.

    Returns:
        Shape (d,).

    Example:
        >>> average(torch.tensor([[0.0, 1.0], [2.0, 3.0]]), f=0)
        tensor([1., 2.])
    """
    return x.mean(dim=0)


average = register(
    Rule(
        name="average",
        impl=_average,
        requirement=Requirement(0, 1),
        paper="Stochastic gradient descent's mini-batch average (non-robust baseline).",
        summary="coordinate-wise mean; breaks with a single Byzantine input",
        cost="O(nd): one pass over the input.",
        missing="coordinate_wise",
        speed_floor="pass",
        robust=False,
    )
)
