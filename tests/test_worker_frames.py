"""The worker's reader: one handler per kind the client sends. A frame of a call that
has ended is ignored (by design: the client sent it before it knew); a kind only the
worker sends is a protocol error, and the worker leaves as it does for garbage.
In-process: a ``Worker`` on a pipe, its ``leave`` recorded instead of exiting."""

from __future__ import annotations

import os
import threading
from typing import Iterator

import pytest

from helpers import wait_for
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


def _frames_until(fd: int, last: Kind) -> list[tuple[Kind, int, bytes]]:
    """What the worker wrote, up to and including the first frame of kind ``last``."""
    read = wire.fd_reader(fd)
    got: list[tuple[Kind, int, bytes]] = []
    while not got or got[-1][0] is not last:
        got.append(wire.read_call_frame(read))
    return got


def test_a_call_that_comes_while_one_is_open_is_queued_with_its_own_credit_and_input() -> None:
    """Pipelining: the second CALL waits (the main thread is not serving here: the first never ends),
    its input window granted at once under its own id (the first's as it starts), its ITEMS_IN and END_IN its own; a CANCEL of
    it is answered CANCELLED at once, by the reader, without running it."""
    frames = (wire.encode(Kind.CALL, b"first", 1) + wire.encode(Kind.CALL, b"second", 2)
              + wire.encode(Kind.ITEMS_IN, b"Lnext chunk", 2) + wire.encode(Kind.END_IN, b"", 2))
    wk, thread, left, w = reader_on(frames)
    first, second = wk.calls.get(timeout=DEADLINE), wk.calls.get(timeout=DEADLINE)
    assert (first.id, second.id) == (1, 2) and second.state == worker.QUEUED
    out_r = _FDS[1]
    credits = _frames_until(out_r, Kind.CREDIT)  # the first call's comes as it starts (never, here)
    window = wire.pack_credit(worker.flow.WINDOW_ITEMS, worker.flow.WINDOW_BYTES)
    assert [(call, payload) for kind, call, payload in credits] == [(2, window)]
    wait_for(lambda: second.inbox._queue.qsize() == 2, DEADLINE, "the second call's batch and end")
    assert first.inbox._queue.qsize() == 0  # nothing of the second call's input went to the first
    wire.write_all(w, wire.encode(Kind.CANCEL, b"", 2))
    (kind, call_id, payload), = _frames_until(out_r, Kind.CANCELLED)
    assert (kind, call_id, payload) == (Kind.CANCELLED, 2, wire.seal(b"", 0))
    assert second.cancelled and second.state == worker.ENDED and not first.cancelled
    assert list(wk.open_calls) == [1]
    wire.write_all(w, wire.encode(Kind.BYE))
    thread.join(DEADLINE)
    os.close(w)
    assert not thread.is_alive() and left == [True]


def test_a_ray_driver_grants_a_queued_call_no_input_before_it_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a Ray driver the link takes the place of a call's inbox as the call starts
    (``raylink.Link.attach``): records granted earlier would wait in the old inbox, lost to the task."""
    monkeypatch.setenv("SKYCTL_RAY", "{}")
    frames = wire.encode(Kind.CALL, b"first", 1) + wire.encode(Kind.CALL, b"second", 2) + wire.encode(Kind.CANCEL, b"", 2)
    wk, thread, left, w = reader_on(frames)
    assert not wk.input_ahead
    got = _frames_until(_FDS[1], Kind.CANCELLED)
    assert [(kind, call_id) for kind, call_id, payload in got] == [(Kind.CANCELLED, 2)]  # no CREDIT before it
    wire.write_all(w, wire.encode(Kind.BYE))
    thread.join(DEADLINE)
    os.close(w)
    assert not thread.is_alive() and left == [True]


def test_a_third_open_call_is_a_protocol_error() -> None:
    """A client has at most two calls open on a worker (``MAX_CALLS``): a third CALL makes it leave."""
    wk, thread, left, w = reader_on(b"".join(wire.encode(Kind.CALL, b"call", n) for n in (1, 2, 3)))
    thread.join(DEADLINE)
    os.close(w)
    assert not thread.is_alive() and left == [True]
    assert sorted(wk.open_calls) == [1, 2]
