"""The datagram format: chunking, header round trip, tag, limits."""

from __future__ import annotations

import pytest
import torch

from byzance.distributed.udp import datagram as dg


def test_chunks_tile_the_gradient_exactly_and_carry_its_bytes() -> None:
    grad = torch.arange(1000, dtype=torch.float32)
    key = b"k" * 32
    datagrams = dg.encode(grad, worker=3, step=7, key=key, session=9, datagram_bytes=512)
    per = dg.coordinates_per_datagram(512)
    assert per == (512 - 72) // 4 == 110
    assert len(datagrams) == dg.chunk_count(1000, 512) == 10
    covered = []
    for i, d in enumerate(datagrams):
        wire = dg.to_bytes(d)
        assert len(wire) <= 512
        h = dg.parse_header(wire, len(wire))
        assert h == dg.Header(
            worker=3, session=9, step=7, index=i, count=10, dim=1000, length=h.length
        )
        start, stop = dg.chunk_bounds(1000, 10, i)
        assert h.length == stop - start
        payload = torch.frombuffer(
            bytearray(wire[dg.HEADER.size : -dg.TAG_SIZE]), dtype=torch.float32
        )
        assert torch.equal(payload, grad[start:stop])
        assert dg.verify(wire, len(wire), key)
        covered.extend(range(start, stop))
    assert covered == list(range(1000))


def test_any_flipped_bit_or_other_key_fails_the_tag() -> None:
    wire = bytearray(dg.to_bytes(dg.encode(torch.ones(50), worker=0, step=0, key=b"a" * 16)[0]))
    assert dg.verify(wire, len(wire), b"a" * 16)
    assert not dg.verify(wire, len(wire), b"b" * 16)
    for position in (5, dg.HEADER.size + 3, len(wire) - 1):
        forged = bytearray(wire)
        forged[position] ^= 1
        assert not dg.verify(forged, len(forged), b"a" * 16)


def test_malformed_headers_parse_to_none() -> None:
    wire = dg.to_bytes(dg.encode(torch.ones(50), worker=0, step=0, key=b"a" * 16)[0])
    assert dg.parse_header(wire, len(wire)) is not None
    assert dg.parse_header(wire[:30], 30) is None  # shorter than header + tag
    assert dg.parse_header(wire[:-4], len(wire) - 4) is None  # length field disagrees with size
    assert dg.parse_header(b"XX" + wire[2:], len(wire)) is None  # magic
    bad_index = bytearray(wire)
    dg.HEADER.pack_into(bad_index, 0, b"BZ", 1, 0, 0, 0, 0, 5, 1, 50, 50)  # index >= count
    assert dg.parse_header(bad_index, len(bad_index)) is None


def test_sizes_and_fields_are_checked() -> None:
    assert dg.coordinates_per_datagram(dg.MTU_DATAGRAM) == 350
    assert dg.coordinates_per_datagram(dg.LOOPBACK_DATAGRAM) == 14_982
    with pytest.raises(dg.DatagramError, match="largest UDP payload"):
        dg.coordinates_per_datagram(70_000)
    with pytest.raises(dg.DatagramError, match="step"):
        dg.encode(torch.ones(3), worker=0, step=-1, key=b"a" * 16)
    with pytest.raises(dg.DatagramError, match="coordinates"):
        dg.encode(torch.ones(0), worker=0, step=0, key=b"a" * 16)


def test_non_float32_gradients_are_sent_as_float32() -> None:
    grad = torch.tensor([[1.5, -2.0], [3.25, 4.0]], dtype=torch.float64)
    wire = dg.to_bytes(dg.encode(grad, worker=0, step=0, key=b"a" * 16)[0])
    payload = torch.frombuffer(bytearray(wire[dg.HEADER.size : -dg.TAG_SIZE]), dtype=torch.float32)
    assert payload.tolist() == [1.5, -2.0, 3.25, 4.0]
