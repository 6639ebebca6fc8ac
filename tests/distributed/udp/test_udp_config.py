"""The [udp] table: validation, and the senders and receivers it builds."""

from __future__ import annotations

import tomllib

import pytest
import torch

from byzance.distributed.udp import LossModel, UdpConfig, UdpConfigError, generate_key_file
from byzance.distributed.udp.datagram import DatagramError


def test_a_toml_table_builds_a_working_sender_and_receiver(tmp_path) -> None:
    generate_key_file(tmp_path / "keys.json", 3)
    text = f"""
    [udp]
    key_file = "{tmp_path / "keys.json"}"
    datagram_bytes = 1472
    window = "auto"
    deadline_s = 0.5
    session = 12
    [udp.loss]
    duplicate = 0.5
    seed = 3
    """
    config = UdpConfig.from_mapping(tomllib.loads(text)["udp"])
    assert config.loss == LossModel(duplicate=0.5, seed=3)
    grads = torch.randn(3, 2000)
    with config.receiver(2000) as rx:
        for w in range(3):
            with config.sender(w, senders_per_receiver=3) as tx:
                assert tx.window is not None and tx.window >= 1 and tx.session == 12
                tx.send(0, grads[w], rx.address)
        got = rx.collect(0, timeout=config.deadline_s * 10)
    assert torch.equal(got.values, grads)
    assert got.stats.rejected["duplicate"] > 0


def test_bad_tables_say_what_is_wrong(tmp_path) -> None:
    with pytest.raises(UdpConfigError, match="did you mean 'deadline_s'"):
        UdpConfig.from_mapping({"key_env": "K", "deadline": 1.0})
    with pytest.raises(UdpConfigError, match="exactly one of key_file"):
        UdpConfig.from_mapping({})
    with pytest.raises(UdpConfigError, match="window"):
        UdpConfig.from_mapping({"key_env": "K", "window": -3})
    with pytest.raises(UdpConfigError, match=r"\[udp.loss\]"):
        UdpConfig.from_mapping({"key_env": "K", "loss": {"dorp": 0.1}})
    with pytest.raises(DatagramError, match="datagram_bytes"):
        UdpConfig.from_mapping({"key_env": "K", "datagram_bytes": 100_000})
