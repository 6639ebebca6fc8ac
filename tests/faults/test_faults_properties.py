"""Property: the measured error never exceeds the bounds, on random small networks and failures."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from byzance import faults

ACTIVATIONS = [nn.ReLU, nn.Tanh, nn.Sigmoid, lambda: nn.LeakyReLU(0.1), nn.ELU, nn.GELU]


@st.composite
def networks(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    conv = draw(st.booleans())
    act = draw(st.sampled_from(ACTIVATIONS))
    if conv:
        channels, hidden = draw(st.integers(1, 3)), draw(st.integers(1, 4))
        model = nn.Sequential(
            nn.Conv1d(1, channels, 3, padding=1),
            act(),
            nn.Flatten(),
            nn.Linear(channels * 5, hidden),
            act(),
            nn.Linear(hidden, 2),
        )
        input_shape = (1, 5)
    else:
        widths = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
        layers: list[nn.Module] = []
        for a, b in zip([3, *widths[:-1]], widths, strict=True):
            layers += [nn.Linear(a, b), act()]
        model = nn.Sequential(*layers, nn.Linear(widths[-1], 2))
        input_shape = (3,)
    scale = draw(st.sampled_from([0.1, 1.0, 3.0]))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    x = torch.randn(6, *input_shape, generator=gen)
    return faults.parse(model.double().eval(), input_shape), x.double(), seed


@settings(max_examples=40, deadline=None)
@given(
    networks(),
    st.sampled_from(["crash", "byzantine"]),
    st.floats(0.0, 5.0),
    st.data(),
)
def test_measured_error_never_exceeds_the_bounds(case, kind, c, data):
    net, x, seed = case
    counts = [data.draw(st.integers(0, n), label=f"f_{i}") for i, n in enumerate(net.widths, 1)]
    synapses = [
        data.draw(st.integers(0, min(3, b.affine.weight.numel())), label=f"s_{i}")
        if isinstance(b.affine, nn.Linear)
        else 0
        for i, b in enumerate(net.blocks, 1)
    ]
    s_kind = data.draw(st.sampled_from(["crash", "byzantine"]), label="synapse kind")
    kw = {"kind": kind, "value_bound": c, "synapse_kind": s_kind, "synapse_bound": 0.5}
    bounds = faults.output_bounds(net, x)
    tol = 1e-9
    # neurons only: both bounds
    fep = faults.fep_bound(net, bounds, neurons=counts, **kw)
    path = faults.path_bound(net, bounds, neurons=counts, kind=kind, value_bound=c)
    found = faults.adversarial_failures(net, x, neurons=counts, rounds=1, **kw)
    rand = faults.random_failures(
        net, x, neurons=counts, trials=3, seed=seed, values="extreme", **kw
    )
    for measured in (found.worst, rand.worst):
        assert measured <= path * (1 + tol) + tol
        assert measured <= fep * (1 + tol) + tol
    # with synapses too: the paper's bound with its synapse extension
    fep_all = faults.fep_bound(net, bounds, neurons=counts, synapses=synapses, **kw)
    found = faults.adversarial_failures(net, x, neurons=counts, synapses=synapses, rounds=1, **kw)
    rand = faults.random_failures(
        net, x, neurons=counts, synapses=synapses, trials=3, seed=seed, **kw
    )
    assert max(found.worst, rand.worst) <= fep_all * (1 + tol) + tol
