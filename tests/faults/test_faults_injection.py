"""Injection: exact no-op without failures, seeded, reversible, what each failure does; errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from byzance import faults
from byzance.errors import InvalidParameterError
from byzance.models import MLP


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)
    ).eval()


X = torch.randn(7, 1, 6)


def test_parse_finds_hidden_layers_widths_and_lipschitz_constants():
    net = faults.parse(mlp(), (1, 6))
    assert net.widths == [5, 4] and net.output.width == 3
    assert [b.lipschitz for b in net.blocks] == [1.0, 1.0, 1]
    sig = faults.parse(nn.Sequential(nn.Linear(2, 2), nn.Sigmoid(), nn.Linear(2, 1)), (2,))
    assert sig.blocks[0].lipschitz == 0.25
    assert faults.parse(MLP((1, 8, 8), 10, hidden=(6, 5)), (1, 8, 8)).widths == [6, 5]


def test_zero_failures_leave_outputs_bit_identical():
    model = mlp()
    net = faults.parse(model, (1, 6))
    clean = model(X)
    for kind in ("crash", "byzantine"):
        pattern = faults.sample_pattern(net, neurons=0, synapses=0, kind=kind, seed=3)
        with faults.inject(net, pattern):
            assert torch.equal(model(X), clean)


def test_injection_is_seeded_and_reversible():
    model = mlp()
    net = faults.parse(model, (1, 6))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    clean = model(X)
    kw = {
        "neurons": [2, 1],
        "kind": "byzantine",
        "synapses": [1, 2, 1],
        "synapse_kind": "byzantine",
    }
    outs = []
    for seed in (5, 5, 6):
        with faults.inject(net, faults.sample_pattern(net, seed=seed, **kw)):
            outs.append(model(X))
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
    assert not torch.equal(outs[0], clean)
    assert torch.equal(model(X), clean)  # hooks gone
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with pytest.raises(RuntimeError), faults.inject(net, faults.sample_pattern(net, **kw)):
        raise RuntimeError("boom")
    assert torch.equal(model(X), clean)  # removed on an exception too


def test_what_each_failure_does():
    model = mlp()
    net = faults.parse(model, (1, 6))
    seen = {}
    # what the next layer receives
    model[3].register_forward_pre_hook(lambda m, i: seen.__setitem__("h1", i[0]))
    crash = faults.FailurePattern(
        neurons={1: faults.NeuronFaults(torch.tensor([0, 3]), torch.zeros(2))}
    )
    with faults.inject(net, crash):
        model(X)
    assert (seen["h1"][:, [0, 3]] == 0).all()
    byz = faults.sample_pattern(net, neurons=[5, 0], kind="byzantine", value_bound=0.3, seed=1)
    with faults.inject(net, byz):
        model(X)
    assert (seen["h1"].abs() <= 0.3).all() and (seen["h1"] != 0).any()
    extreme = faults.sample_pattern(
        net, neurons=[5, 0], kind="byzantine", value_bound=0.3, values="extreme"
    )
    with faults.inject(net, extreme):
        model(X)
    assert torch.allclose(seen["h1"].abs(), torch.full_like(seen["h1"], 0.3))
    # a crashed synapse computes like a zero weight
    cut = faults.sample_pattern(net, synapses=[0, 3, 0], synapse_kind="crash", seed=2)
    with faults.inject(net, cut):
        faulty = model(X)
    zeroed = mlp()
    with torch.no_grad():
        s = cut.synapses[2]
        zeroed[3].weight[s.out_index, s.in_index] = 0
    assert torch.allclose(faulty, zeroed(X), atol=1e-6)


def test_counts_from_rates_and_clear_errors():
    net = faults.parse(mlp(), (1, 6))
    assert faults.failure_counts(net, rate=0.5) == [3, 2]  # round(2.5) up, round(2)
    assert faults.failure_counts(net, 1) == [1, 1]
    with pytest.raises(faults.TooManyFailuresError, match="layer 2 has 4"):
        faults.failure_counts(net, [1, 5])
    with pytest.raises(InvalidParameterError, match="one count per layer"):
        faults.failure_counts(net, [1, 1, 1])
    with pytest.raises(InvalidParameterError, match="rate"):
        faults.failure_counts(net, rate=1.5)
    with pytest.raises(InvalidParameterError, match="not both"):
        faults.failure_counts(net, 1, rate=0.1)
    with pytest.raises(faults.TooManyFailuresError):
        faults.synapse_counts(net, [0, 21, 0])
    with pytest.raises(InvalidParameterError, match="kind"):
        faults.sample_pattern(net, neurons=1, kind="melted")


@pytest.mark.parametrize(
    "module", [nn.BatchNorm1d(4), nn.MaxPool1d(2), nn.Softmax(dim=1), nn.LSTM(4, 4)]
)
def test_unsupported_layers_are_refused(module):
    model = nn.Sequential(nn.Linear(4, 4), module, nn.Linear(4, 2))
    with pytest.raises(faults.UnsupportedLayerError, match="not supported"):
        faults.parse(model, (4,))


def test_other_unsupported_networks():
    with pytest.raises(faults.UnsupportedLayerError, match="Sequential"):
        faults.parse(nn.Linear(3, 2), (3,))
    relu = nn.ReLU()
    with pytest.raises(faults.UnsupportedLayerError, match="twice"):
        faults.parse(nn.Sequential(nn.Linear(3, 3), relu, nn.Linear(3, 3), relu), (3,))
    with pytest.raises(faults.UnsupportedLayerError, match="training mode"):
        faults.parse(nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5), nn.Linear(3, 1)), (3,))
    with pytest.raises(faults.UnsupportedLayerError, match="padding_mode"):
        faults.parse(nn.Sequential(nn.Conv1d(1, 1, 3, padding=1, padding_mode="circular")), (1, 5))
    conv = faults.parse(
        nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6, 1)), (1, 5)
    )
    assert conv.widths == [6]
    with pytest.raises(InvalidParameterError, match="Linear"):
        faults.sample_pattern(conv, synapses=[1, 0])
    with pytest.raises(InvalidParameterError, match="does not fit"):
        faults.parse(mlp(), (1, 7))
