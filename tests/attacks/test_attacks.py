"""Attacks: shapes, determinism, validation, and effectiveness measured on the aggregate.

Effectiveness numbers (seeded, n = 20 = 16 honest + 4 Byzantine, d = 1000
unless said; honest vectors N(0, I), so their spread |x_i - mean| is ~31.6):

- large_norm (norm 1e9): average moved by 2e8; median 11.4, trimmed_mean
  13.0, krum 30.0 (all below the honest spread).
- alie: selected by krum in 10 of 10 seeds.
- hidden_vulnerability at d = 10,000: krum's output moves 116 honest standard
  deviations on the targeted coordinate (push E = 126 ~ 1.26 sqrt(d)); the
  geometric median's 23; bulyan (n = 23, f = 5) 1.06.
- adaptive vs its base at the default strength (distance to the honest mean):
  krum 40.0 vs 12.2 (alie), trimmed_mean 12.9 vs 4.6 (alie), median 11.3 vs 9.2.
"""

from __future__ import annotations

import pytest
import torch

import byzance.aggregators as agg
import byzance.attacks as attacks
from byzance import errors

GRADIENT = attacks.names("gradient")
NEEDS_RULE = {"hidden_vulnerability", "adaptive"}


def honest_vectors(h: int = 16, d: int = 1000, seed: int = 0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(h, d, generator=gen, dtype=torch.float64).to(dtype)


def call(name, x, f, seed=0, **params):
    rule = "krum" if name in NEEDS_RULE else None
    return attacks.get(name)(
        x, f, rule=rule, generator=torch.Generator().manual_seed(seed), **params
    )


@pytest.mark.parametrize("name", GRADIENT)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_and_determinism(name, dtype):
    x = honest_vectors(8, 30, dtype=dtype)
    out = call(name, x, 3)
    assert out.shape == (3, 30) and out.dtype == dtype and out.device == x.device
    again = call(name, x, 3)
    assert torch.equal(out.nan_to_num(), again.nan_to_num())
    assert call(name, x, 0).shape == (0, 30)


@pytest.mark.parametrize(
    ("name", "params"), [("gaussian", {}), ("large_norm", {"direction": "random"})]
)
def test_randomized_attacks_follow_their_generator(name, params):
    x = honest_vectors(8, 30)
    assert not torch.equal(call(name, x, 2, seed=0, **params), call(name, x, 2, seed=1, **params))


@pytest.mark.parametrize("name", GRADIENT)
def test_attacks_validate_their_input(name):
    attack = attacks.get(name)
    with pytest.raises(errors.ShapeError, match="2-D"):
        attack(torch.zeros(5), 1, rule="krum")
    with pytest.raises(errors.InvalidFError):
        attack(honest_vectors(4, 3), -1, rule="krum")
    bad = honest_vectors(4, 3)
    bad[1, 1] = float("nan")
    with pytest.raises(errors.NonFiniteInputError, match="honest vectors must be finite"):
        attack(bad, 1, rule="krum")
    with pytest.raises(errors.InvalidParameterError, match="no parameter 'bogus'"):
        attack(honest_vectors(4, 3), 1, rule="krum", bogus=1)


@pytest.mark.parametrize("name", sorted(NEEDS_RULE))
def test_adaptive_attacks_need_the_rule(name):
    with pytest.raises(errors.InvalidParameterError, match="rule under attack"):
        attacks.get(name)(honest_vectors(8, 5), 2)


def test_definitions():
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    mean = torch.tensor([2.0, 4.0])
    assert torch.equal(attacks.sign_flip(x, 2), (-mean).expand(2, 2))
    assert torch.equal(attacks.sign_flip(x, 1, scale=3.0), -3 * mean[None])
    assert torch.allclose(attacks.ipm(x, 1), -0.1 * mean[None])
    assert torch.equal(attacks.zero(x, 2), torch.zeros(2, 2))
    assert torch.equal(attacks.constant(x, 1, value=7.0), torch.full((1, 2), 7.0))
    assert torch.isnan(attacks.nan(x, 2)).all()
    assert torch.equal(attacks.inf(x, 1, sign=-1), torch.full((1, 2), -float("inf")))
    big = attacks.large_norm(x, 2, scale=1e9, direction=torch.tensor([3.0, 4.0]))
    assert torch.allclose(big, torch.tensor([[6e8, 8e8], [6e8, 8e8]]))
    # ALIE: mean - z * sample std; sample stds of {1, 3} and {2, 6} are sqrt(2) and sqrt(8).
    assert attacks.alie_z(20, 4) == pytest.approx(0.3853, abs=1e-4)  # Phi^-1(13 / 20)
    expected = torch.tensor([[2 - 2**0.5, 4 - 8**0.5]])
    assert torch.allclose(attacks.alie(x, 1, z=1.0), expected)
    hv = attacks.hidden_vulnerability(x, 2, E=5.0, coordinates=[1])
    assert torch.equal(hv, torch.tensor([[2.0, 9.0], [2.0, 9.0]]))


def test_gaussian_has_the_requested_moments():
    out = attacks.gaussian(
        honest_vectors(2, 5), 4, mu=3.0, sigma=2.0, generator=torch.Generator().manual_seed(0)
    )
    big = attacks.gaussian(honest_vectors(2, 20_000), 5, mu=3.0, sigma=2.0)
    assert out.shape == (4, 5)
    assert big.mean().item() == pytest.approx(3.0, abs=0.02)
    assert big.std().item() == pytest.approx(2.0, abs=0.02)


def test_mimic_copies_the_most_skewed_honest_worker():
    x = honest_vectors(10, 50, seed=3)
    x[6] += 8.0 * torch.nn.functional.normalize(torch.ones(50), dim=0)  # one outlying worker
    out = attacks.mimic(x, 3)
    assert torch.equal(out, x[6].expand(3, -1))


def test_label_flip():
    y = torch.tensor([0, 1, 2, 9])
    assert torch.equal(attacks.label_flip(y, num_classes=10), torch.tensor([9, 8, 7, 0]))
    perm = [1, 2, 0]
    assert torch.equal(
        attacks.label_flip(torch.tensor([0, 1, 2]), num_classes=3, permutation=perm),
        torch.tensor([1, 2, 0]),
    )
    with pytest.raises(errors.InvalidParameterError, match="permutation of range"):
        attacks.label_flip(torch.tensor([0, 1]), num_classes=3, permutation=[0, 0, 1])
    with pytest.raises(errors.ShapeError, match="integer class indices"):
        attacks.label_flip(torch.tensor([0.5]), num_classes=3)
    with pytest.raises(errors.ShapeError, match=r"lie in \[0, 2\]"):
        attacks.label_flip(torch.tensor([3]), num_classes=3)


def test_registry():
    assert set(attacks.names("data")) == {"label_flip"}
    for name in (
        "large_norm",
        "sign_flip",
        "gaussian",
        "nan",
        "inf",
        "zero",
        "constant",
        "alie",
        "ipm",
        "mimic",
        "hidden_vulnerability",
        "adaptive",
    ):
        assert name in GRADIENT
    for attack in attacks.attacks():
        assert attack.paper and attack.summary
    with pytest.raises(errors.UnknownNameError, match="Did you mean 'alie'"):
        attacks.get("alee")


# -- effectiveness, measured on the aggregate ----------------------------------------------------
def deviation(rule: str, x: torch.Tensor, byz: torch.Tensor, f: int) -> float:
    return float((agg.get(rule)(torch.cat([x, byz]), f) - x.mean(0)).norm())


def test_large_norm_breaks_the_average_but_not_the_robust_rules():
    x = honest_vectors()
    spread = float((x - x.mean(0)).norm(dim=1).max())
    byz = attacks.large_norm(x, 4, generator=torch.Generator().manual_seed(1))
    assert deviation("average", x, byz, 4) > 1e6
    for rule in ("median", "trimmed_mean", "krum"):
        assert deviation(rule, x, byz, 4) < spread, rule


def test_alie_is_selected_by_krum_in_most_seeds():
    selected = 0
    for seed in range(10):
        x = honest_vectors(seed=seed)
        byz = attacks.alie(x, 4)
        selected += torch.equal(agg.krum(torch.cat([x, byz]), 4), byz[0])
    assert selected >= 8


def test_hidden_vulnerability_moves_krum_far_on_one_coordinate_but_not_bulyan():
    for rule, h, f, low, high in (("krum", 16, 4, 20.0, None), ("bulyan", 18, 5, None, 3.0)):
        x = honest_vectors(h, 10_000)
        byz = attacks.hidden_vulnerability(x, f, rule=rule)
        out = agg.get(rule)(torch.cat([x, byz]), f)
        stds = float(((out - x.mean(0))[0] / x[:, 0].std()).abs())
        if low is not None:
            assert stds > low, (rule, stds)
        if high is not None:
            assert stds < high, (rule, stds)


@pytest.mark.parametrize("rule", ["krum", "trimmed_mean", "median", "geometric_median"])
@pytest.mark.parametrize("base", ["alie", "sign_flip", "ipm"])
def test_adaptive_is_never_weaker_than_its_base(rule, base):
    x = honest_vectors(16, 200)
    byz_base = attacks.get(base)(x, 4)
    byz_adaptive = attacks.adaptive(
        x, 4, rule=rule, base=base, generator=torch.Generator().manual_seed(0)
    )
    assert deviation(rule, x, byz_adaptive, 4) >= deviation(rule, x, byz_base, 4) - 1e-5


def test_adaptive_rejects_bases_without_strength():
    with pytest.raises(errors.InvalidParameterError, match="strength"):
        attacks.adaptive(honest_vectors(8, 5), 2, rule="krum", base="mimic")


def test_non_finite_attacks_are_dropped_by_the_rules():
    x = honest_vectors(16, 20)
    for name in ("nan", "inf"):
        byz = attacks.get(name)(x, 4)
        out = agg.median(torch.cat([x, byz]), 4)
        assert torch.allclose(out, agg.median(x, 0))
