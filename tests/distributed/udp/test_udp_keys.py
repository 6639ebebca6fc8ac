"""Key files and variables: round trip and the errors that say what to do."""

from __future__ import annotations

import json
import stat

import pytest

from byzance.distributed.udp import (
    KeyConfigError,
    generate_key_file,
    key_for,
    load_key_file,
    load_keys,
)


def test_generated_file_round_trips_and_is_private(tmp_path) -> None:
    path = tmp_path / "keys.json"
    keys = generate_key_file(path, 4)
    assert sorted(keys) == [0, 1, 2, 3] and all(len(k) == 32 for k in keys.values())
    assert len(set(keys.values())) == 4
    assert load_key_file(path) == keys
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(KeyConfigError, match="already exists"):
        generate_key_file(path, 4)
    assert generate_key_file(path, [7, 9], overwrite=True).keys() == {7, 9}


def test_keys_from_an_environment_variable(monkeypatch) -> None:
    monkeypatch.setenv("BYZ_KEYS", json.dumps({"2": "ab" * 16}))
    assert load_keys(env="BYZ_KEYS") == {2: bytes.fromhex("ab" * 16)}
    monkeypatch.delenv("BYZ_KEYS")
    with pytest.raises(KeyConfigError, match="BYZ_KEYS is not set"):
        load_keys(env="BYZ_KEYS")


def test_clear_errors(tmp_path) -> None:
    with pytest.raises(KeyConfigError, match="does not exist; create one"):
        load_keys(file=tmp_path / "missing.json")
    short = tmp_path / "short.json"
    short.write_text(json.dumps({"0": "abcd"}))
    short.chmod(0o600)
    with pytest.raises(KeyConfigError, match="worker 0 has 2 bytes; at least 16"):
        load_key_file(short)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    broken.chmod(0o600)
    with pytest.raises(KeyConfigError, match="not valid JSON"):
        load_key_file(broken)
    bad_hex = tmp_path / "hex.json"
    bad_hex.write_text(json.dumps({"0": "zz" * 16}))
    bad_hex.chmod(0o600)
    with pytest.raises(KeyConfigError, match="hex string"):
        load_key_file(bad_hex)
    with pytest.raises(KeyConfigError, match="no key for worker 5; the keys cover workers"):
        key_for({0: b"a" * 16}, 5)
    with pytest.raises(KeyConfigError, match="exactly one"):
        load_keys()
