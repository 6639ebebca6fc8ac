"""Per-item aggregation of sparse votes agrees with the registry's rules applied item by item."""

from __future__ import annotations

import torch

import byzance.aggregators as agg
from byzance.voting import sparse
from byzance.voting.data import synthetic_ratings


def _setup(c: int = 3):
    r = synthetic_ratings(40, 9, density=0.5, seed=4)
    gen = torch.Generator().manual_seed(5)
    values = r.rating[:, None] + 0.1 * torch.randn(len(r), c, generator=gen, dtype=torch.float64)
    weights = torch.rand(r.num_users, generator=gen, dtype=torch.float64) + 0.1
    return r, values, weights


def test_coordinate_wise_rules_match_the_registry_item_by_item():
    r, values, weights = _setup()
    rules = {
        "average": lambda x, w: agg.average(x, 0),
        "median": lambda x, w: agg.median(x, 0),
        "trimmed_mean": lambda x, w: agg.trimmed_mean(x, int(0.2 * len(x))),
    }
    for name, reference in rules.items():
        got = sparse.aggregate(name, values, r.item, r.user, r.num_items, r.num_users, trim=0.2)
        for j in range(r.num_items):
            rows = r.item == j
            torch.testing.assert_close(got[j], reference(values[rows], None), msg=name)
    weighted = {"average": agg.weighted_average, "median": agg.weighted_median}
    for name, rule in weighted.items():
        got = sparse.aggregate(
            name, values, r.item, r.user, r.num_items, r.num_users, weights=weights
        )
        for j in range(r.num_items):
            rows = r.item == j
            torch.testing.assert_close(
                got[j], rule(values[rows], 0, weights=weights[r.user[rows]]), msg=name
            )


def test_masked_geometric_median_of_complete_votes_is_the_geometric_median():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(15, 4, generator=gen, dtype=torch.float64)
    w = torch.rand(15, generator=gen, dtype=torch.float64) + 0.1
    user, item = torch.meshgrid(torch.arange(15), torch.arange(4), indexing="ij")
    for weights in (None, w):
        got = sparse.masked_geometric_median(
            x.flatten()[:, None],
            item.flatten(),
            user.flatten(),
            4,
            15,
            weights,
            tol=1e-14,
            max_iter=5000,
        )
        expected = agg.geometric_median(x, 0, weights=weights, tol=1e-15, max_iter=5000)
        torch.testing.assert_close(got[:, 0], expected, atol=1e-6, rtol=0)


def test_items_without_votes_are_nan_and_missing_votes_do_not_count():
    # Item 1: users 0 and 1 rate 4 and 5; user 2 rated only item 0. Item 2: nobody.
    user = torch.tensor([0, 1, 2, 0])
    item = torch.tensor([1, 1, 0, 0])
    values = torch.tensor([4.0, 5.0, 1.0, 3.0], dtype=torch.float64)
    for rule in sparse.RULES:
        out = sparse.aggregate(rule, values, item, user, 3, 3)[:, 0]
        assert torch.isnan(out[2]), rule
        if rule != "geometric_median":
            assert out[1] == 4.5 and out[0] == 2.0, rule


def test_weighted_median_with_more_items_than_votes():
    user = torch.tensor([0, 1, 2, 0])
    item = torch.tensor([1, 1, 0, 0])
    values = torch.tensor([4.0, 5.0, 1.0, 3.0], dtype=torch.float64)
    weights = torch.tensor([1.0, 3.0, 1.0], dtype=torch.float64)
    out = sparse.aggregate("median", values, item, user, 6, 3, weights=weights)[:, 0]
    assert out[:2].tolist() == [2.0, 5.0]  # item 0: 1 and 3, equal weights; item 1: 5 weighs 3
    assert bool(torch.isnan(out[2:]).all())


def _trimmed_mean_by_cumulative_sums(
    values: torch.Tensor, item: torch.Tensor, num_items: int, trim: float
) -> torch.Tensor:
    """The trimmed mean as a difference of cumulative sums over entries sorted by (item, value)."""
    by_value = torch.sort(values).indices
    order = by_value[torch.sort(item[by_value], stable=True).indices]
    cum = torch.cat([values.new_zeros(1), torch.cumsum(values[order], 0)])
    counts = torch.bincount(item, minlength=num_items)
    start = torch.cumsum(counts, 0) - counts
    cut = torch.floor(trim * counts.to(torch.float64)).to(torch.int64)
    return (cum[start + counts - cut] - cum[start + cut]) / (counts - 2 * cut).to(values.dtype)


def test_trimmed_mean_keeps_small_ratings_next_to_a_huge_one():
    # Item 0: a fake account's 1e16 among four 1s; item 1: small honest ratings. With trim
    # 0.2 both drop one value at each end: item 0 keeps three 1s, item 1 keeps 0.2, 0.3, 0.4.
    values = torch.tensor([1.0, 1.0, 1e16, 1.0, 1.0, 0.3, 0.1, 0.5, 0.2, 0.4], dtype=torch.float64)
    item = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    user = torch.arange(10) % 5
    expected = torch.tensor([1.0, 0.3], dtype=torch.float64)
    # A running sum carries the 1e16 into item 1, whose small values it then swallows.
    lossy = _trimmed_mean_by_cumulative_sums(values, item, 2, 0.2)
    assert (lossy - expected).abs().max() > 0.1
    got = sparse.aggregate("trimmed_mean", values, item, user, 2, 5, trim=0.2)[:, 0]
    torch.testing.assert_close(got, expected, rtol=1e-15, atol=0)
    for j in range(2):
        assert got[j] == agg.trimmed_mean(values[item == j][:, None], 1)[0]
