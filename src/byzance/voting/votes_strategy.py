"""``byzance votes`` with ``kind = "strategy"``: the strategic gain alpha of one voter against n.

For the mean, the geometric median and skewed geometric medians (and, with
``search_skew``, the diagonal skew of least predicted alpha), from the best
responses of :mod:`byzance.voting.strategy`.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from byzance.voting import strategy
from byzance.voting.votes_config import VotesConfig
from byzance.voting.votes_result import Progress, VotesResult

__all__ = ["best_diagonal_skew", "run_strategy"]


def _diag(values: list[float]) -> torch.Tensor:
    return torch.diag(torch.tensor(values, dtype=torch.float64))


def best_diagonal_skew(
    cfg: VotesConfig, sample: torch.Tensor, voters: torch.Tensor
) -> tuple[list[float], float]:
    """The diagonal skew diag(r_1, ..., r_d) (r_d = 1) of least predicted mean alpha, by grid search per axis."""
    care = _diag(cfg.care)
    best = [1.0] * len(cfg.scales)
    best_alpha = float(
        strategy.asymptotic_alpha(sample, voters, skew=_diag(best), care=care).mean()
    )
    grid = torch.logspace(-1.5, 1.5, 31).tolist()
    for _ in range(2):  # coordinate descent, twice over the axes
        for axis in range(len(best) - 1):
            for r in grid:
                trial = [*best]
                trial[axis] = r
                a = float(
                    strategy.asymptotic_alpha(sample, voters, skew=_diag(trial), care=care).mean()
                )
                if a < best_alpha:
                    best, best_alpha = trial, a
    return best, best_alpha


def run_strategy(cfg: VotesConfig, progress: Progress | None = None) -> VotesResult:
    """Strategic gain alpha against n for the mean and (skewed) geometric medians."""
    from byzance.voting.plots import plot_strategy

    note = progress or (lambda _: None)
    gen = torch.Generator().manual_seed(cfg.seed)
    scales = torch.tensor(cfg.scales, dtype=torch.float64)
    care = _diag(cfg.care)
    d = len(cfg.scales)
    sample = torch.randn(cfg.prediction_sample, d, generator=gen, dtype=torch.float64) * scales
    voters_sample = sample[: min(2000, cfg.prediction_sample)]
    skews = {name: _diag(diag) for name, diag in cfg.skews.items()}
    notes = []
    if cfg.search_skew:
        diag, _ = best_diagonal_skew(cfg, sample, voters_sample)
        name = "skewed (best diagonal S)"
        skews[name] = _diag(diag)
        notes.append(
            f"Best diagonal skew found by grid search on the predicted alpha: S = diag({', '.join(f'{v:.3g}' for v in diag)})."
        )
    predicted = {
        name: float(strategy.asymptotic_alpha(sample, voters_sample, skew=s, care=care).mean())
        for name, s in skews.items()
    }
    rows = []
    for n in cfg.ns:
        note(f"n = {n}")
        per_rule: dict[str, list[torch.Tensor]] = {"mean": [], **{name: [] for name in skews}}
        ratio: dict[str, list[torch.Tensor]] = {k: [] for k in per_rule}
        for _ in range(cfg.trials):
            x = torch.randn(n, d, generator=gen, dtype=torch.float64) * scales
            voters = torch.arange(min(cfg.voters, n))
            r = strategy.best_responses(x, voters, "mean", care=care)
            per_rule["mean"].append(r.alpha)
            ratio["mean"].append(r.distance_ratio)
            for name, s in skews.items():
                r = strategy.best_responses(x, voters, "geometric_median", skew=s, care=care)
                per_rule[name].append(r.alpha)
                ratio[name].append(r.distance_ratio)
        for rule, values in per_rule.items():
            a = torch.cat(values)
            q = torch.cat(ratio[rule])
            rows.append(
                {
                    "table": "strategy",
                    "rule": rule,
                    "n": n,
                    "alpha_mean": float(a.mean()),
                    "alpha_median": float(a.median()),
                    "alpha_max": float(a.max()),
                    "distance_ratio_mean": float(q.mean()),
                    "predicted_alpha_mean": (n - 1.0) if rule == "mean" else predicted[rule],
                }
            )
    out = Path(cfg.out_dir)
    rules = list(dict.fromkeys(r["rule"] for r in rows))
    header = ["rule", *(f"n={n}" for n in cfg.ns), "n -> inf (predicted)"]
    body = []
    for rule in rules:
        cells = {r["n"]: r for r in rows if r["rule"] == rule}
        pred = "inf" if rule == "mean" else _fmt(predicted[rule])
        body.append([rule, *(_fmt(cells[n]["alpha_mean"]) for n in cfg.ns), pred])
    header2 = ["rule", *(f"n={n}" for n in cfg.ns)]
    body2 = [
        [
            rule,
            *(
                f"{_fmt(c['alpha_median'])} / {_fmt(c['alpha_max'])}"
                for c in sorted((r for r in rows if r["rule"] == rule), key=lambda r: r["n"])
            ),
        ]
        for rule in rules
    ]
    setting = f"preferences ~ N(0, diag({', '.join(f'{s:g}' for s in cfg.scales)})^2), loss |diag({', '.join(f'{c:g}' for c in cfg.care)}) (z - x_i)|"
    plot = out / "strategy.png"
    plot_strategy(rows, predicted, plot, f"strategic gain: {setting}")
    tables = [
        (
            f"Mean strategic gain alpha, {cfg.trials} trials of min(n, {cfg.voters}) voters; {setting}",
            header,
            body,
        ),
        ("Median / max alpha over the same voters", header2, body2),
    ]
    notes.insert(
        0,
        "Skewing matrices (diagonals): "
        + "; ".join(
            f"{k}: S = diag({', '.join(f'{v:.3g}' for v in torch.diagonal(s).tolist())})"
            for k, s in skews.items()
        )
        + ".",
    )
    return VotesResult("strategy", rows, tables, out, [plot], notes)


def _fmt(v: float) -> str:
    if math.isinf(v):
        return "inf"
    return f"{v:.3g}"
