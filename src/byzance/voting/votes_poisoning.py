"""``byzance votes`` on ratings: fake accounts against item scores, then reputation weights.

- :func:`run_poisoning` (``kind = "poisoning"``): fake accounts (push a target,
  bury a competitor, hyperactive) at several fractions of the users, against
  item scores aggregated by each rule: the attacked item's rank and the top-k
  overlap with the clean ranking; then RMSE on held-out ratings, with and
  without one attack, of the item-score recommender and of matrix
  factorization trained on robustly aggregated per-user gradients.
- :func:`run_reputation` (``kind = "reputation"``): the same push attack at
  larger fractions, every rule with equal weights and with weights from the
  account's age (new accounts weigh little).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from byzance.voting import attacks, scores
from byzance.voting.data import (
    Ratings,
    movielens_100k,
    movielens_account_age_days,
    synthetic_ratings,
)
from byzance.voting.factorization import train_factorization
from byzance.voting.votes_config import VotesConfig, VotesConfigError
from byzance.voting.votes_result import Progress, VotesResult

__all__ = ["run_poisoning", "run_reputation"]


def _load_ratings(cfg: VotesConfig) -> Ratings:
    if cfg.dataset == "movielens":
        return movielens_100k()
    return synthetic_ratings(**{"seed": cfg.seed, **cfg.dataset_params})


def _targets(
    cfg: VotesConfig, ratings: Ratings, eligible: torch.Tensor
) -> dict[str, tuple[int, torch.Tensor]]:
    """Per attack: the attacked item and its neighbours, from the clean ranking by mean."""
    order = scores.ranking(scores.item_scores(ratings, "average"), eligible)
    if cfg.target_rank > len(order) or cfg.competitor_rank + cfg.neighbours > len(order):
        raise VotesConfigError(
            f"only {len(order)} items have >= {cfg.min_raters} ratings: lower 'target_rank' "
            f"({cfg.target_rank}), 'competitor_rank' ({cfg.competitor_rank}) or 'min_raters'."
        )
    t = cfg.target_rank - 1
    push = (int(order[t]), order[max(0, t - cfg.neighbours) : t])  # the items it must overtake
    c = cfg.competitor_rank - 1
    bury = (int(order[c]), order[c + 1 : c + 1 + cfg.neighbours])  # those that should overtake it
    return {"push": push, "hyperactive": push, "bury": bury}


def run_poisoning(cfg: VotesConfig, progress: Progress | None = None) -> VotesResult:
    """Fake accounts against item scores; then held-out RMSE with and without one attack."""
    note = progress or (lambda _: None)
    ratings = _load_ratings(cfg)
    eligible = ratings.raters_per_item() >= cfg.min_raters
    targets = _targets(cfg, ratings, eligible)
    clean = {rule: scores.item_scores(ratings, rule, trim=cfg.trim) for rule in cfg.rules}
    rows: list[dict[str, Any]] = []
    for attack in cfg.attacks:
        item, neighbours = targets[attack]
        for fraction in cfg.fractions:
            note(f"{attack} {fraction:.1%}")
            attacked, count = attacks.with_fake_accounts(
                ratings, attack, fraction, item, neighbours
            )
            for rule in cfg.rules:
                s = scores.item_scores(attacked, rule, trim=cfg.trim)
                rows.append(
                    {
                        "table": "poisoning",
                        "attack": attack,
                        "fraction": fraction,
                        "fake_accounts": count,
                        "rule": rule,
                        "item": item,
                        "clean_rank": scores.rank_of(clean[rule], item, eligible),
                        "rank": scores.rank_of(s, item, eligible),
                        "overlap": scores.top_k_overlap(s, clean[rule], eligible, cfg.top_k),
                    }
                )
    rows += _rmse_rows(cfg, ratings, eligible, targets, note)
    return _finish_poisoning(cfg, ratings, eligible, rows)


def _rmse_rows(
    cfg: VotesConfig, ratings: Ratings, eligible: torch.Tensor, targets: dict, note: Progress
) -> list[dict[str, Any]]:
    train, test = ratings.split(cfg.test_fraction, cfg.seed)
    item, neighbours = targets[cfg.rmse_attack]
    attacked, count = attacks.with_fake_accounts(
        train, cfg.rmse_attack, cfg.rmse_fraction, item, neighbours
    )
    honest = torch.arange(ratings.num_users)
    fallback = float(train.rating.median())
    rows = []
    for rule in cfg.rules:
        for name, data in (("clean", train), ("attacked", attacked)):
            s = scores.item_scores(data, rule, trim=cfg.trim)
            pred = torch.nan_to_num(s, nan=fallback)[test.item]
            rows.append(
                {
                    "table": "rmse",
                    "recommender": "item scores",
                    "rule": rule,
                    "data": name,
                    "fake_accounts": count if name == "attacked" else 0,
                    "rmse": float((pred - test.rating).square().mean().sqrt()),
                    "rank": scores.rank_of(s, item, eligible),
                }
            )
        if not cfg.factorization:
            continue
        for name, data in (("clean", train), ("attacked", attacked)):
            note(f"factorization {rule} {name}")
            model = train_factorization(
                data,
                rule,
                rank=cfg.mf_rank,
                steps=cfg.mf_steps,
                lr=cfg.mf_lr,
                l2=cfg.mf_l2,
                trim=cfg.trim,
                seed=cfg.seed,
            )
            rows.append(
                {
                    "table": "rmse",
                    "recommender": "factorization",
                    "rule": rule,
                    "data": name,
                    "fake_accounts": count if name == "attacked" else 0,
                    "rmse": model.rmse(test),
                    "rank": scores.rank_of(model.item_scores(honest), item, eligible),
                }
            )
    return rows


def _finish_poisoning(
    cfg: VotesConfig, ratings: Ratings, eligible: torch.Tensor, rows: list[dict[str, Any]]
) -> VotesResult:
    from byzance.voting.plots import plot_poisoning

    out = Path(cfg.out_dir)
    tables = []
    poison = [r for r in rows if r["table"] == "poisoning"]
    for attack in cfg.attacks:
        sub = [r for r in poison if r["attack"] == attack]
        if not sub:
            continue
        header = [
            "rule",
            "clean rank",
            *(f"{100 * f:g}% ({_count(sub, f)})" for f in cfg.fractions),
        ]
        body = []
        for rule in cfg.rules:
            cells = {r["fraction"]: r for r in sub if r["rule"] == rule}
            body.append(
                [
                    rule,
                    str(cells[cfg.fractions[0]]["clean_rank"]),
                    *(f"{cells[f]['rank']} / {cells[f]['overlap']:.1f}" for f in cfg.fractions),
                ]
            )
        what = "buried competitor" if attack == "bury" else "pushed target"
        tables.append(
            (
                f"{attack}: rank of the {what} (item {sub[0]['item']}) / top-{cfg.top_k} overlap, by fake accounts (% of users)",
                header,
                body,
            )
        )
    rmse = [r for r in rows if r["table"] == "rmse"]
    header = [
        "recommender",
        "rule",
        "RMSE clean",
        "RMSE attacked",
        "target rank clean",
        "target rank attacked",
    ]
    body = []
    for rec in dict.fromkeys(r["recommender"] for r in rmse):
        for rule in cfg.rules:
            c = next(
                r
                for r in rmse
                if r["recommender"] == rec and r["rule"] == rule and r["data"] == "clean"
            )
            a = next(
                r
                for r in rmse
                if r["recommender"] == rec and r["rule"] == rule and r["data"] == "attacked"
            )
            body.append(
                [rec, rule, f"{c['rmse']:.4f}", f"{a['rmse']:.4f}", str(c["rank"]), str(a["rank"])]
            )
    count = next((r["fake_accounts"] for r in rmse if r["data"] == "attacked"), 0)
    tables.append(
        (
            f"Held-out RMSE ({cfg.test_fraction:.0%} of the ratings), clean and under {cfg.rmse_attack} with {count} fake accounts",
            header,
            body,
        )
    )
    plot = out / "poisoning.png"
    title = f"{cfg.dataset}: {ratings.num_users} users, {int(eligible.sum())} items with >= {cfg.min_raters} ratings"
    plot_poisoning(poison, cfg.attacks, cfg.rules, plot, title)
    return VotesResult("poisoning", rows, tables, out, [plot])


def _count(rows: list[dict[str, Any]], fraction: float) -> int:
    return next(r["fake_accounts"] for r in rows if r["fraction"] == fraction)


def run_reputation(cfg: VotesConfig, progress: Progress | None = None) -> VotesResult:
    """Push attacks by new accounts against equal and account-age weights."""
    from byzance.voting.plots import plot_reputation

    note = progress or (lambda _: None)
    ratings = _load_ratings(cfg)
    eligible = ratings.raters_per_item() >= cfg.min_raters
    item, neighbours = _targets(cfg, ratings, eligible)["push"]
    if cfg.dataset == "movielens":
        ages = movielens_account_age_days()
    else:
        ages = torch.full((ratings.num_users,), cfg.full_weight_days, dtype=torch.float64)
    rules = [r for r in cfg.rules if r != "trimmed_mean"]  # no weighted form
    rows = []
    for fraction in cfg.fractions:
        note(f"push {fraction:.1%}")
        attacked, count = attacks.with_fake_accounts(ratings, "push", fraction, item, neighbours)
        all_ages = torch.cat([ages, torch.full((count,), cfg.fake_age_days, dtype=torch.float64)])
        weights = (all_ages / cfg.full_weight_days).clamp(max=1.0)
        for rule in rules:
            for weighted in (False, True):
                w = weights if weighted else None
                s = scores.item_scores(attacked, rule, weights=w)
                c = scores.item_scores(
                    ratings, rule, weights=w[: ratings.num_users] if weighted else None
                )
                rows.append(
                    {
                        "table": "reputation",
                        "fraction": fraction,
                        "fake_accounts": count,
                        "rule": rule,
                        "weighted": weighted,
                        "item": item,
                        "clean_rank": scores.rank_of(c, item, eligible),
                        "rank": scores.rank_of(s, item, eligible),
                        "overlap": scores.top_k_overlap(s, c, eligible, cfg.top_k),
                    }
                )
    out = Path(cfg.out_dir)
    header = [
        "rule",
        "weights",
        "clean rank",
        *(f"{100 * f:g}% ({_count(rows, f)})" for f in cfg.fractions),
    ]
    body = []
    for rule in rules:
        for weighted in (False, True):
            cells = {
                r["fraction"]: r for r in rows if r["rule"] == rule and r["weighted"] == weighted
            }
            body.append(
                [
                    rule,
                    "account age" if weighted else "equal",
                    str(cells[cfg.fractions[0]]["clean_rank"]),
                    *(f"{cells[f]['rank']} / {cells[f]['overlap']:.1f}" for f in cfg.fractions),
                ]
            )
    low = int((ages < cfg.full_weight_days).sum())
    notes = [
        f"Weights: min(1, account age / {cfg.full_weight_days:g} days); fake accounts are {cfg.fake_age_days:g} day(s) old "
        f"(weight {min(1.0, cfg.fake_age_days / cfg.full_weight_days):.3g}); {low} of {ratings.num_users} real users are younger "
        f"than {cfg.full_weight_days:g} days and weigh less than 1 too."
    ]
    plot = out / "reputation.png"
    plot_reputation(rows, plot, f"{cfg.dataset}: push attack by new accounts (item {item})")
    tables = [
        (
            f"Rank of the pushed target (item {item}) / top-{cfg.top_k} overlap, by new fake accounts (% of users)",
            header,
            body,
        )
    ]
    return VotesResult("reputation", rows, tables, out, [plot], notes)
