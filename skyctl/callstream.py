"""One call on a started worker: ``CallStream`` sends CALL, feeds the stream parameter
through an ``Outbox`` (paused by the worker's credit, a ``skyctl-feeder`` thread), and
hands out the yielded values from an ``Inbox`` (granting credit back as they are taken);
it checks each batch and end of the call the session's frame reader gives it, and turns
how the call ended into its result or error. ``Limits`` are a call's time limits."""

from __future__ import annotations

import pickle
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Protocol

from .errors import ConnectionLost, SkyctlError, TimedOut
from .failures import remote_failure, with_source_lines
from .remote import flow, wire
from .remote.wire import Kind
from .trust import Decoder, shipped_modules

_INTERRUPT = "interrupt"

#: seconds a cancelled call may take to run its ``finally`` before the worker is killed
CANCEL_GRACE = 10.0

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



class CallOwner(Protocol):
    """What a call needs of the session it runs on (``session.WorkerSession``)."""

    @property
    def label(self) -> str: ...

    @property
    def hooks(self) -> Any: ...  # ``session.Hooks``

    def send(self, kind: int, payload: bytes = b"", call: int | None = None) -> None: ...

    def grant(self, items: int, nbytes: int, call: int | None = None) -> None: ...

    def broke(self, what: str) -> ConnectionLost: ...

    def kill(self, reason: str) -> None: ...


class CallStream:
    """One call's values, in order, as they arrive; ``result`` once it has returned."""

    #: the call's id, carried by every frame of the call (set by ``WorkerSession.call``)
    id = 0
    #: started while another call was in flight on its worker: it waits there (its input streamed
    #: ahead) until that one ends, and its time limits count from then (``WorkerSession._ended``)
    queued = False

    def __init__(self, session: CallOwner, fn: Callable[..., Any], args: tuple[Any, ...],
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
            self.outbox = flow.Outbox(self._send_frame, Kind.ITEMS_IN, _dumps, on_unsendable=self._unsendable_input)
        self._send(Kind.CALL, payload)
        self._session.hooks.status("running")
        if self.outbox is not None:
            threading.Thread(target=self._feed, name="skyctl-feeder", daemon=True).start()

    def _send_frame(self, kind: int, payload: bytes = b"") -> None:
        """Write one frame of this call (its id in the header)."""
        self._session.send(kind, payload, self.id)

    def _send(self, kind: int, payload: bytes = b"") -> None:
        try:
            self._send_frame(kind, payload)
        except OSError:
            pass  # the reader thread sees the same failure and ends the stream

    def _grant(self, items: int, nbytes: int) -> None:
        if not self.ended:
            try:
                self._session.grant(items, nbytes, self.id)
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
