# ruff: noqa: RUF009 (key() declares a dataclass field; list and table defaults are copied)
"""The ``byzance votes`` config: every key declared once, read from TOML, checked before any work.

:class:`VotesConfig` declares the keys (``byzance votes --help`` lists them);
:func:`load_config` reads a TOML file (flat or sectioned) with overrides and
checks what depends on several keys; :func:`dumps` writes it back. The runs:
:mod:`byzance.voting.experiment`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from byzance.runs.schema import ConfigError, Schema, check_params, key
from byzance.voting import attacks, sparse
from byzance.voting.data import synthetic_ratings

__all__ = [
    "ATTACKS",
    "DATASETS",
    "KEYS",
    "KINDS",
    "SCHEMA",
    "VotesConfig",
    "VotesConfigError",
    "dumps",
    "load_config",
]

KINDS = ("poisoning", "reputation", "strategy")
DATASETS = ("movielens", "synthetic")
ATTACKS = attacks.KINDS  # (the config's key `attacks` hides the module inside the class)


class VotesConfigError(ConfigError):
    """A key or value of a ``byzance votes`` config is invalid."""


@dataclass
class VotesConfig:
    """Every key of a ``byzance votes`` config: default, section, range, description."""

    # -- run
    kind: str = key("poisoning", "run", "what to measure", choices=KINDS)
    seed: int = key(0, "run", "seed of the data, the splits and the trials", ge=0)
    out_dir: str = key("runs/votes", "run", "the output directory")
    threads: int = key(1, "run", "torch threads (the work is many small tensor operations)", ge=1)
    # -- data (poisoning, reputation)
    dataset: str = key("movielens", "data", "the ratings", choices=DATASETS)
    dataset_params: dict[str, Any] = key(
        {}, "data", "dataset = synthetic: synthetic_ratings' keywords (num_users, density, ...)"
    )
    min_raters: int = key(50, "data", "items ranked: rated at least this often", ge=1)
    # -- poisoning: recommenders and attacks
    rules: list[str] = key(
        list(sparse.RULES),
        "poisoning",
        "rules aggregating each item's ratings",
        choices=sparse.RULES,
    )
    trim: float = key(0.1, "poisoning", "trimmed mean: fraction cut at each end", ge=0, lt=0.5)
    target_rank: int = key(100, "poisoning", "the pushed target: this rank by mean rating", ge=1)
    competitor_rank: int = key(3, "poisoning", "the buried competitor: this rank", ge=1)
    neighbours: int = key(10, "poisoning", "items rated opposite to the attacked one", ge=0)
    attacks: list[str] = key(list(ATTACKS), "poisoning", "fake-account attacks", choices=ATTACKS)
    fractions: list[float] = key(
        [0.005, 0.01, 0.02, 0.05],
        "poisoning",
        "fake accounts, as fractions of the users",
        gt=0,
        lt=1,
    )
    top_k: int = key(10, "poisoning", "top-k overlap with the clean ranking", ge=1)
    # -- rmse: held-out RMSE, with and without one attack
    test_fraction: float = key(0.2, "rmse", "fraction of the ratings held out", gt=0, lt=1)
    rmse_attack: str = key("push", "rmse", "the attack measured", choices=ATTACKS)
    rmse_fraction: float = key(0.05, "rmse", "its fake accounts, fraction of the users", gt=0, lt=1)
    factorization: bool = key(True, "rmse", "also matrix factorization on robust gradients")
    mf_rank: int = key(8, "rmse", "factorization rank", ge=1)
    mf_steps: int = key(100, "rmse", "factorization steps", ge=1)
    mf_lr: float = key(0.5, "rmse", "factorization learning rate", gt=0)
    mf_l2: float = key(0.05, "rmse", "factorization L2 coefficient", ge=0)
    # -- reputation: weight min(1, account age / full_weight_days)
    full_weight_days: float = key(30.0, "reputation", "account age of full weight, in days", gt=0)
    fake_age_days: float = key(1.0, "reputation", "age of the fake accounts, in days", ge=0)
    # -- strategy
    ns: list[int] = key([5, 10, 20, 50, 100, 200, 500], "strategy", "numbers of voters", ge=3)
    voters: int = key(16, "strategy", "strategic voters measured per trial (at most n)", ge=1)
    trials: int = key(2, "strategy", "trials per n", ge=1)
    scales: list[float] = key([1.0, 1.0], "strategy", "preferences ~ N(0, diag(scales^2))", gt=0)
    care: list[float] = key([1.0, 1.0], "strategy", "voters' loss |diag(care) (z - x)|", gt=0)
    skews: dict[str, list[float]] = key(
        {"geometric median": [1.0, 1.0]},
        "strategy",
        "skewed geometric medians: name -> diag(S)",
        gt=0,
    )
    search_skew: bool = key(False, "strategy", "also the diagonal skew of least predicted alpha")
    prediction_sample: int = key(20000, "strategy", "samples of the predicted alpha", ge=1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SCHEMA = Schema(VotesConfig, error=VotesConfigError, what="byzance votes config")
KEYS = SCHEMA.keys


def _fail(msg: str) -> None:
    raise VotesConfigError(msg)


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> VotesConfig:
    """Read a TOML config (flat or sectioned, or the defaults), apply ``overrides``, validate."""
    cfg = VotesConfig(**SCHEMA.read(path, overrides))
    _validate(cfg)
    return cfg


def dumps(cfg: VotesConfig) -> str:
    """``cfg`` as sectioned TOML, as :func:`load_config` reads it."""
    return SCHEMA.dumps(cfg)


def _validate(cfg: VotesConfig) -> None:
    """What depends on several keys (each key was checked on its own when read)."""
    SCHEMA.check(cfg)
    if cfg.kind == "poisoning" and cfg.dataset_params and cfg.dataset != "synthetic":
        _fail("config key 'dataset_params' applies to dataset = 'synthetic' only.")
    if cfg.dataset == "synthetic":
        check_params(
            "dataset_params",
            "synthetic_ratings",
            synthetic_ratings,
            cfg.dataset_params,
            reserved=("seed",),
            error=VotesConfigError,
        )
        try:
            synthetic_ratings(**{**cfg.dataset_params, "num_users": 2, "num_items": 2})
        except Exception as err:  # a value synthetic_ratings refuses
            _fail(f"config key 'dataset_params': {err}")
    d = len(cfg.scales)
    if d < 1 or len(cfg.care) != d:
        _fail(
            f"config keys 'scales' and 'care' must be lists of the same length d >= 1; got "
            f"{cfg.scales}, {cfg.care}."
        )
    for name, diag in cfg.skews.items():
        if len(diag) != d:
            _fail(
                f"config key 'skews': {name!r} must be a list of {d} positive numbers (the "
                f"diagonal of S, like scales); got {diag!r}."
            )
