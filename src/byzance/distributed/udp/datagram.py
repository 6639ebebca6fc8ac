"""The wire format of one gradient chunk: a fixed header, float32 coordinates, an HMAC tag.

One datagram carries a contiguous run of coordinates of one worker's
flattened gradient for one step::

    header (40 bytes, little-endian, struct ``<2sBBIQQIIII``)
        magic      b"BZ"
        version    1
        flags      0 (reserved)
        worker     uint32   who sends (selects the HMAC key)
        session    uint64   the run (a datagram of another run is rejected)
        step       uint64   the training step
        index      uint32   chunk index, 0 <= index < count
        count      uint32   chunks in this gradient
        dim        uint32   d, coordinates in the whole gradient
        length     uint32   coordinates in this chunk
    payload  length x float32, little-endian
    tag      32 bytes: HMAC-SHA256(key[worker], header + payload)

Flow control (optional): for every authentic datagram of a step it accepts
(or recognizes as a duplicate), the receiver answers the sender's address with
an acknowledgement ``<2sBBIQI``: magic b"BA", version, 0, worker, step, and
the number of that worker's datagrams of that step it has read so far. A
sender with a window keeps at most that many datagrams unacknowledged, so n
senders cannot overflow the receiver's socket buffer while it is not
scheduled. Acknowledgements are not authenticated: a forged one can only make
a sender send faster, i.e. cause losses, which anyone able to send datagrams
to the receiver can cause anyway by flooding it.

The chunking is implied by (dim, count): every chunk holds
``c = ceil(dim / count)`` coordinates, chunk ``i`` covers
``[i c, min(dim, (i + 1) c))``. The sender picks count from the largest
datagram it may send; the receiver checks that ``length`` is exactly the
chunk's size, so a datagram cannot write outside its chunk.

Sizes: a UDP payload is at most 65,507 bytes over IPv4; on loopback (MTU
65,536) the default :data:`LOOPBACK_DATAGRAM` of 60,000 bytes (14,984
coordinates) fits in one IP packet. Across a real network, use
:data:`MTU_DATAGRAM` (1,472 bytes = 1,500 Ethernet MTU - 20 IPv4 - 8 UDP;
352 coordinates) so that no datagram is IP-fragmented: a fragmented datagram
is lost whole when any fragment is, which multiplies the loss rate.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import operator
import struct
import sys
from dataclasses import dataclass

import torch

from byzance.errors import ByzanceError

MAGIC = b"BZ"
VERSION = 1
HEADER = struct.Struct("<2sBBIQQIIII")
TAG_SIZE = hashlib.sha256().digest_size
OVERHEAD = HEADER.size + TAG_SIZE
MAX_UDP_PAYLOAD = 65_507
LOOPBACK_DATAGRAM = 60_000
MTU_DATAGRAM = 1_472
COORDINATE_BYTES = 4
ACK_MAGIC = b"BA"
ACK = struct.Struct("<2sBBIQI")

#: A datagram as the buffers that make it up (header, payload view, tag): sent with
#: ``socket.sendmsg`` without copying the payload out of the encoded gradient.
Datagram = tuple[bytes, memoryview, bytes]


class DatagramError(ByzanceError):
    """A datagram size or header field is out of range."""


@dataclass(frozen=True)
class Header:
    """The parsed header fields (see the module docstring)."""

    worker: int
    session: int
    step: int
    index: int
    count: int
    dim: int
    length: int


def coordinates_per_datagram(datagram_bytes: int) -> int:
    """Most float32 coordinates one datagram of ``datagram_bytes`` bytes can carry."""
    if not OVERHEAD + COORDINATE_BYTES <= datagram_bytes <= MAX_UDP_PAYLOAD:
        raise DatagramError(
            f"datagram_bytes must be between {OVERHEAD + COORDINATE_BYTES} (header, one "
            f"coordinate, tag) and {MAX_UDP_PAYLOAD} (the largest UDP payload over IPv4); "
            f"got {datagram_bytes}. Use {LOOPBACK_DATAGRAM} on loopback, {MTU_DATAGRAM} "
            "across an Ethernet network."
        )
    return (datagram_bytes - OVERHEAD) // COORDINATE_BYTES


def chunk_count(dim: int, datagram_bytes: int) -> int:
    """Datagrams needed for ``dim`` coordinates."""
    return math.ceil(dim / coordinates_per_datagram(datagram_bytes))


def chunk_bounds(dim: int, count: int, index: int) -> tuple[int, int]:
    """Coordinates ``[start, stop)`` of chunk ``index`` of ``count`` (may be empty if invalid)."""
    size = -(-dim // count)
    start = index * size
    return start, min(dim, start + size)


def gradient_bytes(grad: torch.Tensor) -> bytes:
    """The (d,) gradient as little-endian float32 bytes: one copy, no loop over coordinates."""
    flat = grad.detach().reshape(-1).to(device="cpu", dtype=torch.float32).contiguous()
    array = flat.numpy()
    if (
        sys.byteorder != "little"
    ):  # pragma: no cover - every platform torch ships for is little-endian
        array = array.byteswap()
    return array.tobytes()


def encode(
    grad: torch.Tensor,
    *,
    worker: int,
    step: int,
    key: bytes,
    session: int = 0,
    datagram_bytes: int = LOOPBACK_DATAGRAM,
) -> list[Datagram]:
    """Split a gradient (any shape, flattened to d) into authenticated datagrams.

    Returns one :data:`Datagram` per chunk, in chunk order; the payloads are
    views of one bytes buffer holding the whole gradient.
    """
    dim = grad.numel()
    if dim == 0 or dim >= 2**32:
        raise DatagramError(f"a gradient must have 1 to 2**32 - 1 coordinates; got {dim}.")
    worker = _check_uint("worker", worker, 32)
    step = _check_uint("step", step, 64)
    session = _check_uint("session", session, 64)
    payload = memoryview(gradient_bytes(grad))
    count = chunk_count(dim, datagram_bytes)
    out: list[Datagram] = []
    for index in range(count):
        start, stop = chunk_bounds(dim, count, index)
        header = HEADER.pack(
            MAGIC, VERSION, 0, worker, session, step, index, count, dim, stop - start
        )
        body = payload[start * COORDINATE_BYTES : stop * COORDINATE_BYTES]
        mac = hmac.new(key, header, hashlib.sha256)
        mac.update(body)
        out.append((header, body, mac.digest()))
    return out


def to_bytes(datagram: Datagram) -> bytes:
    """The datagram as one bytes object, as it travels on the wire."""
    return b"".join(datagram)


def parse_header(data: memoryview | bytes, nbytes: int) -> Header | None:
    """The header of a received datagram of ``nbytes`` bytes, or None if it is malformed.

    Checks the structure only (size, magic, version, length consistent with the
    size, chunk index within count); the tag is checked by :func:`verify`.
    """
    if nbytes < OVERHEAD:
        return None
    magic, version, _flags, worker, session, step, index, count, dim, length = HEADER.unpack_from(
        data
    )
    if magic != MAGIC or version != VERSION:
        return None
    if nbytes != OVERHEAD + length * COORDINATE_BYTES or count == 0 or index >= count:
        return None
    start, stop = chunk_bounds(dim, count, index)
    if length == 0 or stop - start != length:
        return None
    return Header(worker, session, step, index, count, dim, length)


def verify(data: memoryview | bytes, nbytes: int, key: bytes) -> bool:
    """Whether the last 32 bytes of ``data[:nbytes]`` are the HMAC-SHA256 of the rest (constant time)."""
    view = memoryview(data)[:nbytes]
    expected = hmac.new(key, view[:-TAG_SIZE], hashlib.sha256).digest()
    return hmac.compare_digest(expected, view[-TAG_SIZE:])


def _check_uint(name: str, value: int, bits: int) -> int:
    try:
        number = operator.index(value)
    except TypeError:
        number = -1
    if isinstance(value, bool) or not 0 <= number < 2**bits:
        raise DatagramError(f"{name} must be an integer in [0, 2**{bits}); got {value!r}.")
    return number


def pack_ack(worker: int, step: int, arrivals: int) -> bytes:
    """The acknowledgement of ``arrivals`` datagrams of ``worker`` for ``step``."""
    return ACK.pack(ACK_MAGIC, VERSION, 0, worker, step, arrivals)


def parse_ack(data: bytes) -> tuple[int, int, int] | None:
    """``(worker, step, arrivals)`` of an acknowledgement, or None if it is not one."""
    if len(data) != ACK.size:
        return None
    magic, version, _flags, worker, step, arrivals = ACK.unpack(data)
    if magic != ACK_MAGIC or version != VERSION:
        return None
    return worker, step, arrivals
