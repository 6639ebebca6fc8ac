"""A lossy, authenticated UDP transport for gradients (after AggregaThor).

Damaskinos, El Mhamdi, Guerraoui, Guirguis, Rouault, "AggregaThor: Byzantine
Machine Learning via Robust Gradient Aggregation", SysML 2019: with a robust
rule, a lost coordinate is one more faulty value the rule tolerates, so the
gradients can travel over UDP and the server stops waiting for retransmissions.

- :class:`UdpSender` splits a worker's flattened gradient into datagrams
  (:mod:`~byzance.distributed.udp.datagram`: header, float32 payload, HMAC-SHA256
  tag under the worker's key) and sends them, optionally through a seeded
  :class:`LossModel` (drop, duplicate, reorder, delay) and paced.
- :class:`UdpReceiver` authenticates and reassembles them into a bounded,
  preallocated buffer and :meth:`UdpReceiver.collect` returns, per step,
  ``values`` (n, d), ``present`` (n, d) and :class:`StepStats`.
- :func:`byzance.aggregators.aggregate_with_missing` aggregates them.
- Keys: :func:`generate_key_file`, :func:`load_keys`; settings from a TOML
  ``[udp]`` table: :class:`UdpConfig`.

The control plane (membership, model broadcast) stays on torch.distributed.
"""

from byzance.distributed.udp.config import UdpConfig, UdpConfigError
from byzance.distributed.udp.datagram import LOOPBACK_DATAGRAM, MTU_DATAGRAM, DatagramError, encode
from byzance.distributed.udp.keys import (
    KeyConfigError,
    KeyFilePermissionWarning,
    check_keys,
    generate_key_file,
    generate_keys,
    key_for,
    load_key_file,
    load_keys,
)
from byzance.distributed.udp.receiver import REASONS, Collected, StepStats, UdpReceiver
from byzance.distributed.udp.sender import SendStats, UdpSender, suggested_window
from byzance.runs.loss_model import LossModel

__all__ = [
    "LOOPBACK_DATAGRAM",
    "MTU_DATAGRAM",
    "REASONS",
    "Collected",
    "DatagramError",
    "KeyConfigError",
    "KeyFilePermissionWarning",
    "LossModel",
    "SendStats",
    "StepStats",
    "UdpConfig",
    "UdpConfigError",
    "UdpReceiver",
    "UdpSender",
    "check_keys",
    "encode",
    "generate_key_file",
    "generate_keys",
    "key_for",
    "load_key_file",
    "load_keys",
    "suggested_window",
]
