"""The UDP transport's settings, as a TOML table, and the senders and receivers they build.

A run config can hold, for example::

    [udp]
    key_file = "keys.json"        # or key_env = "BYZANCE_UDP_KEYS"
    datagram_bytes = 60000        # 1472 across an Ethernet network
    window = "auto"               # flow control: "auto", a number, or 0 (none)
    deadline_s = 1.0              # collect timeout per step
    receive_window_steps = 2
    rcvbuf = 4194304
    rate_bytes_per_s = 0          # 0: unpaced
    session = 0                   # a run id every process agrees on
    [udp.loss]                    # injected loss, for experiments
    drop = 0.1
    seed = 0

``UdpConfig.from_mapping(config["udp"])`` validates it (an unknown key is an
error naming the known ones).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from byzance.distributed.udp.datagram import LOOPBACK_DATAGRAM, coordinates_per_datagram
from byzance.distributed.udp.keys import key_for, load_keys
from byzance.distributed.udp.receiver import DEFAULT_RCVBUF, Address, UdpReceiver
from byzance.distributed.udp.sender import UdpSender, suggested_window
from byzance.errors import ByzanceError, closest
from byzance.runs.loss_model import LossModel

RMEM_MAX = Path("/proc/sys/net/core/rmem_max")


class UdpConfigError(ByzanceError):
    """A key or value of the ``[udp]`` table is invalid."""


@dataclass(frozen=True)
class UdpConfig:
    """Settings of the UDP gradient transport (see the module docstring)."""

    key_file: str | None = None
    key_env: str | None = None
    datagram_bytes: int = LOOPBACK_DATAGRAM
    window: int | str = "auto"
    deadline_s: float = 1.0
    receive_window_steps: int = 2
    rcvbuf: int = DEFAULT_RCVBUF
    rate_bytes_per_s: float = 0.0
    session: int = 0
    loss: LossModel = field(default_factory=LossModel)

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> UdpConfig:
        """Validate a ``[udp]`` table (a dict from TOML)."""
        known = {f.name for f in fields(cls)}
        for key in table:
            if key not in known:
                match = closest(key, known)
                hint = f" (did you mean {match!r}?)" if match else ""
                raise UdpConfigError(
                    f"[udp]: unknown key {key!r}{hint}; known keys: {', '.join(sorted(known))}."
                )
        values = dict(table)
        loss = values.pop("loss", {})
        if not isinstance(loss, Mapping):
            raise UdpConfigError(
                "[udp.loss] must be a table (drop, duplicate, reorder_window, ...)."
            )
        try:
            values["loss"] = LossModel(**loss)
        except TypeError as err:
            raise UdpConfigError(f"[udp.loss]: {err}") from None
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise :class:`UdpConfigError` on a value out of range."""
        if (self.key_file is None) == (self.key_env is None):
            raise UdpConfigError(
                "[udp]: give exactly one of key_file (a JSON key file) or key_env (the name "
                "of an environment variable holding it)."
            )
        coordinates_per_datagram(self.datagram_bytes)  # raises with the valid range
        if not (self.window == "auto" or (isinstance(self.window, int) and self.window >= 0)):
            raise UdpConfigError(
                f"[udp]: window is 'auto', 0 (none) or a count; got {self.window!r}."
            )
        if self.deadline_s <= 0 or self.receive_window_steps < 1 or self.rcvbuf < 1:
            raise UdpConfigError(
                "[udp]: deadline_s must be > 0, receive_window_steps and rcvbuf >= 1."
            )
        if self.rate_bytes_per_s < 0:
            raise UdpConfigError("[udp]: rate_bytes_per_s must be >= 0 (0: unpaced).")

    def keys(self) -> dict[int, bytes]:
        """The workers' keys, from the file or variable configured."""
        return load_keys(file=self.key_file, env=self.key_env)

    def expected_rcvbuf(self) -> int:
        """What the kernel will grant a receiver asking for ``rcvbuf`` (Linux doubles it, capped)."""
        try:
            cap = int(RMEM_MAX.read_text())
        except (OSError, ValueError):
            return self.rcvbuf
        return 2 * min(self.rcvbuf, cap)

    def sender(self, worker: int, *, senders_per_receiver: int) -> UdpSender:
        """The sender of ``worker``, its flow-control window shared among that many senders."""
        if self.window == "auto":
            window: int | None = suggested_window(
                self.expected_rcvbuf(), senders_per_receiver, self.datagram_bytes
            )
        else:
            window = int(self.window) or None
        return UdpSender(
            worker,
            key_for(self.keys(), worker),
            session=self.session,
            datagram_bytes=self.datagram_bytes,
            loss=self.loss,
            rate_bytes_per_s=self.rate_bytes_per_s or None,
            window=window,
        )

    def receiver(
        self, dim: int, *, bind: Address = ("127.0.0.1", 0), first_step: int = 0
    ) -> UdpReceiver:
        """A receiver for every worker with a key, bound to ``bind``."""
        return UdpReceiver(
            self.keys(),
            dim,
            bind=bind,
            session=self.session,
            window=self.receive_window_steps,
            first_step=first_step,
            rcvbuf=self.rcvbuf,
        )
