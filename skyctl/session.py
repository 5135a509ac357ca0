"""The client side of calls: one started worker, its frame reader, and each call's streams.

``WorkerSession`` owns the pipes to one worker and a reader thread that
dispatches frames; ``CallStream`` is one call: it sends CALL, feeds the stream
parameter through an ``Outbox`` (paused by the worker's credit), and hands out
the yielded values from an ``Inbox`` (granting credit back as they are taken).
Nothing here prints: logs and status go to the ``Hooks`` the caller supplies.
"""

from __future__ import annotations

import linecache
import os
import pickle
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from .remote import flow, wire
from .bootstrap import start_worker
from .errors import (ChunkLost, ConnectError, ConnectionLost, RemoteEnvironmentError, RemoteError, SkyctlError,
                     TimedOut)
from .transports.base import Transport, describe
from .trust import Decoder, shipped_files, shipped_modules
from .remote.wire import Kind

_INTERRUPT = "interrupt"

#: seconds a cancelled call may take to run its ``finally`` before the worker is killed
CANCEL_GRACE = 10.0

#: seconds ``close`` waits for a given-up worker to be ended (the transports' EOF grace, then SIGTERM, SIGKILL)
DROP_WAIT = 10.0


#: seconds the worker gives a timed-out function to end before it answers without it (``worker.TIMEOUT_GRACE``)
TIMEOUT_GRACE = 5.0


@dataclass(frozen=True)
class Limits:
    """A call's time limits (seconds; None: none), and how messages name where each was set
    (``--timeout``, ``SKYCTL_TIMEOUT``, ``the profile's timeout:``, ``timeout=``)."""

    timeout: float | None = None
    idle: float | None = None
    timeout_source: str = "--timeout"
    idle_source: str = "--idle-timeout"

    def error(self, label: str, idle: bool, note: str = "") -> TimedOut:
        """The ``TimedOut`` for a call on ``label`` that ran past one of these limits."""
        from .config.checks import format_duration

        limit = (self.idle if idle else self.timeout) or 0.0
        source = self.idle_source if idle else self.timeout_source
        what = "sent no value and took no record for" if idle else "timed out after"
        raise_what = "--idle-timeout" if idle else "--timeout"
        return TimedOut(f"{label}: {what} {format_duration(limit)} ({source}){note}",
                        hint=f"raise {raise_what} (or find where the function waits: the traceback above, when "
                             "there is one); values written before it are complete",
                        host=label, limit=limit, idle=idle)


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


def _dumps(obj: Any) -> bytes:
    import cloudpickle

    return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _dumps_call(obj: Any) -> bytes:
    """Pickle a call so that remote tracebacks still name the user's files.

    cloudpickle (3.x) replaces each code object's filename with
    ``<dynamic-code>``; we put the real one back.
    """
    import io
    import types
    from collections import ChainMap

    import cloudpickle

    base_reduce = cloudpickle.Pickler.dispatch_table[types.CodeType]

    def code_reduce(code: types.CodeType) -> Any:
        rebuild, args = base_reduce(code)
        return rebuild, tuple(code.co_filename if type(a) is str and a == "<dynamic-code>" else a for a in args)

    class CallPickler(cloudpickle.Pickler):
        dispatch_table = ChainMap({types.CodeType: code_reduce}, cloudpickle.Pickler.dispatch_table)

    buf = io.BytesIO()
    CallPickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


class WorkerSession:
    """One worker process on one host, serving calls one at a time."""

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
        self._current: CallStream | None = None
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
            call = self._current
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
        call = self._current
        if call is not None:  # first, so that the call ends with ``error``, not with the EOF the drop causes
            call.inbox.end((None, error))
        if pipes is not None:  # unblocks the reader; the worker is ended (EOF, then signals)
            threading.Thread(target=_drop, args=(pipes, self._dropping), name="skyctl-drop", daemon=True).start()

    def send(self, kind: int, payload: bytes = b"") -> None:
        """Write one frame; thread-safe, and a Ctrl-C cannot tear it."""
        self._writer.send(kind, payload)

    def grant(self, items: int, nbytes: int) -> None:
        """Credit for the worker's output; never waits behind a batch being sent."""
        self._writer.grant(items, nbytes)

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
             stream_at: tuple[str, Any] | None = None, stream: Iterable[Any] | None = None, *,
             render: str | None = None, decoder: Decoder | None = None, skip: int = 0,
             options: dict[str, Any] | None = None, limits: Limits | None = None) -> CallStream:
        """Start one call; values come from the returned ``CallStream``.

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
        if self._current is not None and not self._current.ended:
            raise RuntimeError("a call is already running on this worker; close it first")
        self._call_id = self._call_id % 0xFFFFFFFF + 1
        call = CallStream(self, fn, args, kwargs, stream_at, stream, render=render,
                          decoder=decoder or Decoder(self.label), skip=skip, options=options, limits=limits)
        call.id = self._call_id
        self._current = call
        self._writer.call = call.id  # before CALL goes: every frame of the call carries its id
        call.start()
        return call

    def close(self) -> None:
        """Say goodbye, let the worker exit, release the pipes. Safe to call twice."""
        if self._pipes is not None and self._current is not None and not self._current.ended:
            self._current.close()  # before the pipes go: it sends CANCEL (its ``finally`` runs)
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
        if self._current is not None:
            self._current.inbox.end((None, error or reason))

    def _dispatch(self, kind: Kind, call_id: int, payload: bytes) -> None:
        """Check one frame against the state it arrives in, then act on it;
        ``ProtocolError`` for anything this side did not ask for."""
        if kind is Kind.LOG:
            if len(payload) < 1 or payload[0] not in (1, 2):
                raise wire.ProtocolError(f"a LOG frame for fd {payload[0] if payload else 'none'} (1 or 2 expected)")
            self.hooks.log(payload[0], payload[1:])
            return
        if kind is Kind.HEARTBEAT:
            if payload and payload not in (wire.STARVED, wire.IDLE):
                raise wire.ProtocolError(f"a HEARTBEAT frame with a payload of {len(payload)} bytes that says nothing")
            call = self._current
            if call is not None and not call.terminal:
                if payload == wire.IDLE and call_id == call.id:  # written after the call's last frame
                    raise wire.ProtocolError(f"the worker says call {call_id} has ended, but its last frame never came")
                call.check_starved(payload == wire.STARVED, self.spec.liveness[1])
            return
        if kind not in _FROM_WORKER:
            raise wire.ProtocolError(f"a {kind.name} frame, which only the client sends" if kind is not Kind.HELLO
                                     else "a second HELLO")
        call = self._current
        if call is None or call_id != call.id:
            if kind is Kind.CREDIT and call is not None and call_id == call.id - 1:
                return  # credit for the call before may follow its end
            raise wire.ProtocolError(f"a {kind.name} frame for call {call_id}, " +
                                     (f"but call {call.id} is the current one" if call is not None else "but no call was made"))
        if kind is Kind.CREDIT:
            items, nbytes = wire.unpack_credit(payload)
            if call.outbox is not None and not call.terminal:
                call.progress_at = time.monotonic()  # the worker took input
                call.starved_since = None
                call.outbox.grant(items, nbytes)
            return  # also after the call's end: the worker flushes what it owes behind its last frame
        if call.terminal:
            raise wire.ProtocolError(f"a {kind.name} frame after the call had ended")
        if kind is Kind.ITEMS_OUT:
            call.progress_at = time.monotonic()
            call.check_batch(payload)
            call.inbox.push(payload)  # raises CreditOverrun for a worker that ignores its credit
            return
        if kind is Kind.CANCELLED and not call.cancel_sent and call.input_error is None:
            raise wire.ProtocolError("a CANCELLED frame, but the call was not cancelled")
        sent, payload = wire.unseal(kind, payload)
        if sent != call.inbox.received:
            raise wire.ProtocolError(f"a {kind.name} after {sent:,} values sent, but {call.inbox.received:,} arrived")
        if kind is Kind.RETURN:
            call.check_return(payload)
        elif kind is Kind.RAISE:
            wire.unpack_raise(payload)  # checked whole here; decoded by the consumer
        elif kind is Kind.CANCELLED:
            if payload:
                raise wire.ProtocolError(f"a CANCELLED frame with {len(payload)} bytes of payload")
        call.terminal = True
        call.inbox.end((kind, payload))


def _drop(pipes: Any, done: threading.Event | None) -> None:
    """End a worker given up (EOF, then signals), from a thread of its own; ``done`` once it is."""
    try:
        pipes.close()
    except BaseException:  # noqa: BLE001 - ended as far as it could be
        pass
    finally:
        if done is not None:
            done.set()


#: the frames a worker may send
_FROM_WORKER = frozenset({Kind.ITEMS_OUT, Kind.CREDIT, Kind.RETURN, Kind.RAISE, Kind.CANCELLED})


def protocol_error(label: str, what: str) -> ConnectionLost:
    """The error for a worker that broke the protocol: one line naming the host and what was wrong."""
    return ConnectionLost(f"the worker on {label} broke skyctl's protocol: {what}",
                          hint="values printed so far are as it sent them; is skyctl's cache on the host damaged, "
                               "or the host compromised?")


class CallStream:
    """One call's values, in order, as they arrive; ``result`` once it has returned."""

    #: the call's id, carried by every frame of the call (set by ``WorkerSession.call``)
    id = 0

    def __init__(self, session: WorkerSession, fn: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any], stream_at: tuple[str, Any] | None, stream: Iterable[Any] | None,
                 *, render: str | None = None, decoder: Decoder | None = None, skip: int = 0,
                 options: dict[str, Any] | None = None, limits: Limits | None = None) -> None:
        self._session = session
        window = (flow.WINDOW_ITEMS, flow.WINDOW_BYTES)
        self.limits = limits or Limits()
        options = {**(options or {}), "render": render, "shipped": sorted(shipped_modules()), "skip": skip}
        if self.limits.timeout is not None:
            options["timeout"] = self.limits.timeout
        if self.limits.idle is not None:
            options["idle_timeout"] = self.limits.idle
        #: ``time.monotonic()`` when the call started, and when a value last came or input was last taken
        self.started_at = self.progress_at = time.monotonic()
        self._request = (fn, args, kwargs, stream_at, window, options)
        self._stream = stream
        self._render = render
        self._decoder = decoder or Decoder(session.label)
        #: rendered calls (the CLI) unpickle nothing: a pickle there breaks the protocol
        self._loads = self._decoder.loads if render is None else _no_pickles(session.label)
        self.inbox = flow.Inbox(self._grant, self._loads, window=window)
        self.outbox: flow.Outbox | None = None
        self.input_error: BaseException | None = None
        self.result: Any = None
        self.ended = False
        #: CANCEL was sent (only then may CANCELLED come)
        self.cancel_sent = False
        #: the frame that ends the call has arrived (reader thread)
        self.terminal = False
        #: since when the worker has said it waits for input while this side waits for its credit
        self.starved_since: float | None = None
        self._values = self._iterate()

    def overdue(self, interval: float) -> TimedOut | None:
        """The error when the worker has not answered a limit that passed: it ends a timed-out
        call itself within ``TIMEOUT_GRACE`` s; past that (and two heartbeat intervals and a
        second for the answer's way) it is stopped or stuck, and this side ends the connection.
        Not the liveness bound: a stopped worker would be taken for a lost one (exit 6) first."""
        limits = self.limits
        if limits.timeout is None and limits.idle is None:
            return None
        now, slack = time.monotonic(), TIMEOUT_GRACE + 2 * interval + 1.0
        if limits.timeout is not None and now - self.started_at > limits.timeout + slack:
            return limits.error(self._session.label, False, "; the worker did not answer, its connection was ended")
        if limits.idle is not None and now - self.progress_at > limits.idle + slack:
            return limits.error(self._session.label, True, "; the worker did not answer, its connection was ended")
        return None

    # -- checks of the reader thread -----------------------------------------
    def check_starved(self, starved: bool, bound: float) -> None:
        """A heartbeat: the worker waits for input (``starved``) or not. Its
        function waiting for input while this side waits for the credit to
        send it cannot last with an honest worker (it owes credit for all it
        took); past ``bound`` s it is a protocol error, not a call that hangs."""
        outbox = self.outbox
        if not starved or outbox is None or not outbox.waiting_for_credit:
            self.starved_since = None
            return
        now = time.monotonic()
        if self.starved_since is None:
            self.starved_since = now
        elif now - self.starved_since > bound:
            raise wire.ProtocolError(f"it has waited for input for {now - self.starved_since:.0f}s "
                                     "without granting the credit to send it")

    def check_batch(self, payload: bytes) -> None:
        """An ITEMS_OUT payload, checked whole before it is queued: its encoding
        is the one this call uses (rendered text for the CLI, never a pickle;
        lines or a pickle for the API), and a rendered batch's text holds at
        least its declared count of lines, each ended (a str value may span
        several). ``ProtocolError`` otherwise."""
        tag = payload[:1]
        if self._render is not None:
            if tag != flow.RENDERED:
                raise wire.ProtocolError(f"an ITEMS_OUT batch encoded {tag!r} where rendered text (b'R') was expected")
            _check_rendered(payload, "ITEMS_OUT")
        elif tag == flow.PICKLED:
            if len(payload) < 1 + flow.COUNT.size:
                raise wire.ProtocolError("an ITEMS_OUT batch too short for its item count")
        elif tag != flow.LINES:
            raise wire.ProtocolError(f"an ITEMS_OUT batch encoded {tag!r} (b'L' or b'P' expected)")

    def check_return(self, payload: bytes) -> None:
        """A RETURN payload: a batch of exactly one value (rendered: none for None)."""
        tag = payload[:1]
        if self._render is not None:
            if tag != flow.RENDERED:
                raise wire.ProtocolError(f"a RETURN encoded {tag!r} where rendered text (b'R') was expected")
            count = _check_rendered(payload, "RETURN")
            if count > 1:
                raise wire.ProtocolError(f"a RETURN of {count:,} values")
        elif tag == flow.PICKLED:
            if len(payload) < 1 + flow.COUNT.size or flow.COUNT.unpack_from(payload, 1)[0] != 1:
                raise wire.ProtocolError("a RETURN that is not one value")
        elif tag == flow.LINES:
            if b"\n" in payload:
                raise wire.ProtocolError("a RETURN of several lines")
        else:
            raise wire.ProtocolError(f"a RETURN encoded {tag!r}" if tag else "an empty RETURN")

    # -- counters for a status line ------------------------------------
    @property
    def items_out(self) -> int:
        return self.inbox.taken

    @property
    def items_in(self) -> int:
        return self.outbox.produced if self.outbox else 0

    def start(self) -> None:
        try:
            payload = _dumps_call(self._request)
        except Exception as exc:
            self.ended = True
            raise SkyctlError(f"cannot send the call: {type(exc).__name__}: {exc}") from None
        if self._stream is not None:
            self.outbox = flow.Outbox(self._session.send, Kind.ITEMS_IN, _dumps, on_unsendable=self._unsendable_input)
        self._send(Kind.CALL, payload)
        self._session.hooks.status("running")
        if self.outbox is not None:
            threading.Thread(target=self._feed, name="skyctl-feeder", daemon=True).start()

    def _send(self, kind: int, payload: bytes = b"") -> None:
        try:
            self._session.send(kind, payload)
        except OSError:
            pass  # the reader thread sees the same failure and ends the stream

    def _grant(self, items: int, nbytes: int) -> None:
        if not self.ended:
            try:
                self._session.grant(items, nbytes)
            except OSError:
                pass  # the reader thread sees the same failure and ends the stream

    def _unsendable_input(self, exc: BaseException) -> tuple[int, bytes]:
        """An input item did not pickle: the function stops after the items
        before it, as for a bad record, and the caller gets this error."""
        self.input_error = flow.with_note(exc, "skyctl: an item of the input iterable could not be pickled to send it")
        return Kind.INPUT_FAILED, b""

    def _feed(self) -> None:
        """Feeder thread: pull the stream parameter's items as credit allows."""
        outbox = self.outbox
        assert outbox is not None and self._stream is not None
        try:
            batches = getattr(self._stream, "batches", None)
            if callable(batches):  # a record reader hands over whole chunks of stdin
                for batch in batches():
                    outbox.put_many(batch)
            else:
                items = iter(self._stream)
                while True:
                    outbox.wait_for_room()
                    if not outbox.put_run(items):
                        break
        except flow.Cancelled:
            outbox.finish()
            return
        except BaseException as exc:  # a bad record, or the caller's iterable raised
            # In band, after the items already read: the function consumes
            # those (their values are printed), then stops as if closed.
            self.input_error = exc
            outbox.finish((Kind.INPUT_FAILED, b""))
            return
        outbox.finish((Kind.END_IN, b""))

    # -- values ------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        return self._values

    def __next__(self) -> Any:
        return next(self._values)

    def _iterate(self) -> Iterator[Any]:
        for batch in self._decoded(self.inbox.batches()):
            yield from batch
            del batch  # not kept while the next batch is decoded
        self._finish()

    def batches(self, keep_lines: bool = False) -> Iterator[list[Any] | flow.LineBatch]:
        """The values as they arrived, a batch at a time (for writers that flush per batch);
        ``keep_lines``: see ``Inbox.batches``."""
        yield from self._decoded(self.inbox.batches(keep_lines))
        self._finish()

    def interrupt(self, exc: BaseException) -> None:
        """Make the consumer's next wait for a value raise ``exc`` (from any thread).

        The call keeps running remotely until ``close()``.
        """
        self.inbox.end((_INTERRUPT, exc))

    def _decoded(self, batches: Iterator[Any]) -> Iterator[Any]:
        """``batches`` (decoded by the Inbox); a batch that does not decode as its
        encoding says is the worker's protocol error, never a raw exception."""
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except SkyctlError:
                raise
            except Exception as exc:  # noqa: BLE001 - bytes from a remote that is not trusted
                raise self._session.broke(f"a batch that does not decode ({type(exc).__name__}: {exc})") from None
            yield batch

    def _finish(self) -> None:
        """The stream has ended: settle the feeder, then return or raise what it ended with."""
        kind, payload = self.inbox.ending
        if kind is _INTERRUPT:
            raise payload
        self.ended = True
        if self.outbox is not None:
            self.outbox.cancel()
            self.outbox.finish()
        if self.input_error is not None and kind is Kind.CANCELLED:  # the function reached it
            raise self.input_error
        if kind is Kind.RETURN:
            if payload[:1] == flow.RENDERED:
                rendered = flow.Rendered.from_payload(payload)
                self.result = rendered if len(rendered) else None
            else:
                try:
                    self.result = flow.unpack_batch(payload, self._loads)[0]
                except SkyctlError:
                    raise
                except Exception as exc:  # noqa: BLE001 - bytes from a remote that is not trusted
                    raise self._session.broke(f"a RETURN that does not decode ({type(exc).__name__}: {exc})") from None
        elif kind is Kind.RAISE:
            info, _ = wire.unpack_raise(payload)
            if info.get("failure") == "timeout":  # the worker ended the function at its limit
                error = self.limits.error(self._session.label, info.get("kind") == "idle")
                error.details = with_source_lines(info.get("traceback") or "")
                raise error
            raise remote_failure(payload, self._session.label, None if self._render else self._decoder)
        elif kind is None:
            if isinstance(payload, (ConnectionLost, TimedOut)):  # the transport knows why (keepalives went unanswered)
                raise payload
            raise ConnectionLost(
                f"lost the worker on {self._session.label} during the call ({payload})",
                hint="the worker process died or the network dropped; values printed so far are complete",
            )

    def close(self) -> None:
        """Stop the call if it is still running: the remote generator's ``finally`` runs."""
        if self.ended:
            return
        self.cancel_sent = True
        self._send(Kind.CANCEL)
        if not self.inbox.wait_for_end(CANCEL_GRACE):
            self.inbox.ending = (None, "it did not stop after a cancel")
            self._session.kill("it did not stop after a cancel")
        try:
            self._finish()
        except BaseException:
            pass
        self.ended = True

    def __enter__(self) -> CallStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_rendered(payload: bytes, what: str) -> int:
    """A rendered batch's declared count, once its text is seen to hold as many
    ended lines (one per value at least: a str value may span several)."""
    if len(payload) < 1 + flow.COUNT.size:
        raise wire.ProtocolError(f"a rendered {what} too short for its item count")
    count: int = flow.COUNT.unpack_from(payload, 1)[0]
    start = 1 + flow.COUNT.size
    if count == 0:
        if len(payload) > start:
            raise wire.ProtocolError(f"a rendered {what} of no values with {len(payload) - start:,} bytes of text")
        return 0
    lines = payload.count(b"\n", start)
    if payload[-1:] != b"\n" or lines < count:
        raise wire.ProtocolError(f"a rendered {what} that declares {count:,} values but holds {lines:,} ended lines")
    return count


def _no_pickles(label: str) -> Callable[[Any], Any]:
    def refuse(data: Any) -> Any:
        raise ConnectionLost(f"the worker on {label} sent a pickle where rendered text was expected",
                             hint="it does not follow skyctl's protocol: is the host compromised, or skyctl's cache on it damaged?")

    return refuse


_FILE_LINE = re.compile(r'^(\s*)File "([^"]+)", line (\d+), in .*$')


def with_source_lines(text: str, files: frozenset[str] | None = None) -> str:
    """Add the source line under each traceback frame that lacks one, from local files.

    The remote usually lacks the user's source (functions travel as bytecode),
    but the client has it. Only files the client shipped (``files``, default
    ``trust.shipped_files()``) are read: a path the remote names could be any
    file of the client's (a private key).
    """
    if files is None:
        files = shipped_files()
    lines = text.splitlines()
    out: list[str] = []
    for i, line in enumerate(lines):
        out.append(line)
        m = _FILE_LINE.match(line)
        if not m:
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if nxt.startswith(m.group(1) + "  ") and not _FILE_LINE.match(nxt):
            continue
        if m.group(2) not in files and os.path.abspath(m.group(2)) not in files:
            continue
        source = linecache.getline(m.group(2), int(m.group(3))).strip()
        if source:
            out.append(f"{m.group(1)}  {source}")
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def remote_failure(payload: bytes, label: str, decoder: Decoder | None = None) -> SkyctlError:
    """The exception a RAISE frame stands for, with the remote traceback:
    rebuilt when ``decoder`` (the API) allows its type, never for the CLI."""
    try:
        info, pickled = wire.unpack_raise(payload)
    except wire.ProtocolError as exc:  # checked by the reader already: only a caller of its own gets here
        return protocol_error(label, str(exc))
    failure = info.get("failure")  # the Ray driver's own failures (``raydriver.Failure``)
    if failure in ("environment", "connect", "lost", "driver"):
        message, hint = f"{label}: {info.get('message', '')}", info.get("hint") or None
        if failure == "environment":
            return RemoteEnvironmentError(message, hint=hint)
        if failure == "connect":
            return ConnectError(message, hint=hint)
        if failure == "lost":
            lost = ChunkLost(message, hint=hint or "values printed so far are complete")
            lost.reason = str(info.get("message", ""))
            return lost
        return ConnectionLost(message, hint=hint or "values printed so far are complete")
    text = with_source_lines(info.get("traceback", ""))
    missing = info.get("module_not_found")
    if missing:
        err: SkyctlError = RemoteEnvironmentError(
            f"module '{missing}' is not importable on {label}",
            hint="add it to 'pip:' in the host's profile, or install it there",
        )
        err.details = text if info.get("where") == "call" else ""
        return err
    if info.get("where") == "load":
        err = RemoteEnvironmentError(f"the function could not be loaded on {label}: {info.get('type')}: {info.get('message')}")
        err.details = text
        return err
    remote = RemoteError(info.get("type", "Exception"), info.get("message", ""), text)
    try:
        rebuilt = decoder.loads(pickled) if pickled and decoder is not None else None
    except Exception:  # refused, or not rebuildable here: RemoteError carries type, message and traceback
        rebuilt = None
    # Only an ``Exception`` is raised again as itself: a remote SystemExit,
    # KeyboardInterrupt or GeneratorExit would end (or silently stop) the
    # client's script, past its ``except Exception``; it stays a RemoteError.
    remote.exception = rebuilt if isinstance(rebuilt, Exception) else None
    return remote
