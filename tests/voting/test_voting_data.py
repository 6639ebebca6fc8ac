"""MovieLens-100K from the installed recbole package, its clear error when absent, synthetic ratings."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from byzance.errors import DataUnavailableError
from byzance.voting import data


def test_movielens_is_read_from_the_installed_package():
    r = data.movielens_100k()
    assert (len(r), r.num_users, r.num_items) == (100_000, 943, 1682)
    assert set(r.rating.unique().tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert int(r.user.min()) == 0 and int(r.item.min()) == 0
    # Every user of MovieLens-100K rated at least 20 movies.
    assert int(torch.bincount(r.user).min()) >= 20
    ages = data.movielens_account_age_days()
    assert ages.shape == (943,) and float(ages.min()) >= 0 and float(ages.max()) > 150


def test_missing_recbole_says_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "recbole" else real(name, *a)
    )
    data._movielens_table.cache_clear()
    try:
        with pytest.raises(DataUnavailableError, match=r"pip install --no-deps recbole==1\.2\.1"):
            data.movielens_100k()
    finally:
        data._movielens_table.cache_clear()


def test_synthetic_ratings_have_a_known_ranking():
    r = data.synthetic_ratings(50, 20, density=0.5, seed=1)
    assert r.true_scores is not None and bool((r.true_scores.diff() < 0).all())  # item 0 best
    assert r.rating.min() >= 1 and r.rating.max() <= 5
    assert torch.equal(r.rating, r.rating.round())
    again = data.synthetic_ratings(50, 20, density=0.5, seed=1)
    assert torch.equal(r.rating, again.rating) and torch.equal(r.user, again.user)
    train, test = r.split(0.25, seed=0)
    assert len(train) + len(test) == len(r) and 0 < len(test) < len(r)
