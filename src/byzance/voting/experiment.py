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

The parts: the config in :mod:`~byzance.voting.votes_config`, the poisoning and
reputation runs in :mod:`~byzance.voting.votes_poisoning`, the strategy run in
:mod:`~byzance.voting.votes_strategy`, the result in
:mod:`~byzance.voting.votes_result`; their names are importable from here too.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from byzance.voting.votes_config import (
    ATTACKS,
    DATASETS,
    KEYS,
    KINDS,
    SCHEMA,
    VotesConfig,
    VotesConfigError,
    dumps,
    load_config,
)
from byzance.voting.votes_poisoning import run_poisoning, run_reputation
from byzance.voting.votes_result import Progress, VotesResult
from byzance.voting.votes_strategy import best_diagonal_skew, run_strategy

__all__ = [
    "ATTACKS",
    "DATASETS",
    "KEYS",
    "KINDS",
    "RUNNERS",
    "SCHEMA",
    "Progress",
    "VotesConfig",
    "VotesConfigError",
    "VotesResult",
    "best_diagonal_skew",
    "dumps",
    "load_config",
    "run",
    "run_poisoning",
    "run_reputation",
    "run_strategy",
]


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
    (out / "config.toml").write_text(dumps(cfg))
    (out / "results.json").write_text(json.dumps(result.rows, indent=1))
    keys = list(dict.fromkeys(k for row in result.rows for k in row))
    with (out / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(result.rows)
    (out / "summary.md").write_text(result.markdown())
    return result
