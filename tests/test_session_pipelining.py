"""The client's rules for two calls in flight on one worker (pipelining, docs/protocol.md "Call id"):
frames go to their call by id; only the oldest call (the one the worker runs) may send values or
end but by a CANCEL the client sent; a frame for a call not in flight is a protocol error. In-process:
a ``WorkerSession`` whose frames are written nowhere, fed frames as its reader would."""

from __future__ import annotations

import pickle

import pytest

from skyctl.remote import flow, wire
from skyctl.remote.wire import Kind
from skyctl.session import WorkerSession, WorkerSpec


def session_with_calls(n: int = 2) -> tuple[WorkerSession, list[object]]:
    session = WorkerSession(transport=None, spec=WorkerSpec(python="python3", workdir="/tmp"), name="box")  # type: ignore[arg-type]
    written: list[bytes] = []
    session._writer = wire.FrameWriter(written.append)
    calls = [session.call(len, ((),), {}, queue=True) for _ in range(n)]
    return session, calls


def returned(value: object) -> bytes:
    return wire.seal(flow.pack_batch([value], pickle.dumps), 0)


def test_the_queued_call_gets_its_values_after_the_first_ends() -> None:
    session, (first, second) = session_with_calls()
    assert (first.queued, second.queued) == (False, True)
    with pytest.raises(wire.ProtocolError, match="queued behind call 1"):
        session._dispatch(Kind.RETURN, 2, returned(7))
    session._dispatch(Kind.RETURN, 1, returned(0))
    assert not second.queued and session.in_flight == 1
    session._dispatch(Kind.CREDIT, 1, wire.pack_credit(1, 1))  # owed to the call just ended: ignored
    session._dispatch(Kind.RETURN, 2, returned(7))
    assert (list(first), first.result, list(second), second.result) == ([], 0, [], 7)


def test_a_frame_for_a_call_not_in_flight_is_a_protocol_error() -> None:
    session, _ = session_with_calls()
    with pytest.raises(wire.ProtocolError, match="call 3"):
        session._dispatch(Kind.CREDIT, 3, wire.pack_credit(1, 1))
    session._dispatch(Kind.RETURN, 1, returned(0))
    with pytest.raises(wire.ProtocolError, match="call 1, which had ended"):
        session._dispatch(Kind.RETURN, 1, returned(0))


def test_an_idle_heartbeat_for_a_call_in_flight_and_an_unasked_cancelled_are_errors() -> None:
    session, (first, second) = session_with_calls()
    with pytest.raises(wire.ProtocolError, match="call 2 has ended"):
        session._dispatch(Kind.HEARTBEAT, 2, wire.IDLE)
    with pytest.raises(wire.ProtocolError, match="not cancelled"):
        session._dispatch(Kind.CANCELLED, 2, wire.seal(b"", 0))


def test_a_third_call_is_refused_and_an_unqueued_call_needs_an_idle_worker() -> None:
    session, (first, second) = session_with_calls()
    with pytest.raises(RuntimeError):
        session.call(len, ((),), {}, queue=True)
    session._dispatch(Kind.RETURN, 1, returned(0))
    with pytest.raises(RuntimeError, match="already running"):
        session.call(len, ((),), {})
