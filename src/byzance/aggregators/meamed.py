"""Mean around the median (MeaMed)."""

from __future__ import annotations

import torch

from byzance.aggregators._order import coordinate_mean_around_median
from byzance.aggregators._registry import Requirement, Rule, register


def _meamed(x: torch.Tensor, f: int) -> torch.Tensor:
    """Coordinate-wise mean of the n - f values closest to the median.

    Xie, Koyejo, Gupta, "Generalized Byzantine-tolerant SGD", 2018 (arXiv
    1802.10116), "mean around median". Ties between equally close windows of
    values go to the lower one.

    Args:
        x: inputs, shape (n, d).
        f: Byzantine inputs tolerated; requires n >= 2f + 1.

    Returns:
        Shape (d,).

    Example:
        >>> meamed(torch.tensor([[0.0], [1.0], [2.0], [2.5], [100.0]]), f=1)
        tensor([1.3750])
    """
    return coordinate_mean_around_median(x, x.shape[0] - f)


meamed = register(
    Rule(
        name="meamed",
        impl=_meamed,
        requirement=Requirement(2, 1),
        paper="Xie, Koyejo, Gupta, Generalized Byzantine-tolerant SGD, arXiv:1802.10116, 2018",
        summary="coordinate-wise mean of the n - f values closest to the median",
        cost=(
            "As median: a radix descent to the median, one pass of distances to it, a second "
            "descent to the (n - f)-th smallest distance, then one summing pass: O(nd)."
        ),
        missing="coordinate_wise",
        checks_rows=True,
        speed_floor="pass",
        speed_target=5.0,
    )
)
