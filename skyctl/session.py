"""The client side of one started worker: ``WorkerSession``.

It owns the pipes to one worker, its frame reader thread (``skyctl-frames``: each
frame checked whole, then handed to its kind's handler in ``_HANDLERS``) and its
heartbeat thread (``skyctl-heartbeat``: heartbeats out, the worker's silence bound
and the current call's time limits enforced). Each call is a ``callstream.CallStream``.
Nothing here prints: logs and status go to the ``Hooks`` the caller supplies.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .bootstrap import start_worker
from .callstream import CallStream, Limits
from .errors import ChunkLost, ConnectionLost, SkyctlError, TimedOut
from .failures import protocol_error
from .remote import flow, wire
from .remote.wire import Kind
from .transports.base import Transport, describe
from .trust import Decoder

#: ``CallStream`` and ``Limits`` (``callstream.py``) are imported from here too: a call is made through a session
__all__ = ["DROP_WAIT", "CallStream", "Hooks", "Limits", "WorkerSession", "WorkerSpec", "liveness_of"]

#: seconds ``close`` waits for a given-up worker to be ended (the transports' EOF grace, then SIGTERM, SIGKILL)
DROP_WAIT = 10.0

#: calls in flight on one worker: the running one and the next, queued behind it (pipelining;
#: the worker refuses more, ``remote.worker.MAX_CALLS``)
MAX_IN_FLIGHT = 2


@dataclass
class Hooks:
    """Where a session reports what is not a value."""

    #: bytes the remote function wrote to its fd 1 or 2
    log: Callable[[int, bytes], None] = lambda fd, data: None
    #: a phase: "connecting", "bootstrapping", "sending worker bundle", "running"
    status: Callable[[str], None] = lambda phase: None


@dataclass(frozen=True)
class WorkerSpec:
    """How to start the worker on a host."""

    python: str
    workdir: str
    env: dict[str, str] = field(default_factory=dict)
    #: requirements installed once into a cached venv on the host
    pip: tuple[str, ...] = ()
    #: seconds the stub may take for each answer while starting (the profile's ``connect_timeout``)
    timeout: float = 10.0
    #: ``(interval, bound)``: each side sends HEARTBEAT after ``interval`` seconds of
    #: silence and takes the other for gone after ``bound`` seconds without a byte
    #: (the profile's ``keepalive`` × ``keepalive_count``; see docs/protocol.md)
    liveness: tuple[float, float] = (wire.HEARTBEAT_INTERVAL, wire.SILENCE_BOUND)
    #: seconds the client waits beyond ``bound`` before it gives a silent worker up: on ssh
    #: hosts one keepalive more, so that a link or host that stalls is reported by the SSH
    #: keepalives (which say so), and the heartbeats catch what they cannot (a stopped worker)
    slack: float = 0.0


def liveness_of(profile: Any) -> tuple[float, float]:
    """``(interval, bound)`` of a host's heartbeats: the bound is the profile's
    ``keepalive`` × ``keepalive_count`` (45 s by default), as for SSH keepalives;
    a heartbeat goes after 2 s of silence, or a third of a shorter bound."""
    bound = float(getattr(profile, "keepalive", 15.0)) * int(getattr(profile, "keepalive_count", 3))
    return min(wire.HEARTBEAT_INTERVAL, bound / 3), bound


class WorkerSession:
    """One worker process on one host, running calls one at a time; a second call may be
    started while one runs (it waits on the worker, its input streamed ahead): its values
    come once the first has ended."""

    def __init__(self, transport: Transport, spec: WorkerSpec, hooks: Hooks | None = None,
                 name: str | None = None) -> None:
        self.transport = transport
        #: how messages name the worker's host (default: the transport's label)
        self.name = name
        self.spec = spec
        self.hooks = hooks or Hooks()
        self.hello: dict[str, Any] = {}
        self.sent_bundle = False
        self._pipes: Any = None
        #: the calls in flight (their last frame not yet read), oldest (the running one) first
        self._calls: dict[int, CallStream] = {}
        #: held while a call is added, or one ends and the next is promoted (which one is queued)
        self._calls_lock = threading.Lock()
        #: the ids of the last calls that ended (a CREDIT the worker flushed behind a call's end is ignored)
        self._ended_ids: tuple[int, ...] = ()
        self.dead: str | None = None
        #: the last call's id (frames of a call carry it; 0 is no call)
        self._call_id = 0
        #: ``time.monotonic()`` when bytes last came from the worker (the liveness deadline)
        self._heard = 0.0
        self._closed = threading.Event()
        #: set once a worker this side gave up (``_give_up``) has been ended
        self._dropping: threading.Event | None = None

    @property
    def label(self) -> str:
        """How messages name the worker's host: ``box (root@127.0.0.1:2222)``, the profile first."""
        return self.name or describe(self.transport)

    def start(self) -> None:
        """Connect, bootstrap, and wait for the worker's hello."""
        self.hooks.status("bootstrapping")
        interval, bound = self.spec.liveness
        env = {**self.spec.env, "SKYCTL_LIVENESS": f"{interval:g},{bound:g}"}
        started = start_worker(self.transport, self.spec.python, self.spec.workdir, env,
                               self.hooks.status, self.spec.pip, self.spec.timeout, bound)
        self._pipes, self.hello, self.sent_bundle = started.pipes, started.hello, started.sent_bundle
        self._writer = wire.FrameWriter(started.pipes.write)
        self._heard = time.monotonic()
        threading.Thread(target=self._read_frames, name="skyctl-frames", daemon=True).start()
        threading.Thread(target=self._keep_alive, name="skyctl-heartbeat", daemon=True).start()

    def _keep_alive(self) -> None:
        """Heartbeat thread: say HEARTBEAT after ``interval`` s of silence (the
        worker ends its call when it hears nothing for ``bound`` s), and give
        the worker up when nothing came from it for ``bound`` s (it sends a
        HEARTBEAT every ``interval`` s of silence: one that stalled, or a link
        that is down, would otherwise hang the call on a ``local`` or
        ``command`` host)."""
        interval, bound = self.spec.liveness
        period = min(interval, bound) / 2
        woke = time.monotonic()
        while not self._closed.wait(period):
            if self._pipes is None or self.dead:
                return
            late, woke = time.monotonic() - woke > period + interval, time.monotonic()
            if late:  # this process was stopped or starved: the reader has not caught up yet
                self._heard = max(self._heard, woke - interval)
            try:
                self._writer.heartbeat(interval)
            except BaseException:  # noqa: BLE001 - the reader sees the same failure
                pass
            call = self._head()
            overdue = call.overdue(interval) if call is not None and not call.terminal else None
            if overdue is not None:
                self._give_up(overdue)
                return
            silent = time.monotonic() - self._heard
            if silent > bound + self.spec.slack:
                self._give_up(ConnectionLost(
                    f"the worker on {self.label} sent nothing for {silent:.0f}s (it sends a heartbeat every "
                    f"{interval:g}s): it stalled, or the link to it is down",
                    hint=f"the bound is the profile's keepalive × keepalive_count"
                         f"{' and one keepalive more' if self.spec.slack else ''} ({bound + self.spec.slack:g}s); "
                         "values printed so far are complete"))
                return

    def _give_up(self, error: SkyctlError) -> None:
        """End the current call with ``error`` and drop the worker (it broke the protocol or went silent)."""
        if self.dead:
            return
        self.dead = error.message
        pipes = self._pipes
        if pipes is not None:  # before the call ends: ``close`` (which its end may lead to) waits for this
            self._dropping = threading.Event()
        head = self._head()
        for call in self._in_flight():  # first, so that they end with ``error``, not with the EOF the drop causes
            call.inbox.end((None, error if call is head else _behind(error, self.label)))
        if pipes is not None:  # unblocks the reader; the worker is ended (EOF, then signals)
            threading.Thread(target=_drop, args=(pipes, self._dropping), name="skyctl-drop", daemon=True).start()

    def send(self, kind: int, payload: bytes = b"", call: int | None = None) -> None:
        """Write one frame (of call ``call``: default the last one started); thread-safe, and a Ctrl-C cannot tear it."""
        self._writer.send(kind, payload, call)

    def grant(self, items: int, nbytes: int, call: int | None = None) -> None:
        """Credit for call ``call``'s output; never waits behind a batch being sent."""
        self._writer.grant(items, nbytes, call)

    def _head(self) -> CallStream | None:
        """The oldest call in flight: the one the worker runs (or will run next)."""
        return next(iter(list(self._calls.values())), None)

    def _in_flight(self) -> list[CallStream]:
        return list(self._calls.values())

    @property
    def in_flight(self) -> int:
        """Calls started whose last frame has not come yet (at most ``MAX_IN_FLIGHT``)."""
        return len(self._calls)

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
             stream_at: tuple[str, Any] | None = None, stream: Iterable[Any] | None = None, *,
             render: str | None = None, decoder: Decoder | None = None, skip: int = 0,
             options: dict[str, Any] | None = None, limits: Limits | None = None, queue: bool = False) -> CallStream:
        """Start one call; values come from the returned ``CallStream``.

        ``queue``: it may be started while another call is in flight (at most ``MAX_IN_FLIGHT``):
        it waits on the worker, its input streamed there, and runs once that one ends (a distributed
        ``pipe``'s next chunk). Without it, a call in flight is an error (an API caller who has not
        finished the call before would wait for ever on the new one).

        ``limits``: its time limits, enforced by the worker (the CALL carries them), and by this
        side too when the worker does not answer in time (see ``CallStream.overdue``).

        ``options``: more of the CALL's options (``{"ray": {...}}``: run it as a Ray task).

        ``render`` ("text" or "json"): the worker sends values as the lines the
        CLI prints (``flow.Rendered`` batches), and nothing is unpickled;
        otherwise values are decoded by ``decoder`` (default: a ``Decoder``
        with no extra trust).
        """
        if self.dead:
            raise ConnectionLost(f"the worker on {self.label} is gone: {self.dead}")
        if self._calls and not (queue and len(self._calls) < MAX_IN_FLIGHT):
            raise RuntimeError("a call is already running on this worker; close it first")
        self._call_id = self._call_id % 0xFFFFFFFF + 1
        call = CallStream(self, fn, args, kwargs, stream_at, stream, render=render,
                          decoder=decoder or Decoder(self.label), skip=skip, options=options, limits=limits)
        call.id = self._call_id
        with self._calls_lock:  # before CALL goes: the worker's answer may come at once
            call.queued = bool(self._calls)  # its values and time limits come once the call before it ends
            self._calls[call.id] = call
        self._writer.call = call.id  # the id of frames that are no call's (HEARTBEAT)
        try:
            call.start()
        except BaseException:
            with self._calls_lock:
                self._calls.pop(call.id, None)
            raise
        return call

    def close(self) -> None:
        """Say goodbye, let the worker exit, release the pipes. Safe to call twice."""
        if self._pipes is not None and not self.dead:
            for call in reversed(self._in_flight()):  # before the pipes go: CANCEL (their ``finally`` runs)
                if not call.ended:
                    call.close()
        # (a worker given up has ended its calls already: their consumers, maybe on other threads, take
        # that ending; closing them here would take it from under them)
        self._closed.set()
        dropping = self._dropping
        if dropping is not None:  # a worker given up is being ended: wait for it (a daemon thread dies
            dropping.wait(DROP_WAIT)  # with this process, and a worker stuck holding its GIL would be left)
        pipes, self._pipes = self._pipes, None
        if pipes is None:
            return
        if not self.dead:
            try:
                self._writer.send(Kind.BYE, call=0)
            except OSError:
                pass
        pipes.close_stdin()
        pipes.exit_status(timeout=2.0)
        pipes.close()

    def kill(self, reason: str) -> None:
        """Drop the worker at once (it did not answer a cancel in time)."""
        self.dead = self.dead or reason
        self._closed.set()
        pipes, self._pipes = self._pipes, None
        if pipes is not None:
            pipes.close()

    def broke(self, what: str) -> ConnectionLost:
        """The worker broke the protocol (``what``, found by a consumer): drop it; the error to raise."""
        error = protocol_error(self.label, what)
        self._give_up(error)
        return error

    def _heard_now(self) -> None:
        self._heard = time.monotonic()

    def _read_frames(self) -> None:
        """Reader thread: every frame checked whole before it is used (see ``_dispatch``);
        whatever goes wrong here ends the current call with an error, never silently."""
        pipes = self._pipes
        reason = "the connection closed"
        error: ConnectionLost | None = None
        broken = False
        try:
            while True:
                kind, call_id, payload = wire.read_call_frame(pipes.read, self._heard_now)
                self._dispatch(kind, call_id, payload)
        except wire.Eof:
            pass
        except (wire.ProtocolError, flow.CreditOverrun) as exc:
            error, broken = protocol_error(self.label, str(exc)), True
        except OSError as exc:
            reason = f"read failed: {exc}"
        except BaseException as exc:  # noqa: BLE001 - a reader that dies must end its call
            error, broken = protocol_error(self.label, f"{type(exc).__name__}: {exc}"), True
        if error is None:
            lost = getattr(pipes, "lost", None)  # a transport that gave the connection up says why
            error = lost() if callable(lost) else None
        self.dead = self.dead or (error.message if error is not None else reason)
        if broken:  # the worker is not to be trusted further: it goes
            self._closed.set()
            threading.Thread(target=pipes.close, name="skyctl-drop", daemon=True).start()
        for call in self._in_flight():
            call.inbox.end((None, error or reason))

    def _dispatch(self, kind: Kind, call_id: int, payload: bytes) -> None:
        """Check one frame against the state it arrives in, then act on it: one handler per
        kind a worker sends (``_HANDLERS``); ``ProtocolError`` for anything this side did not ask for."""
        handler = self._HANDLERS.get(kind)
        if handler is None:
            raise wire.ProtocolError(f"a {kind.name} frame, which only the client sends" if kind is not Kind.HELLO
                                     else "a second HELLO")
        handler(self, call_id, payload)

    # -- one handler per kind the worker sends (reader thread) ----------------
    def _on_log(self, call_id: int, payload: bytes) -> None:
        if len(payload) < 1 or payload[0] not in (1, 2):
            raise wire.ProtocolError(f"a LOG frame for fd {payload[0] if payload else 'none'} (1 or 2 expected)")
        self.hooks.log(payload[0], payload[1:])

    def _on_heartbeat(self, call_id: int, payload: bytes) -> None:
        if payload and payload not in (wire.STARVED, wire.IDLE):
            raise wire.ProtocolError(f"a HEARTBEAT frame with a payload of {len(payload)} bytes that says nothing")
        call = self._calls.get(call_id)
        if call is not None and not call.terminal:
            if payload == wire.IDLE:  # written after the call's last frame
                raise wire.ProtocolError(f"the worker says call {call_id} has ended, but its last frame never came")
            call.check_starved(payload == wire.STARVED, self.spec.liveness[1])

    def _on_credit(self, call_id: int, payload: bytes) -> None:
        items, nbytes = wire.unpack_credit(payload)
        if call_id in self._ended_ids and call_id not in self._calls:
            return  # the worker may flush the credit it owes a call behind the call's end
        call = self._call_of(Kind.CREDIT, call_id)
        if call.outbox is not None:
            call.progress_at = time.monotonic()  # the worker took input
            call.starved_since = None
            call.outbox.grant(items, nbytes)

    def _on_items_out(self, call_id: int, payload: bytes) -> None:
        call = self._running_call(Kind.ITEMS_OUT, call_id, running=True)
        call.progress_at = time.monotonic()
        call.check_batch(payload)
        call.inbox.push(payload)  # raises CreditOverrun for a worker that ignores its credit

    def _on_return(self, call_id: int, payload: bytes) -> None:
        call = self._running_call(Kind.RETURN, call_id, running=True)
        payload = self._unsealed(call, Kind.RETURN, payload)
        call.check_return(payload)
        self._ended(call, Kind.RETURN, payload)

    def _on_raise(self, call_id: int, payload: bytes) -> None:
        call = self._running_call(Kind.RAISE, call_id, running=True)
        payload = self._unsealed(call, Kind.RAISE, payload)
        wire.unpack_raise(payload)  # checked whole here; decoded by the consumer
        self._ended(call, Kind.RAISE, payload)

    def _on_cancelled(self, call_id: int, payload: bytes) -> None:
        call = self._running_call(Kind.CANCELLED, call_id)
        if not call.cancel_sent and call.input_error is None:
            raise wire.ProtocolError("a CANCELLED frame, but the call was not cancelled")
        if call.queued and not call.cancel_sent:  # a queued call never ran: only a CANCEL ends it
            raise wire.ProtocolError(f"a CANCELLED frame for call {call_id}, queued behind call {self._head_id()}")
        payload = self._unsealed(call, Kind.CANCELLED, payload)
        if payload:
            raise wire.ProtocolError(f"a CANCELLED frame with {len(payload)} bytes of payload")
        self._ended(call, Kind.CANCELLED, payload)

    _HANDLERS: dict[Kind, Callable[[WorkerSession, int, bytes], None]] = {
        Kind.LOG: _on_log, Kind.HEARTBEAT: _on_heartbeat, Kind.CREDIT: _on_credit, Kind.ITEMS_OUT: _on_items_out,
        Kind.RETURN: _on_return, Kind.RAISE: _on_raise, Kind.CANCELLED: _on_cancelled,
    }

    # -- the handlers' checks ------------------------------------------------
    def _head_id(self) -> int:
        head = self._head()
        return head.id if head is not None else 0

    def _call_of(self, kind: Kind, call_id: int) -> CallStream:
        """The call in flight that a call-scoped frame names."""
        call = self._calls.get(call_id)
        if call is None:
            if call_id in self._ended_ids:
                raise wire.ProtocolError(f"a {kind.name} frame for call {call_id}, which had ended")
            raise wire.ProtocolError(f"a {kind.name} frame for call {call_id}, " +
                                     (f"but calls {sorted(self._calls)} are in flight" if self._calls
                                      else "but no call is in flight"))
        return call

    def _running_call(self, kind: Kind, call_id: int, running: bool = False) -> CallStream:
        """The call in flight named by the frame, not ended yet; ``running``: the oldest one, the only
        one the worker runs (a queued call's values before the call ahead of it ended are an error)."""
        call = self._call_of(kind, call_id)
        if call.terminal:
            raise wire.ProtocolError(f"a {kind.name} frame after the call had ended")
        if running and call.queued:
            raise wire.ProtocolError(f"a {kind.name} frame for call {call_id}, queued behind call {self._head_id()} "
                                     "that has not ended")
        return call

    @staticmethod
    def _unsealed(call: CallStream, kind: Kind, payload: bytes) -> bytes:
        """An end-of-call payload without its count of values sent, once that count matches those that arrived."""
        sent, payload = wire.unseal(kind, payload)
        if sent != call.inbox.received:
            raise wire.ProtocolError(f"a {kind.name} after {sent:,} values sent, but {call.inbox.received:,} arrived")
        return payload

    def _ended(self, call: CallStream, kind: Kind, payload: bytes) -> None:
        """The frame that ends ``call`` has come (checked): its consumer takes it after the values; the
        call queued behind it (if any) runs from now (its time limits count from here)."""
        call.terminal = True
        with self._calls_lock:
            self._calls.pop(call.id, None)
            self._ended_ids = (*self._ended_ids[-(MAX_IN_FLIGHT - 1):], call.id)
            head = self._head()
            if head is not None and head.queued:
                head.queued = False
                head.started_at = head.progress_at = time.monotonic()
        call.inbox.end((kind, payload))


def _behind(error: SkyctlError, label: str) -> SkyctlError:
    """What ends a call queued behind the one that made this side give its worker up: the same
    error, but for a time limit (the call ahead did not answer its own): a ``ChunkLost``, the call
    lost and not the host, which a distributed ``pipe`` runs again on a new worker."""
    if not isinstance(error, TimedOut):
        return error
    lost = ChunkLost(f"lost the call on {label}: the call before it on that worker did not answer its time "
                     "limit, and the worker was ended", hint="values printed so far are complete")
    lost.reason = "the call before it on that worker did not answer its time limit (the worker was ended)"
    return lost


def _drop(pipes: Any, done: threading.Event | None) -> None:
    """End a worker given up (EOF, then signals), from a thread of its own; ``done`` once it is."""
    try:
        pipes.close()
    except BaseException:  # noqa: BLE001 - ended as far as it could be
        pass
    finally:
        if done is not None:
            done.set()
