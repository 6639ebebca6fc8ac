"""Ratings: MovieLens-100K from the installed ``recbole`` package, and a synthetic generator.

Ratings are kept as coordinates (COO): three aligned vectors ``user``, ``item``
and ``rating`` of length N, one entry per (user, item) rating; most pairs are
missing (MovieLens-100K: 100,000 of 943 x 1,682 = 1.6 million).

MovieLens-100K (F. M. Harper, J. A. Konstan, "The MovieLens Datasets: History
and Context", ACM TiiS 2015) ships inside the ``recbole`` wheel as
``recbole/dataset_example/ml-100k/ml-100k.inter``. The file is located with
:func:`importlib.util.find_spec`, without importing recbole (its own
dependencies are not installed: ``pip install --no-deps recbole==1.2.1``).
Its licence forbids redistribution: byzance never copies it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from byzance.data.packaged import package_file
from byzance.errors import DataUnavailableError, InvalidParameterError

MOVIELENS_INSTALL = "pip install --no-deps recbole==1.2.1"
"""How to get MovieLens-100K (``make setup`` runs it): a 2 MB wheel, installed without its dependencies."""


@dataclass(frozen=True)
class Ratings:
    """N ratings of ``num_items`` items by ``num_users`` users, as aligned (N,) tensors.

    ``user`` and ``item`` are int64 indices from 0; ``rating`` is float64.
    ``true_scores`` (num_items,) is the ground-truth quality of each item when
    it is known (synthetic data), else None.
    """

    user: torch.Tensor
    item: torch.Tensor
    rating: torch.Tensor
    num_users: int
    num_items: int
    true_scores: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.rating.shape[0]
        if self.user.shape != (n,) or self.item.shape != (n,):
            raise InvalidParameterError(
                "Ratings: user, item and rating must be aligned vectors of the same length; "
                f"got shapes {tuple(self.user.shape)}, {tuple(self.item.shape)}, {(n,)}."
            )
        if n and (int(self.user.max()) >= self.num_users or int(self.item.max()) >= self.num_items):
            raise InvalidParameterError(
                "Ratings: a user or item index is out of range "
                f"(num_users={self.num_users}, num_items={self.num_items})."
            )

    def __len__(self) -> int:
        return int(self.rating.shape[0])

    def raters_per_item(self) -> torch.Tensor:
        """(num_items,) number of ratings of each item."""
        return torch.bincount(self.item, minlength=self.num_items)

    def add_users(self, user: torch.Tensor, item: torch.Tensor, rating: torch.Tensor) -> Ratings:
        """These ratings plus those of new users, numbered from ``num_users`` on.

        ``user`` holds the new users' indices from 0 (the first new user is 0).
        """
        added = int(user.max()) + 1 if len(user) else 0
        return Ratings(
            user=torch.cat([self.user, user + self.num_users]),
            item=torch.cat([self.item, item]),
            rating=torch.cat([self.rating, rating.to(self.rating.dtype)]),
            num_users=self.num_users + added,
            num_items=self.num_items,
            true_scores=self.true_scores,
        )

    def subset(self, keep: torch.Tensor) -> Ratings:
        """The ratings selected by the boolean mask or index tensor ``keep``."""
        return Ratings(
            self.user[keep],
            self.item[keep],
            self.rating[keep],
            self.num_users,
            self.num_items,
            self.true_scores,
        )

    def split(self, test_fraction: float, seed: int) -> tuple[Ratings, Ratings]:
        """(train, test): a random ``test_fraction`` of the ratings held out."""
        if not 0 < test_fraction < 1:
            raise InvalidParameterError(f"test_fraction must be in (0, 1); got {test_fraction}.")
        gen = torch.Generator().manual_seed(seed)
        test = torch.rand(len(self), generator=gen, dtype=torch.float64) < test_fraction
        return self.subset(~test), self.subset(test)


def movielens_path() -> Path:
    """Path of ``ml-100k.inter`` inside the installed recbole package (never imported)."""
    try:
        return package_file("recbole", "dataset_example", "ml-100k", "ml-100k.inter")
    except DataUnavailableError as err:
        raise DataUnavailableError(
            f"MovieLens-100K is read from the recbole package, which ships it: {err} "
            f"Install the package alone with `{MOVIELENS_INSTALL}` (`make setup` does): its "
            "dependencies would pull an unpinned torch. Or use dataset = 'synthetic'."
        ) from None


@functools.lru_cache(maxsize=1)
def _movielens_table() -> np.ndarray:
    path = movielens_path()
    # Header line "user_id:token item_id:token rating:float timestamp:float", then tab-separated.
    table = np.loadtxt(path, delimiter="\t", skiprows=1, dtype=np.int64, usecols=(0, 1, 2, 3))
    if table.ndim != 2 or table.shape[1] != 4:
        raise DataUnavailableError(f"{path}: expected rows of user, item, rating, timestamp.")
    table.flags.writeable = False
    return table


def movielens_100k() -> Ratings:
    """MovieLens-100K: 100,000 ratings 1..5 of 1,682 movies by 943 users (ids from 0)."""
    table = _movielens_table()
    users, items = table[:, 0] - 1, table[:, 1] - 1  # the file numbers both from 1
    return Ratings(
        user=torch.from_numpy(users.copy()),
        item=torch.from_numpy(items.copy()),
        rating=torch.from_numpy(table[:, 2].astype(np.float64)),
        num_users=int(users.max()) + 1,
        num_items=int(items.max()) + 1,
    )


def movielens_account_age_days() -> torch.Tensor:
    """(943,) days from each user's first rating to the last rating in MovieLens-100K (float64)."""
    table = _movielens_table()
    users = torch.from_numpy(table[:, 0] - 1)
    times = torch.from_numpy(table[:, 3].astype(np.float64))
    first = torch.full((int(users.max()) + 1,), float("inf"), dtype=torch.float64)
    first = first.scatter_reduce(0, users, times, "amin")
    return (times.max() - first) / 86400.0


def synthetic_ratings(
    num_users: int = 300,
    num_items: int = 120,
    *,
    density: float = 0.25,
    noise: float = 0.8,
    user_bias: float = 0.3,
    seed: int = 0,
) -> Ratings:
    """Integer ratings 1..5 around known item qualities; the true ranking is item 0 first.

    Item j's quality is ``true_scores[j]``, evenly spaced from 4.5 (item 0)
    down to 1.5 (the last item). User u rates each item independently with
    probability ``density``, giving round(quality + b_u + e) clipped to 1..5,
    with b_u ~ N(0, user_bias^2) (some users rate high, some low) and
    e ~ N(0, noise^2).
    """
    if num_users < 1 or num_items < 2 or not 0 < density <= 1 or noise < 0 or user_bias < 0:
        raise InvalidParameterError(
            "synthetic_ratings: need num_users >= 1, num_items >= 2, density in (0, 1], "
            f"noise, user_bias >= 0; got {num_users}, {num_items}, {density}, {noise}, {user_bias}."
        )
    gen = torch.Generator().manual_seed(seed)
    quality = torch.linspace(4.5, 1.5, num_items, dtype=torch.float64)
    rated = torch.rand(num_users, num_items, generator=gen, dtype=torch.float64) < density
    bias = user_bias * torch.randn(num_users, 1, generator=gen, dtype=torch.float64)
    raw = (
        quality
        + bias
        + noise * torch.randn(num_users, num_items, generator=gen, dtype=torch.float64)
    )
    user, item = rated.nonzero(as_tuple=True)
    rating = raw[user, item].round().clamp(1, 5)
    return Ratings(user, item, rating, num_users, num_items, true_scores=quality)
