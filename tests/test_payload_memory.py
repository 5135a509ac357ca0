"""What the worker holds per input batch: large payloads in their own mappings,
decoded without a copy, one decoded batch alive at a time (benchmark row 6:
worker memory must not creep up with the length of the stream)."""

from __future__ import annotations

import mmap
import os
import pickle
import threading
import weakref

import pytest

from skyctl.remote import flow, wire
from skyctl.remote.wire import Kind


def _pipe_with(data: bytes, piece: int = 4096, close: bool = True) -> int:
    """A pipe's read end, ``data`` written into it in small pieces by a thread (then closed)."""
    r, w = os.pipe()

    def write() -> None:
        for start in range(0, len(data), piece):
            wire.write_all(w, data[start : start + piece])
        if close:
            os.close(w)

    threading.Thread(target=write, daemon=True).start()
    return r


def test_payload_reader_maps_large_reads_and_keeps_small_ones_bytes() -> None:
    big = os.urandom(wire.MAP_PAYLOAD * 3 + 123)
    small = b"abc" * 10
    r = _pipe_with(small + big + small)
    try:
        read = wire.payload_reader(r)
        first = read(len(small))
        assert type(first) is bytes and first == small
        payload = read(len(big))
        assert isinstance(payload, mmap.mmap) and len(payload) == len(big)
        assert payload[:] == big
        assert read(len(small)) == small
        assert read(5) == b""  # EOF between reads
    finally:
        os.close(r)


def test_payload_reader_short_read_at_eof_is_a_protocol_error() -> None:
    n = wire.MAP_PAYLOAD * 2
    frame = wire.encode(Kind.ITEMS_IN, b"P" + b"x" * (n - 1))
    r = _pipe_with(frame[: len(frame) - 10])
    try:
        with pytest.raises(wire.ProtocolError, match="inside a frame"):
            wire.read_frame(wire.payload_reader(r))
    finally:
        os.close(r)


@pytest.mark.parametrize("items", [["line %d" % i for i in range(20000)], [bytes([i % 256]) * 1023 for i in range(200)]])
def test_mapped_batch_round_trips_through_the_inbox(items: list[object]) -> None:
    payload = flow.pack_batch(items, pickle.dumps)
    assert len(payload) >= wire.MAP_PAYLOAD
    r = _pipe_with(wire.encode(Kind.ITEMS_IN, payload))
    try:
        kind, got = wire.read_frame(wire.payload_reader(r))
    finally:
        os.close(r)
    assert kind is Kind.ITEMS_IN and isinstance(got, mmap.mmap)
    grants: list[tuple[int, int]] = []
    box = flow.Inbox(lambda i, b: grants.append((i, b)), pickle.loads, grant_every=(1, 1))
    box.push(got)
    del got
    box.end(None)
    assert list(box.items()) == items
    assert grants == [(len(items), len(payload))]


@pytest.mark.parametrize("payload", [flow.pack_batch(["a", "b"], pickle.dumps), flow.pack_batch([1, "b"], pickle.dumps)])
def test_unpack_batch_takes_any_bytes_like_payload(payload: bytes) -> None:
    want = flow.unpack_batch(payload, pickle.loads)
    assert flow.unpack_batch(bytearray(payload), pickle.loads) == want
    m = mmap.mmap(-1, len(payload))
    m[:] = payload
    assert flow.unpack_batch(m, pickle.loads) == want
    m.close()  # no view of it is left behind


class _Batch(list):  # a list that can be weakly referenced
    pass


def test_inbox_holds_one_decoded_batch_and_no_payload_while_consuming() -> None:
    """The batch just consumed (and every payload already decoded) is gone
    before the next payload is decoded; credit still goes back per batch."""
    decoded: list[weakref.ref[_Batch]] = []
    alive_at_decode: list[int] = []

    def loads(data: object) -> _Batch:
        alive_at_decode.append(sum(ref() is not None for ref in decoded))
        batch = _Batch(pickle.loads(data))  # type: ignore[arg-type]
        decoded.append(weakref.ref(batch))
        return batch

    grants: list[tuple[int, int]] = []
    box = flow.Inbox(lambda i, b: grants.append((i, b)), loads, grant_every=(1, 1))
    payloads = [flow.pack_batch([n, n + 1], pickle.dumps) for n in (0, 2, 4)]
    for p in payloads:
        box.push(p)
    box.end("done")
    items = box.items()
    assert [next(items), next(items)] == [0, 1]
    assert grants == []
    assert next(items) == 2
    assert alive_at_decode == [0, 0]  # the first batch was dropped before the second was decoded
    assert grants == [(2, len(payloads[0]))]
    assert list(items) == [3, 4, 5]
    assert alive_at_decode == [0, 0, 0]
    assert grants == [(2, len(p)) for p in payloads]
    assert box.ending == "done"
