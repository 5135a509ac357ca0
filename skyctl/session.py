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
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from . import flow, wire
from .bootstrap import start_worker
from .errors import ChunkLost, ConnectError, ConnectionLost, RemoteEnvironmentError, RemoteError, SkyctlError
from .transports.base import Transport, describe
from .trust import Decoder, shipped_files, shipped_modules
from .wire import Kind

_INTERRUPT = "interrupt"

#: seconds a cancelled call may take to run its ``finally`` before the worker is killed
CANCEL_GRACE = 10.0


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

    @property
    def label(self) -> str:
        """How messages name the worker's host: ``box (root@127.0.0.1:2222)``, the profile first."""
        return self.name or describe(self.transport)

    def start(self) -> None:
        """Connect, bootstrap, and wait for the worker's hello."""
        self.hooks.status("bootstrapping")
        started = start_worker(self.transport, self.spec.python, self.spec.workdir, self.spec.env,
                               self.hooks.status, self.spec.pip, self.spec.timeout)
        self._pipes, self.hello, self.sent_bundle = started.pipes, started.hello, started.sent_bundle
        self._writer = wire.FrameWriter(started.pipes.write)
        threading.Thread(target=self._read_frames, name="frames", daemon=True).start()

    def send(self, kind: int, payload: bytes = b"") -> None:
        """Write one frame; thread-safe, and a Ctrl-C cannot tear it."""
        self._writer.send(kind, payload)

    def grant(self, items: int, nbytes: int) -> None:
        """Credit for the worker's output; never waits behind a batch being sent."""
        self._writer.grant(items, nbytes)

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
             stream_at: tuple[str, Any] | None = None, stream: Iterable[Any] | None = None, *,
             render: str | None = None, decoder: Decoder | None = None, skip: int = 0,
             options: dict[str, Any] | None = None) -> CallStream:
        """Start one call; values come from the returned ``CallStream``.

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
        call = CallStream(self, fn, args, kwargs, stream_at, stream, render=render,
                          decoder=decoder or Decoder(self.label), skip=skip, options=options)
        self._current = call
        call.start()
        return call

    def close(self) -> None:
        """Say goodbye, let the worker exit, release the pipes. Safe to call twice."""
        if self._pipes is not None and self._current is not None and not self._current.ended:
            self._current.close()  # before the pipes go: it sends CANCEL (its ``finally`` runs)
        pipes, self._pipes = self._pipes, None
        if pipes is None:
            return
        if not self.dead:
            try:
                self._writer.send(Kind.BYE)
            except OSError:
                pass
        pipes.close_stdin()
        pipes.exit_status(timeout=2.0)
        pipes.close()

    def kill(self, reason: str) -> None:
        """Drop the worker at once (it did not answer a cancel in time)."""
        self.dead = self.dead or reason
        pipes, self._pipes = self._pipes, None
        if pipes is not None:
            pipes.close()

    def _read_frames(self) -> None:
        pipes = self._pipes
        reason = "the connection closed"
        try:
            while True:
                kind, payload = wire.read_frame(pipes.read)
                call = self._current
                if kind is Kind.LOG:
                    self.hooks.log(payload[0], payload[1:])
                elif call is None:
                    continue
                elif kind is Kind.ITEMS_OUT:
                    call.inbox.push(payload)  # raises CreditOverrun for a worker that ignores its credit
                elif kind is Kind.CREDIT:
                    if call.outbox is not None:
                        call.outbox.grant(*wire.unpack_credit(payload))
                elif kind in (Kind.RETURN, Kind.RAISE, Kind.CANCELLED):
                    call.inbox.end((kind, payload))
        except wire.Eof:
            pass
        except (wire.ProtocolError, flow.CreditOverrun) as exc:
            reason = f"protocol error: {exc}"
        except (OSError, ValueError) as exc:
            reason = f"read failed: {exc}"
        lost = getattr(pipes, "lost", None)  # a transport that gave the connection up says why
        error = lost() if callable(lost) else None
        self.dead = self.dead or (error.message if error is not None else reason)
        if self._current is not None:
            self._current.inbox.end((None, error or reason))


class CallStream:
    """One call's values, in order, as they arrive; ``result`` once it has returned."""

    def __init__(self, session: WorkerSession, fn: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any], stream_at: tuple[str, Any] | None, stream: Iterable[Any] | None,
                 *, render: str | None = None, decoder: Decoder | None = None, skip: int = 0,
                 options: dict[str, Any] | None = None) -> None:
        self._session = session
        window = (flow.WINDOW_ITEMS, flow.WINDOW_BYTES)
        options = {**(options or {}), "render": render, "shipped": sorted(shipped_modules()), "skip": skip}
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
        self._values = self._iterate()

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
            threading.Thread(target=self._feed, name="feeder", daemon=True).start()

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
        yield from self.inbox.items()
        self._finish()

    def batches(self, keep_lines: bool = False) -> Iterator[list[Any] | flow.LineBatch]:
        """The values as they arrived, a batch at a time (for writers that flush per batch);
        ``keep_lines``: see ``Inbox.batches``."""
        yield from self.inbox.batches(keep_lines)
        self._finish()

    def interrupt(self, exc: BaseException) -> None:
        """Make the consumer's next wait for a value raise ``exc`` (from any thread).

        The call keeps running remotely until ``close()``.
        """
        self.inbox.end((_INTERRUPT, exc))

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
                self.result = flow.unpack_batch(payload, self._loads)[0]
        elif kind is Kind.RAISE:
            raise remote_failure(payload, self._session.label, None if self._render else self._decoder)
        elif kind is None:
            if isinstance(payload, ConnectionLost):  # the transport knows why (keepalives went unanswered)
                raise payload
            raise ConnectionLost(
                f"lost the worker on {self._session.label} during the call ({payload})",
                hint="the worker process died or the network dropped; values printed so far are complete",
            )

    def close(self) -> None:
        """Stop the call if it is still running: the remote generator's ``finally`` runs."""
        if self.ended:
            return
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
    info, pickled = wire.unpack_raise(payload)
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
