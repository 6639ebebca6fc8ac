"""Fine-grained failures: neurons and synapses that crash or turn Byzantine inside one network.

El Mhamdi & Guerraoui, "When Neurons Fail", IPDPS 2017: a feed-forward
network is a distributed system whose neurons (and synapses) may fail; the
error they propagate to the output is bounded by the activation's Lipschitz
constant, the weights, the layer widths and the number of failures per layer.

    >>> from byzance import faults
    >>> net = faults.parse(model, input_shape=(1, 8, 8))            # an nn.Sequential
    >>> pattern = faults.sample_pattern(net, neurons=2, kind="byzantine", value_bound=1.0)
    >>> with faults.inject(net, pattern):                              # hooks, removed on exit
    ...     y = model(x)
    >>> H = faults.output_bounds(net, x)                               # bounded outputs, per neuron
    >>> faults.fep_bound(net, H, neurons=2, kind="byzantine", value_bound=1.0)   # the paper's bound
    >>> faults.adversarial_failures(net, x, neurons=2, kind="byzantine").worst  # <= the bound

Modules: ``network`` (a Sequential as layers of neurons), ``injection``
(failure patterns, hooks), ``bound`` (the bounds), ``measure`` (measured
errors, random and worst-case), ``experiment`` (``byzance faults``; its config
in ``faults_config``, on the runs layer's config system).
"""

from byzance.faults.bound import fep_bound, output_bounds, path_bound, path_gains
from byzance.faults.injection import (
    FAILURE_KINDS,
    FailurePattern,
    NeuronFaults,
    SynapseFaults,
    TooManyFailuresError,
    failure_counts,
    inject,
    sample_pattern,
    synapse_counts,
)
from byzance.faults.measure import ErrorStats, adversarial_failures, output_error, random_failures
from byzance.faults.network import Network, UnsupportedLayerError, lipschitz_constant, parse

__all__ = [
    "FAILURE_KINDS",
    "ErrorStats",
    "FailurePattern",
    "Network",
    "NeuronFaults",
    "SynapseFaults",
    "TooManyFailuresError",
    "UnsupportedLayerError",
    "adversarial_failures",
    "failure_counts",
    "fep_bound",
    "inject",
    "lipschitz_constant",
    "output_bounds",
    "output_error",
    "parse",
    "path_bound",
    "path_gains",
    "random_failures",
    "sample_pattern",
    "synapse_counts",
]
