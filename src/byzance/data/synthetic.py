"""Synthetic tasks whose training optimum is known to machine precision.

Both tasks are fitted by a single linear layer, ``torch.nn.Linear(dim, out)``,
and their optimum is returned as that layer's parameters flattened in
``named_parameters()`` order: ``weight.flatten()`` (out * dim values) then
``bias`` (out values), float64. The distance of a trained model to the optimum
then measures what the Byzantine participants cost, with no noise from
estimating the optimum.

Objectives (``theta`` = all weights and biases, ``N`` training samples):

* linear regression: ``mean_n (x_n . w + b - y_n)^2 + (l2 / 2) |theta|^2``
  (``torch.nn.functional.mse_loss`` plus SGD's ``weight_decay=l2``);
* softmax regression: ``mean_n cross_entropy(W x_n + b, y_n) + (l2 / 2) |theta|^2``.
"""

from __future__ import annotations

import math

import torch

from byzance.errors import InvalidParameterError

__all__ = [
    "least_squares_optimum",
    "linear_regression",
    "logistic_optimum",
    "softmax_classification",
]


def linear_regression(
    samples: int, dim: int, noise: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples of ``y = x . w* + b* + noise * eps`` with ``x, w*, b*, eps`` standard normal.

    Returns ``x`` float32 (samples, dim) and ``y`` float32 (samples,).
    """
    w = torch.randn(dim, generator=generator, dtype=torch.float64)
    b = torch.randn((), generator=generator, dtype=torch.float64)
    x = torch.randn(samples, dim, generator=generator, dtype=torch.float64)
    eps = torch.randn(samples, generator=generator, dtype=torch.float64)
    y = x @ w + b + noise * eps
    return x.float(), y.float()


def softmax_classification(
    samples: int, dim: int, classes: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels drawn from ``softmax(W* x + b*)`` for standard normal ``x``.

    ``W*`` has entries N(0, 4 / dim), so each logit has standard deviation about
    2: the teacher is confident but every class keeps some probability
    everywhere, and the drawn labels are (almost surely, for samples >> dim)
    not separable, so the unregularized optimum exists too.
    Returns ``x`` float32 (samples, dim) and ``y`` int64 (samples,) in [0, classes).
    """
    w = torch.randn(classes, dim, generator=generator, dtype=torch.float64) * (2 / math.sqrt(dim))
    b = torch.randn(classes, generator=generator, dtype=torch.float64) * 0.5
    x = torch.randn(samples, dim, generator=generator, dtype=torch.float64)
    probs = torch.softmax(x @ w.T + b, dim=1)
    y = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    return x.float(), y


def least_squares_optimum(x: torch.Tensor, y: torch.Tensor, l2: float = 0.0) -> torch.Tensor:
    """Minimizer of ``mean_n (x_n . w + b - y_n)^2 + (l2 / 2)(|w|^2 + b^2)``, in float64.

    ``x`` (N, d), ``y`` (N,). Returns ``[w, b]``, shape (d + 1,): the flattening of
    ``nn.Linear(d, 1)``'s weight (1, d) then bias (1,). Solved as one least-squares
    problem on ``[x 1; sqrt(N l2 / 2) I]`` (no normal equations, which square the
    condition number). With ``l2 == 0`` the minimizer must be unique: fewer than
    d + 1 independent samples raise :class:`InvalidParameterError`.
    """
    a = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    target = y.double()
    if l2 > 0:
        ridge = math.sqrt(len(x) * l2 / 2) * torch.eye(a.shape[1], dtype=torch.float64)
        a = torch.cat([a, ridge])
        target = torch.cat([target, torch.zeros(a.shape[1], dtype=torch.float64)])
    fit = torch.linalg.lstsq(a, target[:, None], driver="gelsd")
    if int(fit.rank) < a.shape[1]:
        raise InvalidParameterError(
            f"with l2=0 the least-squares objective has no unique minimizer on {len(x)} samples "
            f"in dimension {x.shape[1]} (rank {int(fit.rank)} < {a.shape[1]}): use l2 > 0 or "
            f"more samples."
        )
    return fit.solution[:, 0]


def _softmax_parts(
    theta: torch.Tensor, xa: torch.Tensor, onehot: torch.Tensor, l2: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Objective, gradient (C, d+1) and probabilities (N, C) at ``theta`` (C, d+1)."""
    logits = xa @ theta.T
    logp = torch.log_softmax(logits, dim=1)
    n = len(xa)
    loss = -(onehot * logp).sum() / n + 0.5 * l2 * theta.square().sum()
    probs = logp.exp()
    grad = (probs - onehot).T @ xa / n + l2 * theta
    return loss, grad, probs


def _softmax_hessian(probs: torch.Tensor, xa: torch.Tensor, l2: float) -> torch.Tensor:
    """Hessian over theta (C, d+1) flattened row-major, shape (C(d+1), C(d+1)):
    ``(1/N) sum_n (diag(p_n) - p_n p_n^T) kron (xa_n xa_n^T) + l2 I``."""
    n = len(probs)
    blocks = torch.einsum("nc,nj,nk->cjk", probs, xa, xa)  # (C, d+1, d+1)
    outer = (probs[:, :, None] * xa[:, None, :]).reshape(n, -1)  # (N, C(d+1))
    hess = (torch.block_diag(*blocks) - outer.T @ outer) / n
    return hess + l2 * torch.eye(hess.shape[0], dtype=hess.dtype)


def logistic_optimum(
    x: torch.Tensor,
    y: torch.Tensor,
    classes: int,
    l2: float = 1e-2,
    *,
    tol: float = 1e-10,
    max_iter: int = 100,
) -> torch.Tensor:
    """Minimizer of ``mean_n cross_entropy(W x_n + b, y_n) + (l2 / 2)(|W|^2 + |b|^2)``.

    ``x`` (N, d), ``y`` int64 (N,) in [0, classes). Returns float64
    ``[W.flatten(), b]``, shape (classes * d + classes,): ``nn.Linear(d, classes)``'s
    weight then bias. Newton's method with backtracking line search, in float64,
    from zero, until the gradient's Euclidean norm is below ``tol``; raises
    :class:`InvalidParameterError` if it is not reached (with ``l2 == 0`` on
    separable data no minimizer exists). With ``l2 == 0`` the objective is
    unchanged by adding one vector to every class's row; the minimizer returned
    is then the one whose rows sum to zero (the minimum-norm one; with ``l2 > 0``
    the minimizer has that property anyway), and it must be unique otherwise:
    on separable data (or too few samples) the gradient tends to zero as theta
    runs off to infinity, which the positive-curvature check rejects.
    """
    n, d = x.shape
    xa = torch.cat([x.double(), torch.ones(n, 1, dtype=torch.float64)], dim=1)  # (N, d+1)
    onehot = torch.nn.functional.one_hot(y, classes).double()  # (N, C)
    p = classes * (d + 1)
    theta = torch.zeros(classes, d + 1, dtype=torch.float64)
    loss, grad, probs = _softmax_parts(theta, xa, onehot, l2)
    for _ in range(max_iter):
        if grad.norm() < tol:
            break
        hess = _softmax_hessian(probs, xa, l2)
        g = grad.reshape(p, 1)
        if l2 > 0:
            step = torch.linalg.solve(hess, g)
        else:  # singular along the shift direction, which the gradient never has
            step = torch.linalg.lstsq(hess, g, driver="gelsd").solution
        step = step.reshape(classes, d + 1)
        slope = float((grad * step).sum())
        t = 1.0
        while True:
            candidate = theta - t * step
            new_loss, new_grad, new_probs = _softmax_parts(candidate, xa, onehot, l2)
            if new_loss <= loss - 1e-4 * t * slope or t < 1e-10:
                break
            t /= 2
        theta, loss, grad, probs = candidate, new_loss, new_grad, new_probs
    if l2 == 0:
        theta = theta - theta.mean(dim=0, keepdim=True)
        _, grad, probs = _softmax_parts(theta, xa, onehot, l2)
    if not grad.norm() < tol:
        raise InvalidParameterError(
            f"the softmax regression optimum was not found: gradient norm {float(grad.norm()):.3g} "
            f"after {max_iter} Newton steps (tolerance {tol:g}). With l2=0 the data may be "
            f"separable, so that no minimizer exists: use l2 > 0 or more samples."
        )
    if l2 == 0:
        # Besides the d + 1 shift directions, the curvature must be positive: on separable
        # (or too few) samples the gradient vanishes only because theta ran off to infinity.
        curvature = torch.linalg.eigvalsh(_softmax_hessian(probs, xa, l2))[d + 1]
        if curvature < 1e-8:
            raise InvalidParameterError(
                f"with l2=0 the softmax regression objective has no unique minimizer on these "
                f"{n} samples (they are separable, or too few for dimension {d}; curvature "
                f"{float(curvature):.2g}): use l2 > 0 or more samples."
            )
    return torch.cat([theta[:, :d].reshape(-1), theta[:, d]])
