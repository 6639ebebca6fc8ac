"""Bad inputs to the UDP keys: each row is a call and its outcome.

Outcomes: ``clear error`` (the exception type and a fragment of its message),
``refused`` (a forged datagram rejected and counted), ``survived`` (the call
works and leaves things safe: a private key file, a warning).
"""

from __future__ import annotations

import json
import re
import socket
import stat
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from byzance.cli import app
from byzance.distributed.udp import (
    KeyConfigError,
    KeyFilePermissionWarning,
    UdpReceiver,
    UdpSender,
    encode,
    generate_key_file,
    generate_keys,
    load_key_file,
    load_keys,
)
from byzance.distributed.udp.datagram import to_bytes

K0 = b"\x01" * 32
K1 = b"\x02" * 32
D = 8


def _key_file(path: Path, content: str | bytes, mode: int = 0o600) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    path.chmod(mode)
    return path


# -- clear errors: (id, call(tmp_path), exception type, message fragment) -------------
CLEAR_ERRORS: list[tuple[str, Callable[[Path], object], type[Exception], str]] = [
    (
        "receiver-empty-key",
        lambda p: UdpReceiver({0: b""}, D),
        KeyConfigError,
        "0 bytes; at least 16",
    ),
    ("receiver-short-key", lambda p: UdpReceiver({0: b"k" * 15}, D), KeyConfigError, "15 bytes"),
    ("sender-empty-key", lambda p: UdpSender(0, b""), KeyConfigError, "0 bytes; at least 16"),
    (
        "receiver-shared-key",
        lambda p: UdpReceiver({0: K0, 1: K0}, D),
        KeyConfigError,
        "share one key",
    ),
    (
        "file-shared-key",
        lambda p: load_key_file(
            _key_file(p / "k.json", json.dumps({"0": K0.hex(), "1": K0.hex()}))
        ),
        KeyConfigError,
        "workers 0 and 1 share one key",
    ),
    (
        "file-same-worker-twice",
        lambda p: load_key_file(
            _key_file(p / "k.json", json.dumps({"0": K0.hex(), "00": K1.hex()}))
        ),
        KeyConfigError,
        "'0' and '00' both name worker 0",
    ),
    ("file-is-a-directory", lambda p: load_key_file(p), KeyConfigError, "is a directory"),
    (
        "file-is-binary",
        lambda p: load_key_file(_key_file(p / "k.bin", b"\xff\xfe\x00\x81" * 8)),
        KeyConfigError,
        "not UTF-8 text",
    ),
    (
        "file-world-readable-refused",
        lambda p: load_keys(
            file=_key_file(p / "k.json", json.dumps({"0": K0.hex()}), 0o644), permissions="refuse"
        ),
        KeyConfigError,
        "mode 0644: group or others",
    ),
    ("generate-zero-workers", lambda p: generate_key_file(p / "k.json", 0), KeyConfigError, ">= 1"),
    ("generate-no-ids", lambda p: generate_keys([]), KeyConfigError, "at least one"),
    ("generate-same-id-twice", lambda p: generate_keys([1, 1]), KeyConfigError, "twice"),
    (
        "generate-into-a-directory",
        lambda p: generate_key_file(p, 2, overwrite=True),
        KeyConfigError,
        "is a directory",
    ),
    ("receiver-string-ids", lambda p: UdpReceiver({"0": K0}, D), KeyConfigError, "'0' is a str"),
    ("receiver-bool-id", lambda p: UdpReceiver({True: K0}, D), KeyConfigError, "is a bool"),
    ("receiver-negative-id", lambda p: UdpReceiver({-1: K0}, D), KeyConfigError, ">= 0"),
    ("receiver-no-keys", lambda p: UdpReceiver({}, D), KeyConfigError, "no keys"),
    (
        "receiver-hex-not-bytes",
        lambda p: UdpReceiver({0: K0.hex()}, D),
        KeyConfigError,
        "is a str, not bytes",
    ),
    ("sender-string-id", lambda p: UdpSender("0", K0), KeyConfigError, "'0' is a str"),
]


@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [row[1:] for row in CLEAR_ERRORS],
    ids=[r[0] for r in CLEAR_ERRORS],
)
def test_clear_error(tmp_path, call, error, fragment) -> None:
    with pytest.raises(error, match=re.escape(fragment)):
        call(tmp_path)


def test_cli_zero_workers_is_a_clear_error_and_writes_nothing(tmp_path) -> None:
    result = CliRunner().invoke(
        app, ["udp-keys", "--workers", "0", "--out", str(tmp_path / "k.json")]
    )
    assert result.exit_code == 2
    assert "error:" in result.output and ">= 1" in result.output
    assert not (tmp_path / "k.json").exists()


# -- refused: forged datagrams are rejected and counted ----------------------------------
def _rejected(keys: dict[int, bytes], datagrams: list[bytes]) -> dict[str, int]:
    with UdpReceiver(keys, D) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        for d in datagrams:
            raw.sendto(d, rx.address)
        deadline = time.monotonic() + 5.0
        while rx.datagrams_seen < len(datagrams) and time.monotonic() < deadline:
            time.sleep(0.002)
        got = rx.collect(0, timeout=0.05)
    assert 0 in got.stats.crashed  # nothing of the forgery was accepted as worker 0's
    return {k: v for k, v in got.stats.rejected.items() if v}


REFUSED = [
    ("forged-with-empty-key", b""),
    ("forged-with-another-workers-key", K1),
]


@pytest.mark.parametrize("forging_key", [r[1] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_refused_forgery(forging_key: bytes) -> None:
    forged = [to_bytes(d) for d in encode(torch.ones(D), worker=0, step=0, key=forging_key)]
    assert _rejected({0: K0, 1: K1}, forged) == {"bad_tag": len(forged)}


# -- survived ------------------------------------------------------------------------
def test_survived_overwrite_of_a_world_readable_file_is_private(tmp_path) -> None:
    path = _key_file(tmp_path / "k.json", json.dumps({"0": K0.hex()}), 0o644)
    keys = generate_key_file(path, 3, overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key_file(path) == keys and K0 not in keys.values()
    assert [p.name for p in tmp_path.iterdir()] == ["k.json"]  # no temporary file left


def test_survived_cli_overwrite_of_a_world_readable_file_is_private(tmp_path) -> None:
    path = _key_file(tmp_path / "k.json", json.dumps({"0": K0.hex()}), 0o644)
    result = CliRunner().invoke(
        app, ["udp-keys", "--workers", "2", "--out", str(path), "--overwrite"]
    )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(load_key_file(path)) == [0, 1]


def test_survived_world_readable_file_loads_with_a_warning(tmp_path) -> None:
    path = _key_file(tmp_path / "k.json", json.dumps({"0": K0.hex()}), 0o640)
    with pytest.warns(KeyFilePermissionWarning, match="chmod 600"):
        assert load_keys(file=path) == {0: K0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_key_file(path, permissions="ignore") == {0: K0}
