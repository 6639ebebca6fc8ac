"""Strategic voting: best responses to the mean and to (skewed) geometric medians, and the gain alpha.

El Mhamdi, Farhadkhani, Guerraoui, Hoang, "On the Strategyproofness of the
Geometric Median", AISTATS 2023 (arXiv 2106.02394). Voter i prefers x_i in
R^d and wants the outcome z close to it: its loss is |C (z - x_i)|_2, where
the positive definite C says which dimensions the voter cares about (C = I:
plain Euclidean distance). The outcome is

- the mean, which a single voter moves anywhere (report s = n x_i - sum of
  the others: the outcome is x_i);
- the skewed geometric median argmin_z sum_j |S (z - x_j)|_2, S symmetric
  positive definite (S = I: the geometric median). Each voter pulls with a
  unit force: with y = S z and p_j = S x_j, the outcomes voter i can reach
  by some report are exactly y(t) = argmin_y sum_{j != i} |y - p_j| - t.y over
  pulls |t| <= 1 (report p_s = y + r t for any r > 0 when |t| = 1, the
  outcome itself when |t| < 1). Truthful voting is the pull t towards p_i.

The best response minimizes the voter's loss over that ball of pulls (the
outcome's gradient is dy/dt = H(y)^-1, H the Hessian of the others' sum of
distances), by projected gradient steps whose length is searched on a
geometric grid (2 down to 2^-22), starting from the first-order best pull
at the truthful outcome; every
inner problem is solved by damped Newton iterations, batched over voters.

Strategic gain: with L_abs, L_truth and L_best the voter's loss when it
abstains, votes truthfully and votes its best response,
alpha = (L_abs - L_best) / (L_abs - L_truth) - 1: how much more a lie moves
the outcome towards the voter than the truth does (0: telling the truth is
optimal). For the mean alpha = n - 1 (unbounded in n: fully manipulable).
For the skewed geometric median every voter's influence is O(1/n), and
first-order expansion gives the large-n limit
alpha_inf(x_i) = |H^-1 q| / (q . H^-1 t_i) - 1, q = S^-1 C^2 (x_i - z),
t_i the truthful pull: it is 0 when S^-1 C^2 S^-1 is proportional to H at
the outcome (for instance C = S and isotropic preferences S x), and grows
with the anisotropy of preferences and cares (the paper's asymptotic
alpha-strategyproofness and its skewed version).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from byzance.errors import InvalidParameterError

_STEPS = 2.0 ** -torch.tensor(
    [0, 1, 2, 3, 5, 8, 12, 16], dtype=torch.float64
)  # damped Newton steps
_PULL_STEPS = torch.cat(
    [torch.zeros(1), 2.0 ** -torch.tensor([-1, 0, 1, 2, 3, 4, 6, 8, 10, 12, 15, 18, 22])]
).to(torch.float64)


def _objective(
    y: torch.Tensor, points: torch.Tensor, weights: torch.Tensor, pull: torch.Tensor, eps: float
) -> torch.Tensor:
    """sum_j w_j sqrt(|y - p_j|^2 + eps^2) - pull . y for y (B, K, d), points (B, n, d) -> (B, K)."""
    sq = torch.cdist(y, points, compute_mode="donot_use_mm_for_euclid_dist").square()  # (B, K, n)
    dist = (sq + eps * eps).sqrt()
    return (dist * weights[:, None, :]).sum(-1) - (y * pull[:, None, :]).sum(-1)


def _grad_hess(
    y: torch.Tensor, points: torch.Tensor, weights: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient (B, d) and Hessian (B, d, d) of sum_j w_j sqrt(|y - p_j|^2 + eps^2) at y (B, d)."""
    diff = y[:, None, :] - points  # (B, n, d)
    dist = (diff.square().sum(-1) + eps * eps).sqrt()  # (B, n)
    wr = weights / dist
    grad = (wr[..., None] * diff).sum(1)
    eye = torch.eye(y.shape[-1], dtype=y.dtype)
    # sum_j (w_j / r_j) (I - u_j u_j^T) as one batched product, no (B, n, d, d) tensor.
    scaled = diff * (wr / dist.square())[..., None]
    hess = wr.sum(1)[:, None, None] * eye - scaled.transpose(1, 2) @ diff
    return grad, hess


def tilted_geometric_median(
    points: torch.Tensor,
    weights: torch.Tensor,
    pull: torch.Tensor,
    *,
    init: torch.Tensor | None = None,
    max_iter: int = 100,
    tol: float = 1e-13,
) -> torch.Tensor:
    """argmin_y sum_j w_j |y - p_j| - pull . y for a batch: points (B, n, d), weights (B, n), pull (B, d) -> (B, d).

    With pull = 0, the (weighted) geometric median, to about ``tol`` times
    the points' scale (the distances are smoothed by 1e-12 of the scale so
    that Newton's method is defined on an input). The minimizer exists when
    |pull| is less than the total weight. Damped Newton: each problem takes
    the longest of the steps 2^-k (k in 0, 1, 2, 3, 5, 8, 12, 16) along the
    Newton direction that does not raise its objective beyond rounding.
    """
    scale = float(points.abs().max()) + 1e-30
    eps = 1e-12 * scale
    if init is None:
        init = (weights[..., None] * points).sum(1) / weights.sum(1, keepdim=True)
    y = init.clone()
    eye = torch.eye(points.shape[-1], dtype=points.dtype)
    for _ in range(max_iter):
        grad, hess = _grad_hess(y, points, weights, eps)
        step = torch.linalg.solve(hess + 1e-14 * scale * eye, (grad - pull)[..., None])[..., 0]
        trial = y[:, None, :] - _STEPS[None, :, None] * step[:, None, :]
        values = _objective(torch.cat([y[:, None, :], trial], 1), points, weights, pull, eps)
        # Backtracking: the longest step that does not raise the objective beyond rounding
        # (near the minimizer the decrease is below rounding, and the full step is right).
        slack = 1e-15 * (
            values[:, :1].abs() + (points.abs().amax((1, 2)) * weights.sum(1))[:, None]
        )
        allowed = values[:, 1:] <= values[:, :1] + slack
        first = torch.where(allowed.any(1), allowed.to(torch.int8).argmax(1), len(_STEPS))
        size = torch.cat([_STEPS, torch.zeros(1, dtype=y.dtype)])[first]
        y = y - size[:, None] * step
        if float((size[:, None] * step).abs().max()) <= tol * scale:
            break
    return y


@dataclass(frozen=True)
class Responses:
    """One voter per row: its losses when abstaining, truthful and strategic (m,); best reports (m, d)."""

    loss_abstain: torch.Tensor
    loss_truth: torch.Tensor
    loss_best: torch.Tensor
    report: torch.Tensor
    outcome: torch.Tensor

    @property
    def alpha(self) -> torch.Tensor:
        """(m,) strategic gain (L_abs - L_best) / (L_abs - L_truth) - 1.

        0 when no report gains anything over abstaining (nor does the truth);
        inf when some lie gains but the truth does not (for instance when the
        outcome sits on another voter's vector, which the truthful pull cannot move).
        """
        floor = 1e-12 * self.loss_abstain
        gain_truth = self.loss_abstain - self.loss_truth
        gain_best = self.loss_abstain - self.loss_best
        alpha = (gain_best / gain_truth.clamp(min=floor) - 1).clamp(min=0)
        alpha = torch.where(gain_truth > floor, alpha, torch.inf)
        return torch.where(gain_best - gain_truth.clamp(min=0) > floor, alpha, 0.0)

    @property
    def distance_ratio(self) -> torch.Tensor:
        """(m,) L_truth / L_best - 1: how much closer lying gets the outcome (inf when it reaches x_i)."""
        return (self.loss_truth / self.loss_best - 1).clamp(min=0)


def _check_matrix(m: torch.Tensor | None, d: int, what: str) -> torch.Tensor:
    if m is None:
        return torch.eye(d, dtype=torch.float64)
    m = torch.as_tensor(m, dtype=torch.float64)
    if m.ndim == 1:
        m = torch.diag(m)
    if (
        m.shape != (d, d)
        or not torch.allclose(m, m.T)
        or float(torch.linalg.eigvalsh(m).min()) <= 0
    ):
        raise InvalidParameterError(
            f"{what} must be a symmetric positive definite ({d}, {d}) matrix (or a positive (d,) diagonal); "
            f"got {m.tolist()}."
        )
    return m


def best_responses(
    x: torch.Tensor,
    voters: torch.Tensor,
    rule: str,
    *,
    skew: torch.Tensor | None = None,
    care: torch.Tensor | None = None,
    iterations: int = 12,
) -> Responses:
    """Best responses of the ``voters`` (m,) among the n preferences ``x`` (n, d), float64.

    ``rule`` is ``mean`` or ``geometric_median`` (skewed by ``skew`` S, (d, d)
    or its (d,) diagonal; identity by default). ``care`` C, (d, d) or (d,),
    weighs the voters' losses |C (z - x_i)|.
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    n, d = x.shape
    if n < 2:
        raise InvalidParameterError(f"strategic voting needs n >= 2 voters; got {n}.")
    c = _check_matrix(care, d, "care")
    xi = x[voters]  # (m, d)
    m = len(voters)

    def loss(z: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm((z - xi) @ c, dim=-1)

    if rule == "mean":
        total = x.sum(0)
        z_abs = (total - xi) / (n - 1)
        return Responses(
            loss(z_abs),
            loss(total.expand(m, d) / n),
            torch.zeros(m, dtype=torch.float64),
            n * xi - (total - xi),
            xi.clone(),
        )
    if rule != "geometric_median":
        raise InvalidParameterError(
            f"strategic voting: rule must be 'mean' or 'geometric_median'; got {rule!r}."
        )
    s = _check_matrix(skew, d, "skew")
    s_inv = torch.linalg.inv(s)
    c2 = c @ c
    p = x @ s  # rows S x_j
    points = p.expand(m, n, d)
    others = torch.ones(m, n, dtype=torch.float64)
    others[torch.arange(m), voters] = 0.0
    zero = torch.zeros(m, d, dtype=torch.float64)
    y_all = tilted_geometric_median(p[None], torch.ones(1, n, dtype=torch.float64), zero[:1])
    y_abs = tilted_geometric_median(points, others, zero, init=y_all.expand(m, d))
    loss_abs = loss(y_abs @ s_inv)
    loss_truth = loss((y_all @ s_inv).expand(m, d))
    truth_pull = p[voters] - y_all
    truth_pull = truth_pull / torch.linalg.vector_norm(truth_pull, dim=1, keepdim=True).clamp(
        min=1e-300
    )

    eps = 1e-12 * float(p.abs().max())

    def pull_gradient(y: torch.Tensor) -> torch.Tensor:
        """(m, d) gradient of the loss in the pull, up to a positive factor per voter."""
        _, hess = _grad_hess(y, points, others, eps)
        g_z = (y @ s_inv - xi) @ c2  # the loss's gradient in z, times the loss
        return torch.linalg.solve(hess, (g_z @ s_inv)[..., None])[..., 0]

    # Start from the first-order best pull at the truthful outcome (exact as n grows).
    t = -pull_gradient(y_all.expand(m, d))
    t = t / torch.linalg.vector_norm(t, dim=1, keepdim=True).clamp(min=1e-300)
    y = tilted_geometric_median(points, others, t, init=y_all.expand(m, d))
    best_loss = loss(y @ s_inv)
    for _ in range(iterations):
        g_t = pull_gradient(y)
        direction = g_t / torch.linalg.vector_norm(g_t, dim=1, keepdim=True).clamp(min=1e-300)
        cand_t = t[:, None, :] - _PULL_STEPS[None, :, None] * direction[:, None, :]
        cand_t = cand_t / torch.linalg.vector_norm(cand_t, dim=-1, keepdim=True).clamp(min=1.0)
        k = len(_PULL_STEPS)
        cand_y = tilted_geometric_median(
            points.repeat_interleave(k, 0),
            others.repeat_interleave(k, 0),
            cand_t.reshape(m * k, d),
            init=y.repeat_interleave(k, 0),
            max_iter=20,
        ).reshape(m, k, d)
        cand_loss = torch.linalg.vector_norm((cand_y @ s_inv - xi[:, None, :]) @ c, dim=-1)
        pick = cand_loss.argmin(1)
        rows = torch.arange(m)
        t, y, best_loss = cand_t[rows, pick], cand_y[rows, pick], cand_loss[rows, pick]
    on_sphere = torch.linalg.vector_norm(t, dim=1, keepdim=True) >= 1 - 1e-9
    scale = float(p.abs().max())
    report = torch.where(on_sphere, y + scale * t, y) @ s_inv
    return Responses(loss_abs, loss_truth, torch.minimum(best_loss, loss_truth), report, y @ s_inv)


def asymptotic_alpha(
    sample: torch.Tensor,
    voters: torch.Tensor,
    *,
    skew: torch.Tensor | None = None,
    care: torch.Tensor | None = None,
) -> torch.Tensor:
    """(m,) first-order (n -> infinity) strategic gain of the ``voters`` (m, d) against a large ``sample`` (N, d).

    alpha_inf(x_i) = |H^-1 q| / (q . H^-1 t_i) - 1 with H the Hessian of the
    sample's skewed sum of distances at its skewed geometric median, q =
    S^-1 C^2 (x_i - z) and t_i the truthful pull (see the module docstring).
    """
    sample = torch.as_tensor(sample, dtype=torch.float64)
    n, d = sample.shape
    s, c = _check_matrix(skew, d, "skew"), _check_matrix(care, d, "care")
    s_inv = torch.linalg.inv(s)
    p = sample @ s
    y = tilted_geometric_median(
        p[None], torch.ones(1, n, dtype=torch.float64), torch.zeros(1, d, dtype=torch.float64)
    )
    _, hess = _grad_hess(
        y, p[None], torch.ones(1, n, dtype=torch.float64), 1e-12 * float(p.abs().max())
    )
    h_inv = torch.linalg.inv(hess[0])
    z = y[0] @ s_inv
    q = (voters - z) @ (c @ c) @ s_inv
    t = voters @ s - y[0]
    t = t / torch.linalg.vector_norm(t, dim=1, keepdim=True)
    best = torch.linalg.vector_norm(q @ h_inv, dim=1)
    truth = ((q @ h_inv) * t).sum(1)
    return torch.where(truth > 0, best / truth - 1, torch.inf)
