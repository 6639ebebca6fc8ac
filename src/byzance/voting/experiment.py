"""``byzance votes``: recommender poisoning, reputation, and strategic voting, from a TOML config.

One config, one ``kind``:

- ``poisoning``: fake accounts (push a target, bury a competitor,
  hyperactive) at several fractions of the users, against item scores
  aggregated by each rule: the attacked item's rank and the top-k overlap
  with the clean ranking; then RMSE on held-out ratings, with and without
  one attack, of the item-score recommender and of matrix factorization
  trained on robustly aggregated per-user gradients.
- ``reputation``: the same push attack at larger fractions, every rule with
  equal weights and with weights from the account's age (new accounts weigh
  little).
- ``strategy``: the strategic gain alpha of one voter against n for the mean,
  the geometric median and skewed geometric medians.

Outputs in ``out_dir``: ``config.toml``, ``results.csv`` and ``results.json``
(one row per measurement), ``summary.md`` (the tables) and PNG plots.
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import torch

from byzance.errors import ByzanceError
from byzance.voting import attacks, scores, sparse, strategy
from byzance.voting.data import (
    Ratings,
    movielens_100k,
    movielens_account_age_days,
    synthetic_ratings,
)
from byzance.voting.factorization import train_factorization

KINDS = ("poisoning", "reputation", "strategy")
DATASETS = ("movielens", "synthetic")


class VotesConfigError(ByzanceError):
    """A key or value of a ``byzance votes`` config is invalid."""


@dataclass
class VotesConfig:
    """Every key of a ``byzance votes`` config, with its default."""

    kind: str = "poisoning"
    seed: int = 0
    out_dir: str = "runs/votes"
    threads: int = 1  # torch threads: the work is many small tensor operations
    # Data (poisoning, reputation).
    dataset: str = "movielens"
    dataset_params: dict[str, Any] = field(default_factory=dict)  # synthetic_ratings' keywords
    min_raters: int = 50  # items ranked: rated at least this often
    # Recommenders and attacks.
    rules: list[str] = field(default_factory=lambda: list(sparse.RULES))
    trim: float = 0.1  # trimmed mean: fraction cut at each end of every item
    target_rank: int = 100  # the pushed target: this rank in the clean ranking by mean
    competitor_rank: int = 3  # the buried competitor
    neighbours: int = 10  # items rated opposite to the attacked one
    attacks: list[str] = field(default_factory=lambda: list(attacks.KINDS))
    fractions: list[float] = field(default_factory=lambda: [0.005, 0.01, 0.02, 0.05])
    top_k: int = 10
    # Held-out RMSE, with and without one attack.
    test_fraction: float = 0.2
    rmse_attack: str = "push"
    rmse_fraction: float = 0.05
    factorization: bool = True
    mf_rank: int = 8
    mf_steps: int = 100
    mf_lr: float = 0.5
    mf_l2: float = 0.05
    # Reputation: weight min(1, account age / full_weight_days); fake accounts are fake_age_days old.
    full_weight_days: float = 30.0
    fake_age_days: float = 1.0
    # Strategy.
    ns: list[int] = field(default_factory=lambda: [5, 10, 20, 50, 100, 200, 500])
    voters: int = 16  # strategic voters measured per trial (at most n)
    trials: int = 2
    scales: list[float] = field(
        default_factory=lambda: [1.0, 1.0]
    )  # preferences ~ N(0, diag(scales^2))
    care: list[float] = field(
        default_factory=lambda: [1.0, 1.0]
    )  # voters' loss |diag(care) (z - x)|
    skews: dict[str, list[float]] = field(default_factory=lambda: {"geometric median": [1.0, 1.0]})
    search_skew: bool = False  # also the diagonal skew of least predicted alpha
    prediction_sample: int = 20000

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_TYPES = get_type_hints(VotesConfig)
KEYS = tuple(f.name for f in fields(VotesConfig))


def _fail(msg: str) -> None:
    raise VotesConfigError(msg)


def _check_value(key: str, value: Any) -> Any:
    kind = _TYPES[key]
    origin = getattr(kind, "__origin__", kind)
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        list: lambda v: isinstance(v, list),
        dict: lambda v: isinstance(v, dict),
    }[origin](value)
    if not ok:
        _fail(
            f"config key {key!r}: {value!r} is not a valid {getattr(origin, '__name__', origin)}."
        )
    return float(value) if origin is float else value


def _one_of(key: str, value: str, choices: tuple[str, ...] | list[str]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(value, list(choices), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        _fail(f"config key {key!r}: unknown value {value!r}.{hint} Accepted: {', '.join(choices)}.")


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> VotesConfig:
    """Read a TOML config (or the defaults), apply ``overrides``, validate every value."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            _fail(f"config file {str(path)!r} does not exist.")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            _fail(f"config file {str(path)!r} is not valid TOML: {err}")
    values: dict[str, Any] = {}
    for key, value in {**raw, **(overrides or {})}.items():
        if key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            _fail(f"unknown config key {key!r}.{hint} Keys: {', '.join(KEYS)}.")
        values[key] = _check_value(key, value)
    cfg = VotesConfig(**values)
    _validate(cfg)
    return cfg


def _validate(cfg: VotesConfig) -> None:
    _one_of("kind", cfg.kind, KINDS)
    _one_of("dataset", cfg.dataset, DATASETS)
    for rule in cfg.rules:
        _one_of("rules", rule, sparse.RULES)
    for attack in cfg.attacks:
        _one_of("attacks", attack, attacks.KINDS)
    _one_of("rmse_attack", cfg.rmse_attack, attacks.KINDS)
    if not all(0 < f < 1 for f in [*cfg.fractions, cfg.rmse_fraction]):
        _fail(
            f"config keys 'fractions' and 'rmse_fraction' must be in (0, 1); got {cfg.fractions}, {cfg.rmse_fraction}."
        )
    positive = (
        "min_raters",
        "target_rank",
        "competitor_rank",
        "top_k",
        "mf_rank",
        "mf_steps",
        "voters",
        "trials",
        "prediction_sample",
        "threads",
    )
    for key in positive:
        if getattr(cfg, key) < 1:
            _fail(f"config key {key!r} must be >= 1; got {getattr(cfg, key)}.")
    if cfg.neighbours < 0 or not 0 <= cfg.trim < 0.5 or not 0 < cfg.test_fraction < 1:
        _fail("config keys: need neighbours >= 0, trim in [0, 0.5), test_fraction in (0, 1).")
    if cfg.full_weight_days <= 0 or cfg.fake_age_days < 0:
        _fail("config keys 'full_weight_days' must be > 0 and 'fake_age_days' >= 0.")
    if cfg.kind == "poisoning" and cfg.dataset_params and cfg.dataset != "synthetic":
        _fail("config key 'dataset_params' applies to dataset = 'synthetic' only.")
    if cfg.dataset == "synthetic":
        try:
            synthetic_ratings(**{**cfg.dataset_params, "num_users": 2, "num_items": 2})
        except TypeError as err:
            _fail(f"config key 'dataset_params': {err}")
    d = len(cfg.scales)
    if d < 1 or len(cfg.care) != d or any(v <= 0 for v in [*cfg.scales, *cfg.care]):
        _fail(
            f"config keys 'scales' and 'care' must be positive lists of the same length d; got {cfg.scales}, {cfg.care}."
        )
    for name, diag in cfg.skews.items():
        if (
            not isinstance(diag, list)
            or len(diag) != d
            or any(not isinstance(v, int | float) or v <= 0 for v in diag)
        ):
            _fail(
                f"config key 'skews': {name!r} must be a list of {d} positive numbers (the diagonal of S); got {diag!r}."
            )
    if any(n < 3 for n in cfg.ns):
        _fail(f"config key 'ns': every n must be >= 3; got {cfg.ns}.")


# -- results ------------------------------------------------------------------------------------------
@dataclass
class VotesResult:
    """Rows of one run (one dict per measurement), its tables in markdown, and where they were written."""

    kind: str
    rows: list[dict[str, Any]]
    tables: list[tuple[str, list[str], list[list[str]]]]  # (title, header, rows)
    out_dir: Path
    plots: list[Path]
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        parts = []
        for title, header, body in self.tables:
            lines = [
                f"### {title}",
                "",
                "| " + " | ".join(header) + " |",
                "|" + " --- |" * len(header),
            ]
            lines += ["| " + " | ".join(row) + " |" for row in body]
            parts.append("\n".join(lines))
        parts += self.notes
        return "\n\n".join(parts) + "\n"


Progress = Callable[[str], None]


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
        _fail(
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


RUNNERS = {"poisoning": run_poisoning, "reputation": run_reputation, "strategy": run_strategy}


def run(cfg: VotesConfig, progress: Progress | None = None) -> VotesResult:
    """Run the config's kind, write config.toml, results.csv/json, summary.md and plots to out_dir."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        result = RUNNERS[cfg.kind](cfg, progress)
    finally:
        torch.set_num_threads(threads)
    import tomli_w

    (out / "config.toml").write_text(tomli_w.dumps(cfg.to_dict()))
    (out / "results.json").write_text(json.dumps(result.rows, indent=1))
    keys = list(dict.fromkeys(k for row in result.rows for k in row))
    with (out / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(result.rows)
    (out / "summary.md").write_text(result.markdown())
    return result
