"""Per-worker HMAC keys: loaded from a JSON file or an environment variable, generated for tests.

A key file maps worker ids to hex-encoded keys::

    {"0": "3f9a...", "1": "c2d1...", ...}

The environment variable form holds the same JSON text (for launchers that
pass secrets through the environment). Every key is at least
:data:`MIN_KEY_BYTES` bytes; :func:`generate_key_file` writes 32-byte keys
from :func:`secrets.token_bytes`, readable by the owner only.

Who holds which key: worker w needs only its own key (it signs); a receiver
needs the keys of every worker it accepts gradients from. A Byzantine worker
can lie in its own datagrams but, without another worker's key, cannot
forge datagrams in that worker's name.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

from byzance.errors import ByzanceError

MIN_KEY_BYTES = 16
DEFAULT_KEY_BYTES = 32


class KeyConfigError(ByzanceError):
    """A key file or variable is missing, malformed, or lacks a worker's key."""


def generate_keys(
    workers: int | Iterable[int], *, nbytes: int = DEFAULT_KEY_BYTES
) -> dict[int, bytes]:
    """Fresh random keys for ``workers`` (a count, meaning ids 0..n-1, or the ids)."""
    if nbytes < MIN_KEY_BYTES:
        raise KeyConfigError(f"keys must be at least {MIN_KEY_BYTES} bytes; got nbytes={nbytes}.")
    ids = range(workers) if isinstance(workers, int) else workers
    return {int(w): secrets.token_bytes(nbytes) for w in ids}


def dumps_keys(keys: Mapping[int, bytes]) -> str:
    """The JSON text of a key mapping (worker id -> hex key)."""
    return json.dumps({str(w): k.hex() for w, k in sorted(keys.items())}, indent=1)


def generate_key_file(
    path: str | os.PathLike[str],
    workers: int | Iterable[int],
    *,
    nbytes: int = DEFAULT_KEY_BYTES,
    overwrite: bool = False,
) -> dict[int, bytes]:
    """Write fresh keys for ``workers`` to ``path`` (mode 0600) and return them."""
    target = Path(path)
    if target.exists() and not overwrite:
        raise KeyConfigError(
            f"key file {target} already exists; pass overwrite=True to replace it (every "
            "worker and the server must then use the new file)."
        )
    keys = generate_keys(workers, nbytes=nbytes)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(dumps_keys(keys) + "\n")
    return keys


def parse_keys(text: str, source: str) -> dict[int, bytes]:
    """Parse the JSON text of a key mapping; ``source`` names where it came from in errors."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise KeyConfigError(
            f"{source}: not valid JSON ({err}); expected an object mapping worker ids to hex "
            'keys, e.g. {"0": "3f9a..."} (generate one with generate_key_file).'
        ) from None
    if not isinstance(raw, dict) or not raw:
        raise KeyConfigError(
            f"{source}: expected a non-empty JSON object mapping worker ids to hex keys."
        )
    keys: dict[int, bytes] = {}
    for worker, value in raw.items():
        try:
            wid = int(worker)
            key = bytes.fromhex(value)
        except (TypeError, ValueError):
            raise KeyConfigError(
                f"{source}: entry {worker!r}: {value!r} is not a worker id mapped to a hex string."
            ) from None
        if wid < 0:
            raise KeyConfigError(f"{source}: worker ids must be >= 0; got {wid}.")
        if len(key) < MIN_KEY_BYTES:
            raise KeyConfigError(
                f"{source}: the key of worker {wid} has {len(key)} bytes; at least "
                f"{MIN_KEY_BYTES} are needed (generate_key_file writes {DEFAULT_KEY_BYTES})."
            )
        keys[wid] = key
    return keys


def load_key_file(path: str | os.PathLike[str]) -> dict[int, bytes]:
    """Keys from a JSON key file."""
    target = Path(path)
    try:
        text = target.read_text()
    except FileNotFoundError:
        raise KeyConfigError(
            f"key file {target} does not exist; create one with "
            "byzance.distributed.udp.generate_key_file(path, n_workers) and give it to every process."
        ) from None
    return parse_keys(text, f"key file {target}")


def load_keys(
    *, file: str | os.PathLike[str] | None = None, env: str | None = None
) -> dict[int, bytes]:
    """Keys from a file, or from the environment variable named ``env`` (exactly one)."""
    if (file is None) == (env is None):
        raise KeyConfigError(
            "give exactly one of file= (a JSON key file) or env= (a variable name)."
        )
    if file is not None:
        return load_key_file(file)
    assert env is not None
    text = os.environ.get(env)
    if text is None:
        raise KeyConfigError(
            f"environment variable {env} is not set; it must hold the JSON key mapping "
            "(the content of a file written by generate_key_file)."
        )
    return parse_keys(text, f"environment variable {env}")


def key_for(keys: Mapping[int, bytes], worker: int) -> bytes:
    """The key of ``worker``, or an error naming the workers that have one."""
    try:
        return keys[worker]
    except KeyError:
        known = sorted(keys)
        raise KeyConfigError(
            f"no key for worker {worker}; the keys cover workers {known[:20]}"
            f"{'...' if len(known) > 20 else ''}. Regenerate the key file for every worker."
        ) from None
