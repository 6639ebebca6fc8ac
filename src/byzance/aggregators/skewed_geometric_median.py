"""The skewed geometric median: the geometric median in the metric of a matrix S."""

from __future__ import annotations

from typing import Any

import torch

from byzance.aggregators._registry import Requirement, Rule, register
from byzance.aggregators.geometric_median import weiszfeld
from byzance.errors import InvalidParameterError


def check_skew(skew: Any, d: int, x: torch.Tensor) -> torch.Tensor:
    """The skewing matrix as a (d, d) tensor; it must be symmetric positive definite."""
    s = torch.as_tensor(skew).to(device=x.device, dtype=x.dtype)
    if s.shape != (d, d):
        raise InvalidParameterError(
            f"skewed_geometric_median: skew must be a ({d}, {d}) matrix (d = the inputs' size); "
            f"got shape {tuple(s.shape)}."
        )
    if not bool(torch.isfinite(s).all()) or not torch.allclose(s, s.T, rtol=1e-6, atol=1e-9):
        raise InvalidParameterError(
            "skewed_geometric_median: skew must be a finite symmetric matrix; "
            "use (S + S.T) / 2 for a matrix that is symmetric up to rounding."
        )
    if float(torch.linalg.eigvalsh(s.double()).min()) <= 0:
        raise InvalidParameterError(
            "skewed_geometric_median: skew must be positive definite (all eigenvalues > 0)."
        )
    return s


def _skewed_geometric_median(
    x: torch.Tensor,
    f: int,
    *,
    skew: Any = None,
    weights: Any = None,
    nu: float = 1e-6,
    tol: float = 1e-6,
    max_iter: int = 100,
) -> torch.Tensor:
    """Minimizer of sum_i w_i |S (z - x_i)|_2 for a symmetric positive definite S.

    El Mhamdi, Farhadkhani, Guerraoui, Hoang, "On the Strategyproofness of the
    Geometric Median", AISTATS 2023 (arXiv 2106.02394): skewing the metric
    changes how much each dimension counts, and can make the vote harder to
    manipulate when voters care more about some dimensions. With y = S z the
    objective is the geometric median's in the points S x_i, so the result is
    S^-1 GM(S x_1, ..., S x_n), computed by the same Weiszfeld iterations as
    :func:`byzance.aggregators.geometric_median` (``nu``, ``tol``,
    ``max_iter`` act in the skewed space). S = I gives the geometric median.
    Breakdown point 1/2, as the geometric median.

    Args:
        x: inputs, shape (n, d).
        f: Byzantine inputs tolerated; requires n >= 2f + 1.
        skew: S, a symmetric positive definite matrix of shape (d, d); identity by default.
        weights: non-negative weights, shape (n,); uniform by default.
        nu: skewed distances below nu count as coinciding with the input.
        tol: relative decrease of the objective at which iterations stop.
        max_iter: iteration cap.

    Returns:
        Shape (d,).
    """
    if not (isinstance(max_iter, int) and max_iter >= 1 and nu > 0 and tol >= 0):
        raise InvalidParameterError(
            f"skewed_geometric_median: need max_iter >= 1, nu > 0, tol >= 0; got "
            f"max_iter={max_iter}, nu={nu}, tol={tol}."
        )
    if skew is None:
        z, _ = weiszfeld(x, weights, nu=nu, tol=tol, max_iter=max_iter)
        return z
    dtype = x.dtype
    if dtype in (torch.float16, torch.bfloat16):  # no half-precision solve; S x_i may overflow
        x = x.float()
    s = check_skew(skew, x.shape[1], x)
    y, _ = weiszfeld(x @ s, weights, nu=nu, tol=tol, max_iter=max_iter)  # rows S x_i (S symmetric)
    return torch.linalg.solve(s, y).to(dtype)


skewed_geometric_median = register(
    Rule(
        name="skewed_geometric_median",
        impl=_skewed_geometric_median,
        requirement=Requirement(2, 1),
        paper="El Mhamdi, Farhadkhani, Guerraoui, Hoang, On the Strategyproofness of the "
        "Geometric Median, AISTATS 2023",
        summary="minimizer of sum_i |S (z - x_i)| for a positive definite S",
        cost=(
            "S = I (default): as geometric_median. Otherwise O(d^3) to check S (eigenvalues) "
            "and solve S z = y, O(nd^2) to map the inputs, then O(nd) per Weiszfeld iteration."
        ),
        missing="whole_vectors",
        speed_floor="pass",
        row_params=("weights",),
        checks_rows=True,  # the first Weiszfeld distances (rows S x_i: NaN/inf stay non-finite)
        shardable=False,  # S x_i mixes every coordinate of x_i
    )
)
