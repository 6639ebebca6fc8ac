"""The output error that failures actually cause: under random failures and under a worst-case search.

The error on input x is the largest change of an output coordinate,
``max_o |y_o(x) - yhat_o(x)|`` (the quantity :mod:`byzance.faults.bound`
bounds). :func:`random_failures` draws seeded random patterns;
:func:`adversarial_failures` searches, for each input, the failure pattern
(which neurons/synapses, and which values) that moves the output the most.

The search is gradient-guided coordinate ascent. For each input x, output o
and direction s in {+1, -1} it maximizes s * (yhat_o - y_o): one layer at a
time (from the output back to the input, ``rounds`` sweeps), with the other
layers' failures fixed, it linearizes the output in that layer's neurons,
h -> g = d(s yhat_o)/dh, and picks the f_l neurons of largest first-order
gain g_j (v_j - h_j), where the best value is v_j = C sign(g_j) for a
Byzantine neuron (the worst value lies at +-C to first order) and v_j = 0
for a crashed one. Synapses likewise: gain g_j x_i delta_ji with
delta = S sign(g_j x_i) (Byzantine) or -W_ji (crash). A new choice is kept
for an input only if the exact (not linearized) objective improves. All
inputs, outputs and directions are searched together in one batch (each row
of the batch carries its own pattern). The search finds a lower bound on the
true worst case; the bound of :mod:`byzance.faults.bound` is an upper bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from byzance.errors import InvalidParameterError
from byzance.faults.injection import (
    FAILURE_KINDS,
    FailurePattern,
    NeuronFaults,
    SynapseFaults,
    failure_counts,
    inject,
    sample_pattern,
    synapse_counts,
)
from byzance.faults.network import Network

__all__ = ["ErrorStats", "adversarial_failures", "output_error", "random_failures"]


@dataclass(frozen=True, eq=False)
class ErrorStats:
    """Output errors over a data set: ``per_input`` (B,), its ``worst`` and ``mean``.

    ``accuracy``: mean accuracy under the failures (random failures with labels only).
    """

    worst: float
    mean: float
    per_input: torch.Tensor
    accuracy: float | None = None


def output_error(y: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
    """max_o |y_o - yhat_o| per input: (B, ...) x (B, ...) -> (B,)."""
    return (y - y_hat).reshape(len(y), -1).abs().amax(1)


def _check_data(net: Network, x: torch.Tensor) -> None:
    if tuple(x.shape[1:]) != net.input_shape or len(x) == 0:
        raise InvalidParameterError(
            f"data of shape {tuple(x.shape)} does not match the network's input shape "
            f"{net.input_shape}; pass a non-empty batch (B, *input_shape)."
        )


@torch.no_grad()
def random_failures(
    net: Network,
    x: torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    trials: int = 10,
    seed: int = 0,
    **failures,
) -> ErrorStats:
    """Errors under ``trials`` random patterns (seeds ``seed``, ``seed + 1``, ...).

    ``failures``: the keyword arguments of :func:`byzance.faults.injection.sample_pattern`
    (neurons, neuron_rate, kind, value_bound, values, synapses, ...). ``per_input``
    is each input's largest error over the trials; ``mean`` averages over
    inputs and trials; ``accuracy`` (with ``labels``) likewise.
    """
    _check_data(net, x)
    if trials < 1:
        raise InvalidParameterError(f"trials must be >= 1, got {trials}.")
    model = net.model
    clean = model(x)
    errors, correct = [], []
    for t in range(trials):
        pattern = sample_pattern(net, seed=seed + t, **failures)
        with inject(net, pattern):
            y_hat = model(x)
        errors.append(output_error(clean, y_hat))
        if labels is not None:
            correct.append((y_hat.argmax(1) == labels).float().mean())
    stacked = torch.stack(errors)  # (trials, B)
    return ErrorStats(
        worst=float(stacked.max()),
        mean=float(stacked.mean()),
        per_input=stacked.amax(0),
        accuracy=float(torch.stack(correct).mean()) if correct else None,
    )


def _without(pattern: FailurePattern, neuron_layer: int = 0, synapse_layer: int = 0):
    return FailurePattern(
        neurons={k: v for k, v in pattern.neurons.items() if k != neuron_layer},
        synapses={k: v for k, v in pattern.synapses.items() if k != synapse_layer},
    )


class _Search:
    """Coordinate ascent over layers for rows (input, output o, direction s)."""

    def __init__(
        self,
        net: Network,
        x: torch.Tensor,
        kind: str,
        value_bound: float,
        synapse_kind: str,
        synapse_bound: float,
    ) -> None:
        self.net, self.kind, self.c = net, kind, float(value_bound)
        self.synapse_kind, self.s = synapse_kind, float(synapse_bound)
        n_out = net.output.width
        rows_per_input = 2 * n_out
        self.x = x.repeat_interleave(rows_per_input, 0)
        self.target = torch.arange(n_out).repeat(2).repeat(len(x))  # (R,)
        dtype = next(net.model.parameters()).dtype
        signs = torch.cat([torch.ones(n_out, dtype=dtype), -torch.ones(n_out, dtype=dtype)])
        self.direction = signs.repeat(len(x))  # (R,)
        with torch.no_grad():
            self.clean = net.model(self.x).reshape(len(self.x), -1)

    def objective(self, pattern: FailurePattern) -> tuple[torch.Tensor, torch.Tensor]:
        """(J (R,), yhat (R, N_out)) with J = s (yhat_o - y_o)."""
        with torch.no_grad(), inject(self.net, pattern):
            y_hat = self.net.model(self.x).reshape(len(self.x), -1)
        moved = (y_hat - self.clean).gather(1, self.target[:, None])[:, 0]
        return self.direction * moved, y_hat

    def _gradient(self, pattern: FailurePattern, module, *, at_input: bool):
        """d J / d(module output) (R, ...) under ``pattern``, the output and (optionally) the input."""
        captured = {}

        def probe(_m, inp, out):
            captured["in"] = inp[0].detach()
            captured["out"] = out.detach().requires_grad_()
            return captured["out"]

        # prepend: the probe sees the module's own output, before a neuron failure replaces it
        handle = module.register_forward_hook(probe, prepend=True)
        try:
            with torch.enable_grad(), inject(self.net, pattern):
                y_hat = self.net.model(self.x).reshape(len(self.x), -1)
                j = (self.direction * y_hat.gather(1, self.target[:, None])[:, 0]).sum()
                (grad,) = torch.autograd.grad(j, captured["out"])
        finally:
            handle.remove()
        return grad, captured["out"].detach(), captured["in"] if at_input else None

    def neurons(self, pattern: FailurePattern, layer: int, count: int) -> NeuronFaults:
        block = self.net.blocks[layer - 1]
        grad, h, _ = self._gradient(pattern, block.last_module, at_input=False)
        g, h = grad.reshape(len(grad), -1), h.reshape(len(h), -1)
        if self.kind == "byzantine":
            values = torch.where(g >= 0, 1.0, -1.0).to(g.dtype) * self.c  # +-C in g's precision
        else:
            values = torch.zeros_like(h)
        gain = g * (values - h)
        index = gain.topk(count, dim=1).indices
        return NeuronFaults(index, values.gather(1, index))

    def synapses(self, pattern: FailurePattern, layer: int, count: int) -> SynapseFaults:
        affine = self.net.blocks[layer - 1].affine
        grad, _, x_in = self._gradient(pattern, affine, at_input=True)
        weight = affine.weight.detach()
        n_in = weight.shape[1]
        outs, ins, deltas = [], [], []
        # (rows, out, in) gains, a few rows at a time to bound memory
        step = max(1, 2_000_000 // weight.numel())
        for g, xi in zip(grad.split(step), x_in.split(step), strict=True):
            sensitivity = g[:, :, None] * xi[:, None, :]  # d J / d W_ji per row
            if self.synapse_kind == "byzantine":
                delta = torch.where(sensitivity >= 0, 1.0, -1.0).to(g.dtype) * self.s
            else:
                delta = -weight.expand_as(sensitivity)
            flat = (sensitivity * delta).reshape(len(g), -1).topk(count, dim=1).indices
            outs.append(flat // n_in)
            ins.append(flat % n_in)
            deltas.append(delta.reshape(len(g), -1).gather(1, flat))
        return SynapseFaults(torch.cat(outs), torch.cat(ins), torch.cat(deltas))


def adversarial_failures(
    net: Network,
    x: torch.Tensor,
    *,
    neurons: int | Sequence[int] | None = None,
    neuron_rate: float | None = None,
    kind: str = "crash",
    value_bound: float = 1.0,
    synapses: int | Sequence[int] | None = None,
    synapse_rate: float | None = None,
    synapse_kind: str = "crash",
    synapse_bound: float = 1.0,
    rounds: int = 2,
    batch_inputs: int = 128,
) -> ErrorStats:
    """Largest error found per input by the gradient-guided search (module doc).

    ``per_input[b]``: the error of the worst pattern found for input b;
    ``worst``: their max; ``mean``: their mean (the average damage of an
    adversary who sees each input). ``batch_inputs`` inputs are searched at a
    time (2 * N_out rows each).
    """
    _check_data(net, x)
    for name, value in (("kind", kind), ("synapse_kind", synapse_kind)):
        if value not in FAILURE_KINDS:
            raise InvalidParameterError(f"{name} must be one of {FAILURE_KINDS}, got {value!r}.")
    if rounds < 1:
        raise InvalidParameterError(f"rounds must be >= 1, got {rounds}.")
    f = failure_counts(net, neurons, neuron_rate)
    s = synapse_counts(net, synapses, synapse_rate)
    # from the output back to the input; synapses of layer l just after neurons of layer l
    units = []
    for layer in range(len(net.blocks), 0, -1):
        if s[layer - 1]:
            units.append(("synapse", layer, s[layer - 1]))
        if layer <= len(f) and f[layer - 1]:
            units.append(("neuron", layer, f[layer - 1]))
    if not units:
        zero = torch.zeros(len(x))
        return ErrorStats(worst=0.0, mean=0.0, per_input=zero)
    per_input = []
    for chunk in x.split(batch_inputs):
        search = _Search(net, chunk, kind, value_bound, synapse_kind, synapse_bound)
        pattern = FailurePattern()
        best = None
        for _sweep in range(rounds):
            for what, layer, count in units:
                if what == "neuron":
                    base = _without(pattern, neuron_layer=layer)
                    faults = search.neurons(base, layer, count)
                    candidate = FailurePattern({**base.neurons, layer: faults}, base.synapses)
                else:
                    base = _without(pattern, synapse_layer=layer)
                    faults = search.synapses(base, layer, count)
                    candidate = FailurePattern(base.neurons, {**base.synapses, layer: faults})
                value, _ = search.objective(candidate)
                if best is None or (what, layer) not in _present(pattern):
                    pattern, best = candidate, value  # the layer's first choice: no failures yet
                    continue
                keep = value > best
                pattern = _merge(pattern, candidate, keep)
                best = torch.where(keep, value, best)
        _, y_hat = search.objective(pattern)
        rows = output_error(search.clean, y_hat)
        per_input.append(rows.reshape(len(chunk), -1).amax(1))
    errors = torch.cat(per_input)
    return ErrorStats(worst=float(errors.max()), mean=float(errors.mean()), per_input=errors)


def _present(pattern: FailurePattern) -> set[tuple[str, int]]:
    return {("neuron", layer) for layer in pattern.neurons} | {
        ("synapse", layer) for layer in pattern.synapses
    }


def _merge(old: FailurePattern, new: FailurePattern, keep: torch.Tensor) -> FailurePattern:
    """Row-wise: ``new``'s faults where ``keep`` (R,), else ``old``'s (same layers in both)."""

    def pick(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(keep[:, None], b, a)

    neurons = {
        layer: NeuronFaults(
            pick(old.neurons[layer].index, n.index), pick(old.neurons[layer].values, n.values)
        )
        for layer, n in new.neurons.items()
    }
    synapses = {
        layer: SynapseFaults(
            pick(old.synapses[layer].out_index, n.out_index),
            pick(old.synapses[layer].in_index, n.in_index),
            pick(old.synapses[layer].delta, n.delta),
        )
        for layer, n in new.synapses.items()
    }
    return FailurePattern(neurons, synapses)
