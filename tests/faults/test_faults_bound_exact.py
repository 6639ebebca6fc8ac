"""Bounds and worst cases computed by hand on a network with uniform weights.

Network: x (2,) -> Linear(2, 3), all weights 0.5, bias 0 -> ReLU -> Linear(3, 2),
weights 0.5, bias 10 -> ReLU -> Linear(2, 1), weights 0.5, bias 0. On the input
x = (1, 1): h1 = (1, 1, 1), h2 = (11.5, 11.5), y = 11.5; so H_1 = 1, H_2 = 11.5.
The bias 10 keeps layer 2 in ReLU's linear part under every failure below, so
the worst case equals the bound.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from byzance import faults


@pytest.fixture
def net():
    model = nn.Sequential(
        nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1)
    ).double()
    with torch.no_grad():
        for layer in (model[0], model[2], model[4]):
            layer.weight.fill_(0.5)
            layer.bias.zero_()
        model[2].bias.fill_(10.0)
    return faults.parse(model.eval(), (2,))


@pytest.fixture
def x():
    return torch.ones(1, 2, dtype=torch.float64)


def test_hand_computed_outputs_and_output_bounds(net, x):
    assert net.model(x).item() == 11.5
    h0, h1, h2 = faults.output_bounds(net, x)
    assert h0.tolist() == [1.0, 1.0] and h1.tolist() == [1.0] * 3 and h2.tolist() == [11.5] * 2


# (f_1, f_2, kind, C, exact worst case = Fep)
#  byzantine f=(1,0), C=2: Delta_1 = C + H_1 = 3; E_1 = 3, E_2 = (2-0) 0.5 3 = 3, Fep = 0.5 E_2 = 1.5
#    reached by v = -2: layer 2 moves by 0.5 (-3) each, y by 0.5 (2)(-1.5) = -1.5.
#  byzantine f=(1,1), C=2: Delta_2 = 13.5; E_2 = (2-1) 0.5 3 + 13.5 = 15; Fep = 7.5
#    reached by v = -2 in both layers: y moves by 0.5 (-13.5 - 1.5) = -7.5.
#  crash f=(3,0): Delta_1 = 1; E_1 = 3; E_2 = 2 0.5 3 = 3; Fep = 1.5: y = 0.5 2 10 = 10.
#  crash f=(0,2): Delta_2 = 11.5; E_2 = 23; Fep = 11.5: y = 0.
CASES = [
    ((1, 0), "byzantine", 2.0, 1.5),
    ((1, 1), "byzantine", 2.0, 7.5),
    ((3, 0), "crash", 0.0, 1.5),
    ((0, 2), "crash", 0.0, 11.5),
]


@pytest.mark.parametrize(("counts", "kind", "c", "exact"), CASES)
def test_fep_bound_equals_the_hand_computed_worst_case(net, x, counts, kind, c, exact):
    bounds = faults.output_bounds(net, x)
    assert faults.fep_bound(net, bounds, neurons=counts, kind=kind, value_bound=c) == exact
    found = faults.adversarial_failures(net, x, neurons=counts, kind=kind, value_bound=c)
    assert found.worst == pytest.approx(exact, rel=1e-12)


def test_path_bound_by_hand(net, x):
    bounds = faults.output_bounds(net, x)
    # G_1 = 0.5 |W_3| |W_2| = 0.5 (0.5 + 0.5) = 0.5 per layer-1 neuron; G_2 = 0.5
    gains = faults.path_gains(net)
    assert gains[0].tolist() == [[0.5] * 3] and gains[1].tolist() == [[0.5] * 2]
    # no failure downstream: exact, like Fep
    assert faults.path_bound(net, bounds, neurons=(1, 0), kind="byzantine", value_bound=2.0) == 1.5
    # failures in both layers: 3 (0.5) + 13.5 (0.5) = 8.25 >= 7.5 (no masking downstream)
    assert faults.path_bound(net, bounds, neurons=(1, 1), kind="byzantine", value_bound=2.0) == 8.25


def test_byzantine_output_synapse_by_hand(net, x):
    bounds = faults.output_bounds(net, x)
    # one output weight changed by +-0.25: y moves by 0.25 * 11.5
    kw = {"synapses": [0, 0, 1], "synapse_kind": "byzantine", "synapse_bound": 0.25}
    assert faults.fep_bound(net, bounds, **kw) == 0.25 * 11.5
    assert faults.adversarial_failures(net, x, **kw).worst == pytest.approx(0.25 * 11.5)


def test_crashed_first_layer_synapses_by_hand(net, x):
    bounds = faults.output_bounds(net, x)
    # 2 synapses of layer 1 cut (S = w_1 = 0.5, H_0 = 1): E_1 = 2 0.5 1 = 1, E_2 = 2 0.5 1 = 1,
    # Fep = 0.5. Worst: both into one neuron: h1_j = 0, layer 2 moves by -0.5, y by -0.5.
    kw = {"synapses": [2, 0, 0], "synapse_kind": "crash"}
    assert faults.fep_bound(net, bounds, **kw) == 0.5
    assert faults.adversarial_failures(net, x, **kw).worst == pytest.approx(0.5)


def test_closed_form_matches_the_recursion():
    # the paper's closed form, C sum_l f_l K^{L-l} w^{L-l+1} prod_{l'>l} (N_l' - f_l'), with
    # one w for all layers, a linear output and Delta = C + H
    torch.manual_seed(0)
    widths, w = [5, 4, 3], 0.3
    layers = []
    for a, b in zip([2, *widths], [*widths, 1], strict=True):
        layers += [nn.Linear(a, b), nn.Tanh()]
    model = nn.Sequential(*layers[:-1]).double()
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.uniform_(-w, w)
                m.weight[0, 0] = w
    net = faults.parse(model, (2,))
    x = torch.randn(16, 2, dtype=torch.float64)
    bounds = faults.output_bounds(net, x)
    f, c = [2, 1, 2], 0.7
    delta = [c + float(b.max()) for b in bounds[1:]]
    big_l = len(widths)
    closed = sum(
        f[i]
        * delta[i]
        * w ** (big_l - i)
        * torch.tensor([widths[k] - f[k] for k in range(i + 1, big_l)]).prod().item()
        for i in range(big_l)
    )
    assert faults.fep_bound(
        net, bounds, neurons=f, kind="byzantine", value_bound=c
    ) == pytest.approx(closed)
