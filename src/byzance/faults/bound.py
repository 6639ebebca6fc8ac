r"""The error that failing neurons and synapses propagate to a network's output, bounded.

El Mhamdi & Guerraoui, "When Neurons Fail", IPDPS 2017 (and El Mhamdi's
thesis, EPFL 2020, part II) bound the *Forward Error Propagation*: the largest
change of the output of a feed-forward network when f_l neurons of hidden
layer l fail, uniformly over the inputs and over which neurons fail.

Setting and assumptions (checked or computed from the model's actual weights)
-------------------------------------------------------------------------------
- Layers l = 1..L are hidden, h^(l) = phi_l(W_l h^(l-1) + b_l), h^(0) the
  input; layer L + 1 is the output, y = phi_{L+1}(W_{L+1} h^(L) + b_{L+1}).
  N_l neurons in layer l (for a convolution: channels x positions).
- phi_l acts element-wise and is K_l-Lipschitz: |phi(a) - phi(b)| <= K_l |a - b|
  (ReLU, tanh: K = 1; sigmoid: 1/4; see :func:`byzance.faults.network.lipschitz_constant`).
- w_l = max |W_l| over the weights of layer l (read from the model).
- Bounded outputs: a correct neuron of layer l outputs |h_j| <= H_l (measured
  over the data set where the bound is used, see :func:`output_bounds`; the
  input bound H_0 likewise), and a Byzantine neuron outputs any |v| <= C (the
  synapses' transmission capacity). So one failed neuron deviates from its
  correct output by at most Delta_l = H_l (crash: it outputs 0) or C + H_l
  (Byzantine). (The paper states its bound with C, the capacity of what a
  failed neuron transmits, as the error one failed neuron introduces; the
  deviation is made explicit here, so the bound holds for any correct output.)
- Synapses (extension, paper section on failing synapses): s_l failed synapses
  in layer l, each weight changed by |delta| <= S_l (crash: delta = -W, so
  S_l = w_l; Byzantine: S_l = S).

The bound (:func:`fep_bound`)
-----------------------------
Let E_l bound the l1 norm of the error sum_j |hhat_j - h_j| at layer l; E_0 = 0.
A correct neuron j of layer l has |e_j| <= K_l (sum_i |W_ji| |e_i| + sum over its
failed synapses |delta_ji| |hhat_i|) <= K_l (w_l E_{l-1} + ...), and a failed
one |e_j| <= Delta_l. Summing over the N_l - f_l correct and the f_l failed neurons,

    E_l <= K_l [(N_l - f_l) w_l E_{l-1} + s_l S_l (H_{l-1} + E_{l-1})] + f_l Delta_l,

and every output coordinate moves by at most

    Fep = K_{L+1} [w_{L+1} E_L + s_{L+1} S_{L+1} (H_L + E_L)].

Without synapse failures this unrolls to the paper's closed form

    Fep = K_{L+1} w_{L+1} sum_{l=1}^{L} f_l Delta_l prod_{l'=l+1}^{L} K_{l'} w_{l'} (N_{l'} - f_{l'}),

i.e. Delta * sum_l f_l K^{L-l} w^{L-l+1} prod_{l' > l} (N_{l'} - f_{l'}) with one K,
one w and a linear output. It holds for every input with correct outputs
within H_l, every choice of the failing neurons and every Byzantine value.

A tighter bound from the same assumptions (:func:`path_bound`)
----------------------------------------------------------------
The same induction neuron by neuron, with |W| instead of w_l: the error of
a failed neuron j of layer l reaches output o through at most
G_l[o, j] = (K_{L+1} |W_{L+1}| K_L |W_L| ... K_{l+1} |W_{l+1}|)[o, j], so

    |y_o - yhat_o| <= sum_l (sum of the f_l largest Delta_{l,j} G_l[o, j] over j),

with Delta_{l,j} = H_{l,j} or C + H_{l,j} per neuron. (Dropping the masking by
failed neurons downstream only loosens it.) Both bounds are reached on one
input by a network with equal non-negative weights that stays in its
activations' linear part, with failures in one layer (tests/faults); the path
bound is far below Fep on trained networks, since it uses the actual weights
rather than their maximum times the widths.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from byzance.errors import InvalidParameterError
from byzance.faults.injection import FAILURE_KINDS, failure_counts, synapse_counts
from byzance.faults.network import Block, Network

__all__ = ["fep_bound", "output_bounds", "path_bound", "path_gains"]


@torch.no_grad()
def output_bounds(net: Network, x: torch.Tensor, batch_size: int = 4096) -> list[torch.Tensor]:
    """Per-neuron bounds on the correct outputs over the data ``x`` (B, *input_shape).

    Returns [H_0 (N_0,), H_1 (N_1,), ..., H_L (N_L,)]: max over the inputs of
    |h_j| for the input to the first affine layer and each hidden layer.
    """
    if x.shape[1:] != net.input_shape:
        raise InvalidParameterError(
            f"data of shape {tuple(x.shape)} does not match the network's input shape "
            f"{net.input_shape}; pass a batch (B, *input_shape)."
        )
    if len(x) == 0:
        raise InvalidParameterError("output_bounds needs at least one input.")
    bounds: list[torch.Tensor] | None = None
    for chunk in x.split(batch_size):
        layers = net.forward_layers(chunk)[:-1]
        maxima = [h.abs().amax(0) for h in layers]
        bounds = (
            maxima
            if bounds is None
            else [torch.maximum(a, b) for a, b in zip(bounds, maxima, strict=True)]
        )
    assert bounds is not None
    return [b.double() for b in bounds]


def _check(net: Network, bounds: Sequence[torch.Tensor], kind: str, value_bound: float) -> None:
    if kind not in FAILURE_KINDS:
        raise InvalidParameterError(f"kind must be one of {FAILURE_KINDS}, got {kind!r}.")
    if (
        not isinstance(value_bound, numbers.Real)
        or not math.isfinite(value_bound)
        or value_bound < 0
    ):
        raise InvalidParameterError(
            f"value_bound must be a finite number >= 0, got {value_bound!r}."
        )
    if len(bounds) != len(net.blocks):
        raise InvalidParameterError(
            f"bounds must hold H_0..H_L ({len(net.blocks)} tensors, from output_bounds); "
            f"got {len(bounds)}."
        )


def _max_weight(block: Block) -> float:
    return float(block.affine.weight.detach().abs().max())


def fep_bound(
    net: Network,
    bounds: Sequence[torch.Tensor],
    *,
    neurons: int | Sequence[int] | None = None,
    neuron_rate: float | None = None,
    kind: str = "crash",
    value_bound: float = 1.0,
    synapses: int | Sequence[int] | None = None,
    synapse_rate: float | None = None,
    synapse_kind: str = "crash",
    synapse_bound: float = 1.0,
) -> float:
    """The paper's Forward Error Propagation bound on max_o |y_o - yhat_o| (see the module doc).

    ``bounds``: [H_0, ..., H_L] from :func:`output_bounds` (only their maxima
    are used); ``neurons``/``neuron_rate``: f_l per hidden layer;
    ``synapses``/``synapse_rate``: s_l per affine layer; ``value_bound``: C;
    ``synapse_bound``: S (Byzantine synapses). Computed in float64.
    """
    _check(net, bounds, kind, value_bound)
    if synapse_kind not in FAILURE_KINDS:
        raise InvalidParameterError(
            f"synapse_kind must be one of {FAILURE_KINDS}, got {synapse_kind!r}."
        )
    f = failure_counts(net, neurons, neuron_rate)
    s = synapse_counts(net, synapses, synapse_rate)
    h = [float(b.max()) if b.numel() else 0.0 for b in bounds]
    error = 0.0  # E_0: the input is exact
    for layer, block in enumerate(net.blocks, start=1):
        w = _max_weight(block)
        syn_bound = w if synapse_kind == "crash" else float(synapse_bound)
        synapse_term = s[layer - 1] * syn_bound * (h[layer - 1] + error)
        if layer == len(net.blocks):  # output: one coordinate
            return block.lipschitz * (w * error + synapse_term)
        deviation = h[layer] if kind == "crash" else float(value_bound) + h[layer]
        correct = block.width - f[layer - 1]
        error = block.lipschitz * (correct * w * error + synapse_term) + f[layer - 1] * deviation
    raise AssertionError("unreachable")


def _abs_affine(block: Block, h: torch.Tensor) -> torch.Tensor:
    """K_l |W_l| h (no bias), reshaped to the block's neurons; h (B, ...) -> (B, *block.shape)."""
    weight = block.affine.weight.detach().abs().double()
    if isinstance(block.affine, nn.Linear):
        z = F.linear(h, weight)
    else:
        z = block.affine._conv_forward(h, weight, None)
    return (block.lipschitz * z).reshape(h.shape[0], *block.shape)


def path_gains(net: Network) -> list[torch.Tensor]:
    """G_1..G_L, each (N_out, N_l) float64: how much a unit error at neuron j of layer l can move output o.

    G_l = K_{L+1}|W_{L+1}| ... K_{l+1}|W_{l+1}| (convolutions applied with |kernel|);
    computed by one backward pass through the network with absolute weights.
    """
    n_out = net.output.width
    with torch.enable_grad():
        probes = [
            torch.zeros(n_out, *b.shape, dtype=torch.float64, requires_grad=True)
            for b in net.hidden
        ]
        h = probes[0]
        for probe, block in zip(probes[1:], net.hidden[1:], strict=True):
            h = _abs_affine(block, h) + probe
        y = _abs_affine(net.output, h).reshape(n_out, n_out)
        grads = torch.autograd.grad(y.diagonal().sum(), probes, allow_unused=True)
    return [
        (g if g is not None else torch.zeros_like(p)).reshape(n_out, -1)
        for g, p in zip(grads, probes, strict=True)
    ]


def path_bound(
    net: Network,
    bounds: Sequence[torch.Tensor],
    *,
    neurons: int | Sequence[int] | None = None,
    neuron_rate: float | None = None,
    kind: str = "crash",
    value_bound: float = 1.0,
    gains: list[torch.Tensor] | None = None,
) -> float:
    """The weight-path bound on max_o |y_o - yhat_o| for neuron failures (see the module doc).

    Worst case over which f_l neurons fail in each layer: per output o, the f_l
    largest Delta_{l,j} G_l[o, j]. ``gains`` may pass :func:`path_gains`' result
    to reuse it across failure counts.
    """
    _check(net, bounds, kind, value_bound)
    f = failure_counts(net, neurons, neuron_rate)
    gains = path_gains(net) if gains is None else gains
    total = torch.zeros(net.output.width, dtype=torch.float64)
    for layer, (count, gain) in enumerate(zip(f, gains, strict=True), start=1):
        if count:
            deviation = bounds[layer] if kind == "crash" else bounds[layer] + float(value_bound)
            total += (gain * deviation).topk(count, dim=1).values.sum(1)
    return float(total.max())
