"""The frame format: every kind round-trips; garbage is refused, never guessed."""

from __future__ import annotations

import io
import threading

import pytest

from skyctl.remote import wire
from skyctl.remote.wire import Kind


def reader(data: bytes):
    return io.BytesIO(data).read


class TestFrames:
    @pytest.mark.parametrize("kind", list(Kind))
    def test_every_kind_round_trips(self, kind: Kind) -> None:
        payload = bytes(range(256)) * 3
        assert wire.read_frame(reader(wire.encode(kind, payload))) == (kind, payload)

    def test_an_empty_payload_round_trips(self) -> None:
        assert wire.read_frame(reader(wire.encode(Kind.END_IN))) == (Kind.END_IN, b"")

    def test_a_clean_end_between_frames_is_eof(self) -> None:
        with pytest.raises(wire.Eof):
            wire.read_frame(reader(b""))

    def test_an_unknown_kind_is_a_protocol_error(self) -> None:
        with pytest.raises(wire.ProtocolError, match="unknown frame kind 99"):
            wire.read_frame(reader(wire.HEADER.pack(wire.PROTOCOL_VERSION, 99, 0, 0)))

    def test_stray_text_is_a_protocol_error(self) -> None:
        with pytest.raises(wire.ProtocolError, match="unexpected bytes"):
            wire.read_frame(reader(b"hello world\n"))

    def test_a_frame_cut_short_is_a_protocol_error(self) -> None:
        with pytest.raises(wire.ProtocolError, match="inside a frame"):
            wire.read_frame(reader(wire.encode(Kind.ITEMS_OUT, b"abcdef")[:-2]))

    def test_credit_and_raise_payloads_round_trip(self) -> None:
        assert wire.unpack_credit(wire.pack_credit(7, 1 << 40)) == (7, 1 << 40)
        info = {"type": "ValueError", "message": "bad", "traceback": "T", "where": "call"}
        assert wire.unpack_raise(wire.pack_raise(info, b"pickled")) == (info, b"pickled")


class TestFrameWriter:
    def test_credit_waits_for_no_write_and_follows_the_write_in_progress(self) -> None:
        written: list[bytes] = []
        entered, release = threading.Event(), threading.Event()

        def slow_write(data: bytes) -> None:
            if not written:
                entered.set()
                release.wait(10)
            written.append(data)

        writer = wire.FrameWriter(slow_write)
        big = threading.Thread(target=writer.send, args=(Kind.ITEMS_OUT, b"x" * 100))
        big.start()
        assert entered.wait(10)
        writer.grant(3, 30)  # returns at once although the pipe is busy
        writer.grant(4, 40)
        assert len(written) == 0
        release.set()
        big.join(10)
        frames = [wire.read_frame(reader(f)) for f in written]
        assert frames[0][0] is Kind.ITEMS_OUT
        assert frames[1:] == [(Kind.CREDIT, wire.pack_credit(7, 70))]  # coalesced, after the batch
