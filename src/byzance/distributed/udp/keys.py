"""Per-worker HMAC keys: loaded from a JSON file or an environment variable, generated for tests.

A key file maps worker ids to hex-encoded keys::

    {"0": "3f9a...", "1": "c2d1...", ...}

The environment variable form holds the same JSON text (for launchers that
pass secrets through the environment). Every key is at least
:data:`MIN_KEY_BYTES` bytes; :func:`generate_key_file` writes 32-byte keys
from :func:`secrets.token_bytes`, readable by the owner only (mode 0600, also
when replacing a file: written to a private temporary file, then renamed over it).

Refused, with a :class:`KeyConfigError` that says why: keys shorter than
:data:`MIN_KEY_BYTES` (an empty key would let anyone sign), one key shared by
two workers (either could sign as the other), two entries naming the same
worker (``"0"`` and ``"00"``), worker ids that are not non-negative integers
(in a mapping given to :class:`~byzance.distributed.udp.UdpReceiver` too), a
path that is a directory or not UTF-8 text, and an empty key set. A key file
readable by group or others is loaded with a :class:`KeyFilePermissionWarning`
(as ssh warns about private keys), or refused with ``permissions="refuse"``.

Who holds which key: worker w needs only its own key (it signs); a receiver
needs the keys of every worker it accepts gradients from. A Byzantine worker
can lie in its own datagrams but, without another worker's key, cannot
forge datagrams in that worker's name.
"""

from __future__ import annotations

import json
import operator
import os
import secrets
import stat
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from byzance.errors import ByzanceError

MIN_KEY_BYTES = 16
DEFAULT_KEY_BYTES = 32


class KeyConfigError(ByzanceError):
    """A key file or variable is missing, malformed, or lacks a worker's key."""


class KeyFilePermissionWarning(UserWarning):
    """A key file is readable or writable by group or others (``chmod 600`` it)."""


Permissions = Literal["warn", "refuse", "ignore"]


def worker_id(worker: object, source: str) -> int:
    """``worker`` as a worker id (an integer >= 0, not a bool or a string), or a clear error."""
    if isinstance(worker, bool | str | bytes):
        raise KeyConfigError(
            f"{source}: worker id {worker!r} is a {type(worker).__name__}; worker ids are "
            "integers >= 0 (int(...) them; only key files and variables hold them as strings)."
        )
    try:
        wid = operator.index(worker)  # type: ignore[arg-type]
    except TypeError:
        raise KeyConfigError(
            f"{source}: worker id {worker!r} is not an integer; worker ids are integers >= 0."
        ) from None
    if wid < 0:
        raise KeyConfigError(f"{source}: worker ids must be >= 0; got {wid}.")
    return wid


def check_key(worker: int, key: object, source: str) -> bytes:
    """``key`` if it is bytes of at least :data:`MIN_KEY_BYTES`, else a clear error."""
    if not isinstance(key, bytes | bytearray):
        raise KeyConfigError(
            f"{source}: the key of worker {worker} is a {type(key).__name__}, not bytes "
            "(decode hex keys with bytes.fromhex, or load them with load_keys)."
        )
    if len(key) < MIN_KEY_BYTES:
        raise KeyConfigError(
            f"{source}: the key of worker {worker} has {len(key)} bytes; at least "
            f"{MIN_KEY_BYTES} are needed (generate_key_file writes {DEFAULT_KEY_BYTES})."
        )
    return bytes(key)


def check_keys(keys: Mapping[object, object], source: str = "keys") -> dict[int, bytes]:
    """The mapping as ``{int worker: bytes key}``, refusing short keys, bad ids and shared keys."""
    if not isinstance(keys, Mapping):
        raise KeyConfigError(
            f"{source}: expected a mapping of worker ids to keys; got {type(keys).__name__}."
        )
    if not keys:
        raise KeyConfigError(f"{source}: no keys; give the key of at least one worker.")
    checked: dict[int, bytes] = {}
    owner: dict[bytes, int] = {}
    for worker, key in keys.items():
        wid = worker_id(worker, source)
        if wid in checked:
            raise KeyConfigError(f"{source}: worker {wid} appears twice ({worker!r}).")
        key = check_key(wid, key, source)
        if key in owner:
            raise KeyConfigError(
                f"{source}: workers {owner[key]} and {wid} share one key, so either could "
                "sign as the other; give every worker its own key (generate_key_file)."
            )
        owner[key] = wid
        checked[wid] = key
    return checked


def generate_keys(
    workers: int | Iterable[int], *, nbytes: int = DEFAULT_KEY_BYTES
) -> dict[int, bytes]:
    """Fresh random keys for ``workers`` (a count, meaning ids 0..n-1, or the ids)."""
    if nbytes < MIN_KEY_BYTES:
        raise KeyConfigError(f"keys must be at least {MIN_KEY_BYTES} bytes; got nbytes={nbytes}.")
    if isinstance(workers, int) and not isinstance(workers, bool):
        if workers < 1:
            raise KeyConfigError(f"the number of workers must be >= 1; got {workers}.")
        ids: Iterable[int] = range(workers)
    else:
        ids = [worker_id(w, "workers") for w in workers]
        if not ids:
            raise KeyConfigError("no workers given; keys are generated for at least one.")
        if len(set(ids)) != len(ids):
            raise KeyConfigError(f"workers {sorted(ids)} name a worker twice.")
    keys = {w: secrets.token_bytes(nbytes) for w in ids}
    return check_keys(keys, "generate_keys")  # 2**-128 odds of a repeat, but never silently


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
    if target.is_dir():
        raise KeyConfigError(f"key file {target} is a directory; give the path of a file.")
    if target.exists() and not overwrite:
        raise KeyConfigError(
            f"key file {target} already exists; pass overwrite=True to replace it (every "
            "worker and the server must then use the new file)."
        )
    keys = generate_keys(workers, nbytes=nbytes)
    target.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file with mode 0600 whatever the umask; os.replace swaps it in
    # atomically, so a replaced file never holds the fresh keys under its old, looser mode.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(dumps_keys(keys) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
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
    spelled: dict[int, str] = {}
    for worker, value in raw.items():
        try:
            wid = int(worker)
            key = bytes.fromhex(value)
        except (TypeError, ValueError):
            raise KeyConfigError(
                f"{source}: entry {worker!r}: {value!r} is not a worker id mapped to a hex string."
            ) from None
        if wid in spelled:
            raise KeyConfigError(
                f"{source}: entries {spelled[wid]!r} and {worker!r} both name worker {wid}; "
                "keep one."
            )
        spelled[wid] = worker
        keys[wid] = key
    return check_keys(keys, source)


def load_key_file(
    path: str | os.PathLike[str], *, permissions: Permissions = "warn"
) -> dict[int, bytes]:
    """Keys from a JSON key file.

    ``permissions``: what a file readable or writable by group or others
    does: ``"warn"`` (a :class:`KeyFilePermissionWarning`), ``"refuse"`` (a
    :class:`KeyConfigError`) or ``"ignore"``.
    """
    if permissions not in ("warn", "refuse", "ignore"):
        raise KeyConfigError(
            f"permissions must be 'warn', 'refuse' or 'ignore'; got {permissions!r}."
        )
    target = Path(path)
    try:
        mode = target.stat().st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(target)
        data = target.read_bytes()
    except FileNotFoundError:
        raise KeyConfigError(
            f"key file {target} does not exist; create one with "
            "byzance.distributed.udp.generate_key_file(path, n_workers) and give it to every process."
        ) from None
    except IsADirectoryError:
        raise KeyConfigError(
            f"key file {target} is a directory; give the path of the JSON key file."
        ) from None
    except OSError as err:
        raise KeyConfigError(f"key file {target} could not be read: {err.strerror}.") from None
    if stat.S_IMODE(mode) & 0o077 and permissions != "ignore":
        message = (
            f"key file {target} has mode {stat.S_IMODE(mode):04o}: group or others may read "
            f"or change the keys; run chmod 600 {target}."
        )
        if permissions == "refuse":
            raise KeyConfigError(message)
        warnings.warn(message, KeyFilePermissionWarning, stacklevel=2)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyConfigError(
            f"key file {target} is not UTF-8 text (a binary file?); expected the JSON "
            "written by generate_key_file."
        ) from None
    return parse_keys(text, f"key file {target}")


def load_keys(
    *,
    file: str | os.PathLike[str] | None = None,
    env: str | None = None,
    permissions: Permissions = "warn",
) -> dict[int, bytes]:
    """Keys from a file, or from the environment variable named ``env`` (exactly one).

    ``permissions``: see :func:`load_key_file`.
    """
    if (file is None) == (env is None):
        raise KeyConfigError(
            "give exactly one of file= (a JSON key file) or env= (a variable name)."
        )
    if file is not None:
        return load_key_file(file, permissions=permissions)
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
