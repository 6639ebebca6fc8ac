"""Item-score recommenders and matrix factorization under fake accounts (synthetic data, known ranking)."""

from __future__ import annotations

import pytest
import torch

from byzance.errors import InvalidParameterError
from byzance.voting import attacks, scores
from byzance.voting.data import synthetic_ratings
from byzance.voting.factorization import train_factorization


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Many small tensor operations: one thread is faster than two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ratings():
    # 300 users, 100 items, about 120 ratings per item; item 0 is the best.
    return synthetic_ratings(300, 100, density=0.4, seed=0)


def test_clean_scores_recover_the_true_ranking(ratings):
    eligible = torch.ones(ratings.num_items, dtype=torch.bool)
    truth = scores.ranking(ratings.true_scores, eligible)
    mean = scores.ranking(scores.item_scores(ratings, "average"), eligible)
    assert (
        scores.top_k_overlap(scores.item_scores(ratings, "average"), ratings.true_scores, eligible)
        >= 0.8
    )
    # Ranks are off by a few places at most (true quality steps by 0.03, noise is 0.8 per rating).
    position = torch.empty_like(mean)
    position[mean] = torch.arange(len(mean))
    assert int((position[truth] - torch.arange(len(truth))).abs().max()) <= 10


def test_median_keeps_the_target_rank_under_5_percent_fake_accounts_while_the_mean_does_not(
    ratings,
):
    eligible = torch.ones(ratings.num_items, dtype=torch.bool)
    target = 50
    neighbours = torch.arange(40, 50)  # the ten items just above it
    attacked, count = attacks.with_fake_accounts(ratings, "push", 0.05, target, neighbours)
    assert count == 15
    ranks = {}
    for rule in ("average", "median"):
        clean = scores.rank_of(scores.item_scores(ratings, rule), target, eligible)
        after = scores.rank_of(scores.item_scores(attacked, rule), target, eligible)
        ranks[rule] = (clean, after)
    assert ranks["median"][1] == ranks["median"][0]
    assert ranks["average"][1] <= ranks["average"][0] - 8, ranks


def test_fake_accounts_by_kind():
    user, item, rating = attacks.fake_ratings("push", 2, 6, 3, torch.tensor([1, 2]))
    assert user.tolist() == [0, 0, 0, 1, 1, 1]
    assert item.tolist() == [3, 1, 2, 3, 1, 2]
    assert rating.tolist() == [5.0, 1.0, 1.0] * 2
    _, item, rating = attacks.fake_ratings("bury", 1, 6, 0, torch.tensor([1, 2]))
    assert rating.tolist() == [1.0, 5.0, 5.0]
    _, item, rating = attacks.fake_ratings("hyperactive", 1, 4, 2, torch.tensor([]))
    assert item.tolist() == [0, 1, 2, 3] and rating.tolist() == [1.0, 1.0, 5.0, 1.0]
    with pytest.raises(InvalidParameterError, match="kind must be one of"):
        attacks.fake_ratings("shill", 1, 4, 0, torch.tensor([]))


def test_ranking_helpers_by_hand():
    s = torch.tensor([3.0, 5.0, 4.0, 5.0, 1.0])
    eligible = torch.tensor([True, True, True, True, False])
    assert scores.ranking(s, eligible).tolist() == [1, 3, 2, 0]
    assert scores.rank_of(s, 3, eligible) == 1  # tied with item 1: shares rank 1
    assert scores.rank_of(s, 0, eligible) == 4
    ref = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    assert scores.top_k_overlap(s, ref, eligible, k=2) == 0.5  # {1, 3} vs {0, 1}
    assert scores.top_k_overlap(s, ref, eligible, k=4) == 1.0


@pytest.mark.parametrize("rule", ["average", "median", "geometric_median"])
def test_factorization_beats_the_global_baseline(ratings, rule):
    train, test = ratings.split(0.2, seed=0)
    model = train_factorization(train, rule, rank=2, steps=30, lr=0.5)
    baseline = float((test.rating - train.rating.mean()).square().mean().sqrt())
    assert model.rmse(test) < 0.85 * baseline


def test_factorization_checks_its_parameters(ratings):
    with pytest.raises(InvalidParameterError, match="rule must be one of"):
        train_factorization(ratings, "krum")
    with pytest.raises(InvalidParameterError, match="rank >= 1"):
        train_factorization(ratings, rank=0)
