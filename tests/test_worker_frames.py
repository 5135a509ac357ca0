"""The worker's reader: one handler per kind the client sends. A frame of a call that
has ended is ignored (by design: the client sent it before it knew); a kind only the
worker sends is a protocol error, and the worker leaves as it does for garbage.
In-process: a ``Worker`` on a pipe, its ``leave`` recorded instead of exiting."""

from __future__ import annotations

import os
import threading
from typing import Iterator

import pytest

from skyctl.remote import wire, worker
from skyctl.remote.wire import Kind

DEADLINE = 10.0

_FDS: list[int] = []


@pytest.fixture(autouse=True)
def _close_fds() -> Iterator[None]:
    yield
    while _FDS:
        os.close(_FDS.pop())


def reader_on(frames: bytes) -> tuple[worker.Worker, threading.Thread, list[bool], int]:
    """A worker whose reader thread reads ``frames`` from a pipe left open (no EOF: the caller
    closes the returned write end once the reader is done)."""
    r, w = os.pipe()
    out_r, out = os.pipe()
    for fd in (r, out_r, out):
        _FDS.append(fd)
    wire.write_all(w, frames)
    wk = worker.Worker(worker.Connection(r, out))
    left: list[bool] = []
    wk.leave = lambda: left.append(True)  # type: ignore[method-assign]
    thread = threading.Thread(target=wk.read_frames, name="skyctl-test-reader", daemon=True)
    thread.start()
    return wk, thread, left, w


def test_frames_of_an_ended_call_are_ignored_and_the_next_call_is_taken() -> None:
    stale = (wire.encode(Kind.CREDIT, wire.pack_credit(5, 500), 3) + wire.encode(Kind.CANCEL, b"", 3)
             + wire.encode(Kind.ITEMS_IN, b"not a batch", 3) + wire.encode(Kind.END_IN, b"", 3))
    frames = (stale + wire.encode(Kind.HEARTBEAT, b"", 0) + wire.encode(Kind.CALL, b"read by the main thread", 4)
              + stale + wire.encode(Kind.BYE))
    wk, thread, left, w = reader_on(frames)
    call = wk.calls.get(timeout=DEADLINE)
    thread.join(DEADLINE)
    os.close(w)
    assert not thread.is_alive() and left == [True]
    assert call is not None and call.id == 4 and not call.cancelled
    assert list(wk.open_calls) == [4]


@pytest.mark.parametrize("kind", [Kind.HELLO, Kind.ITEMS_OUT, Kind.RETURN, Kind.RAISE, Kind.LOG, Kind.CANCELLED])
def test_a_kind_only_the_worker_sends_ends_the_worker(kind: Kind) -> None:
    wk, thread, left, w = reader_on(wire.encode(Kind.CALL, b"read by the main thread", 1) + wire.encode(kind, b"", 1))
    thread.join(DEADLINE)
    os.close(w)
    assert not thread.is_alive(), f"a {kind.name} from the client was dropped, not taken for a protocol error"
    assert left == [True]
