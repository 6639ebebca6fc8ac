"""Failing neurons and synapses, injected by forward hooks (the model itself is never modified).

The failure model of El Mhamdi & Guerraoui, "When Neurons Fail" (IPDPS 2017):

- a *crashed neuron* outputs 0;
- a *Byzantine neuron* outputs any value v with |v| <= C (the synapses'
  transmission capacity), chosen by an adversary;
- a *crashed synapse* has weight 0 (its input no longer reaches the neuron);
- a *Byzantine synapse* has its weight changed by any delta with |delta| <= S.

Neurons fail in hidden layers 1..L (see :mod:`byzance.faults.network`);
synapses fail in ``Linear`` layers 1..L+1. A :class:`FailurePattern` says
which neurons/synapses fail and what they do; it is applied inside
``with inject(net, pattern):`` and removed exactly on exit (hooks only: the
parameters are untouched, so the model's outputs afterwards are bit-identical).
A pattern's tensors may carry a leading batch dimension (B, f): then input b
of the batch sees its own failures (used by the adversarial search).

    >>> net = parse(model, (64,))
    >>> pattern = sample_pattern(net, neurons=[2, 1], kind="byzantine", value_bound=1.0, seed=0)
    >>> with inject(net, pattern):
    ...     y_faulty = model(x)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from byzance.errors import InvalidParameterError
from byzance.faults.network import Network

__all__ = [
    "FAILURE_KINDS",
    "FailurePattern",
    "NeuronFaults",
    "SynapseFaults",
    "TooManyFailuresError",
    "failure_counts",
    "inject",
    "sample_pattern",
    "synapse_counts",
]

FAILURE_KINDS = ("crash", "byzantine")
Kind = Literal["crash", "byzantine"]


class TooManyFailuresError(InvalidParameterError):
    """More failures were asked for in a layer than it has neurons (or synapses)."""


@dataclass(frozen=True, eq=False)
class NeuronFaults:
    """Failed neurons of one hidden layer: flat ``index`` (f,) or (B, f); their ``values``, same shape."""

    index: torch.Tensor
    values: torch.Tensor

    @property
    def count(self) -> int:
        return int(self.index.shape[-1])


@dataclass(frozen=True, eq=False)
class SynapseFaults:
    """Failed synapses of one Linear layer: weight[out_index, in_index] += delta; each (s,) or (B, s)."""

    out_index: torch.Tensor
    in_index: torch.Tensor
    delta: torch.Tensor

    @property
    def count(self) -> int:
        return int(self.out_index.shape[-1])


@dataclass(frozen=True, eq=False)
class FailurePattern:
    """Which neurons and synapses fail, and how.

    ``neurons[l]``: faults of hidden layer l (1..L); ``synapses[l]``: faults of
    affine layer l (1..L+1, Linear only). Missing layers have no failures.
    """

    neurons: dict[int, NeuronFaults] = field(default_factory=dict)
    synapses: dict[int, SynapseFaults] = field(default_factory=dict)

    def neuron_counts(self, net: Network) -> list[int]:
        """f_1..f_L."""
        return [
            self.neurons[layer].count if layer in self.neurons else 0 for layer in _hidden_ids(net)
        ]

    def synapse_counts(self, net: Network) -> list[int]:
        """s_1..s_{L+1}."""
        return [
            self.synapses[layer].count if layer in self.synapses else 0
            for layer in range(1, len(net.blocks) + 1)
        ]

    def validate(self, net: Network) -> None:
        """Raise a clear error if a layer or an index does not exist in ``net``."""
        for layer, faults in self.neurons.items():
            if layer not in _hidden_ids(net):
                raise InvalidParameterError(
                    f"neuron failures in layer {layer}, but the hidden layers are 1..{len(net.hidden)} "
                    "(the output layer's neurons do not fail)."
                )
            width = net.blocks[layer - 1].width
            if faults.index.shape != faults.values.shape:
                raise InvalidParameterError(
                    f"layer {layer}: neuron index {tuple(faults.index.shape)} and values "
                    f"{tuple(faults.values.shape)} differ in shape."
                )
            if faults.count > width:
                raise TooManyFailuresError(
                    f"layer {layer} has {width} neurons; {faults.count} cannot fail."
                )
            if faults.count and (faults.index.min() < 0 or faults.index.max() >= width):
                raise InvalidParameterError(
                    f"layer {layer}: neuron indices must lie in 0..{width - 1}."
                )
        for layer, faults in self.synapses.items():
            if not 1 <= layer <= len(net.blocks):
                raise InvalidParameterError(
                    f"synapse failures in layer {layer}, but the affine layers are 1..{len(net.blocks)}."
                )
            linear = net.blocks[layer - 1].affine
            if not isinstance(linear, nn.Linear):
                raise InvalidParameterError(
                    f"synapse failures need a Linear layer; layer {layer} is {type(linear).__name__} "
                    "(a convolution shares each weight across positions)."
                )
            shapes = {tuple(t.shape) for t in (faults.out_index, faults.in_index, faults.delta)}
            if len(shapes) != 1:
                raise InvalidParameterError(
                    f"layer {layer}: synapse tensors differ in shape: {shapes}."
                )
            if faults.count and (
                faults.out_index.min() < 0
                or faults.out_index.max() >= linear.out_features
                or faults.in_index.min() < 0
                or faults.in_index.max() >= linear.in_features
            ):
                raise InvalidParameterError(
                    f"layer {layer}: synapse indices must lie in the weight's shape "
                    f"({linear.out_features}, {linear.in_features})."
                )


def _hidden_ids(net: Network) -> range:
    return range(1, len(net.hidden) + 1)


def _check_kind(kind: str, what: str) -> None:
    if kind not in FAILURE_KINDS:
        raise InvalidParameterError(f"{what} must be one of {FAILURE_KINDS}, got {kind!r}.")


def _check_bound(name: str, value: float) -> float:
    if not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise InvalidParameterError(f"{name} must be a finite number >= 0, got {value!r}.")
    return float(value)


def _counts(
    sizes: Sequence[int], count: int | Sequence[int] | None, rate: float | None, what: str
) -> list[int]:
    """Failures per layer from a count (one for all layers, or one per layer) or a rate."""
    if count is not None and rate is not None:
        raise InvalidParameterError(f"give {what} failures as a count or as a rate, not both.")
    if rate is not None:
        if not isinstance(rate, numbers.Real) or not 0 <= rate <= 1:
            raise InvalidParameterError(f"{what} failure rate must lie in [0, 1], got {rate!r}.")
        return [math.floor(rate * n + 0.5) for n in sizes]
    if count is None:
        return [0] * len(sizes)
    counts = [count] * len(sizes) if isinstance(count, numbers.Integral) else list(count)
    if len(counts) != len(sizes):
        raise InvalidParameterError(
            f"{what} failures: {len(counts)} counts given for {len(sizes)} layers; "
            "give one count per layer, or a single count for all."
        )
    for layer, (c, n) in enumerate(zip(counts, sizes, strict=True), start=1):
        if isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 0:
            raise InvalidParameterError(f"{what} failures must be integers >= 0, got {c!r}.")
        if c > n:
            raise TooManyFailuresError(
                f"layer {layer} has {n} {what}s; {c} of them cannot fail. "
                f"Use at most {n}, or a rate in [0, 1]."
            )
    return [int(c) for c in counts]


def failure_counts(
    net: Network, count: int | Sequence[int] | None = None, rate: float | None = None
) -> list[int]:
    """Neuron failures f_1..f_L per hidden layer, from a count or a rate (round(rate * N_l))."""
    return _counts(net.widths, count, rate, "neuron")


def synapse_counts(
    net: Network, count: int | Sequence[int] | None = None, rate: float | None = None
) -> list[int]:
    """Synapse failures s_1..s_{L+1} per affine layer (Linear only), from a count or a rate."""
    for layer, block in enumerate(net.blocks, start=1):
        if count is None or isinstance(count, numbers.Integral):
            asked = count
        else:
            asked = count[layer - 1] if layer - 1 < len(count) else 0
        if not isinstance(block.affine, nn.Linear) and (rate or asked):
            raise InvalidParameterError(
                f"synapse failures need Linear layers; layer {layer} is {type(block.affine).__name__} "
                "(a convolution shares each weight across positions). Give 0 for it."
            )
    sizes = [b.affine.weight.numel() if isinstance(b.affine, nn.Linear) else 0 for b in net.blocks]
    counts = _counts(sizes, count, rate, "synapse")
    return counts


def sample_pattern(
    net: Network,
    *,
    neurons: int | Sequence[int] | None = None,
    neuron_rate: float | None = None,
    kind: Kind = "crash",
    value_bound: float = 1.0,
    values: Literal["uniform", "extreme"] = "uniform",
    synapses: int | Sequence[int] | None = None,
    synapse_rate: float | None = None,
    synapse_kind: Kind = "crash",
    synapse_bound: float = 1.0,
    seed: int = 0,
) -> FailurePattern:
    """A random failure pattern, deterministic given ``seed``.

    Failed neurons/synapses are drawn uniformly without replacement in each
    layer. Byzantine neurons output values uniform in [-C, C] (``values=
    "uniform"``) or +-C with random signs (``"extreme"``), C = ``value_bound``;
    Byzantine synapses change by deltas in [-S, S] (or +-S), S = ``synapse_bound``.
    Crashed neurons output 0; crashed synapses get delta = -weight.
    """
    _check_kind(kind, "kind")
    _check_kind(synapse_kind, "synapse_kind")
    c = _check_bound("value_bound", value_bound)
    s = _check_bound("synapse_bound", synapse_bound)
    if values not in ("uniform", "extreme"):
        raise InvalidParameterError(f"values must be 'uniform' or 'extreme', got {values!r}.")
    gen = torch.Generator().manual_seed(int(seed))

    def draw(n: int, bound: float) -> torch.Tensor:
        if values == "extreme":
            return bound * (torch.randint(0, 2, (n,), generator=gen) * 2 - 1).double()
        return (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * bound

    pattern = FailurePattern()
    for layer, f in enumerate(failure_counts(net, neurons, neuron_rate), start=1):
        if f:
            index = torch.randperm(net.blocks[layer - 1].width, generator=gen)[:f]
            vals = torch.zeros(f, dtype=torch.float64) if kind == "crash" else draw(f, c)
            pattern.neurons[layer] = NeuronFaults(index, vals)
    for layer, count in enumerate(synapse_counts(net, synapses, synapse_rate), start=1):
        if count:
            weight = net.blocks[layer - 1].affine.weight
            flat = torch.randperm(weight.numel(), generator=gen)[:count]
            out_index, in_index = flat // weight.shape[1], flat % weight.shape[1]
            if synapse_kind == "crash":
                delta = -weight.detach()[out_index, in_index]
            else:
                delta = draw(count, s)
            pattern.synapses[layer] = SynapseFaults(out_index, in_index, delta)
    return pattern


def _replace_neurons(h: torch.Tensor, faults: NeuronFaults) -> torch.Tensor:
    """h (B, *shape) with the failed neurons' outputs replaced by their values."""
    flat = h.reshape(h.shape[0], -1)
    index, values = faults.index.to(h.device), faults.values.to(h.device, h.dtype)
    if index.dim() == 1:
        index, values = index.expand(flat.shape[0], -1), values.expand(flat.shape[0], -1)
    elif index.shape[0] != flat.shape[0]:
        raise InvalidParameterError(
            f"a per-input failure pattern for {index.shape[0]} inputs was applied to a batch "
            f"of {flat.shape[0]}."
        )
    return flat.scatter(1, index, values).reshape(h.shape)


def _add_synapse_deltas(x: torch.Tensor, z: torch.Tensor, faults: SynapseFaults) -> torch.Tensor:
    """z (B, out) + the failed synapses' contribution delta * x[:, in_index] at out_index."""
    if x.dim() != 2:
        raise InvalidParameterError(
            f"synapse failures need 2-D inputs (batch, features) to their Linear layer; got {tuple(x.shape)}."
        )
    out_index, in_index = faults.out_index.to(z.device), faults.in_index.to(z.device)
    delta = faults.delta.to(z.device, z.dtype)
    if out_index.dim() == 1:
        contrib = x[:, in_index] * delta  # (B, s)
        out_index = out_index.expand(z.shape[0], -1)
    else:
        if out_index.shape[0] != z.shape[0]:
            raise InvalidParameterError(
                f"a per-input synapse pattern for {out_index.shape[0]} inputs was applied to a "
                f"batch of {z.shape[0]}."
            )
        contrib = torch.gather(x, 1, in_index) * delta
    return z.scatter_add(1, out_index, contrib)


@contextmanager
def inject(net: Network, pattern: FailurePattern) -> Iterator[nn.Sequential]:
    """Within the block, ``net.model`` computes with ``pattern``'s failures; all hooks go on exit.

    Layers without failures get no hook, so a pattern with no failures leaves
    the outputs bit-identical.
    """
    pattern.validate(net)
    handles = []
    try:
        for layer, faults in pattern.neurons.items():
            if faults.count:
                module = net.blocks[layer - 1].last_module
                handles.append(
                    module.register_forward_hook(
                        lambda _m, _inp, out, faults=faults: _replace_neurons(out, faults)
                    )
                )
        for layer, faults in pattern.synapses.items():
            if faults.count:
                module = net.blocks[layer - 1].affine
                handles.append(
                    module.register_forward_hook(
                        lambda _m, inp, out, faults=faults: _add_synapse_deltas(inp[0], out, faults)
                    )
                )
        yield net.model
    finally:
        for handle in handles:
            handle.remove()
