"""The worker: the process that runs the user's function on the host.

Shipped to the remote inside the bundle (with ``wire.py``, ``flow.py`` and the
client's own cloudpickle); stdlib only at top level, cloudpickle imported when
the first call is loaded. Started by the bootstrap stub with the protocol on
fds 0/1. Before any user code runs it moves the protocol to private fds and
points fds 1/2 at pipes whose bytes travel as LOG frames, so a stray ``print``
can never corrupt the stream.

Threads: the main thread runs calls one at a time (the user's code, and so the
producer of ITEMS_OUT); a reader thread dispatches incoming frames (a CALL that
comes while another call runs waits, its input arriving meanwhile: pipelining); an Outbox sender
thread writes batches; two log threads forward fds 1/2; a watchdog thread per
call that has a time limit (``Worker.watch``). Beside it, not its child, a watcher process
(``watcher``) ends it when its client is gone and its threads cannot run to see it.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import sys
import threading
import time
import types
from itertools import chain
from typing import Any, Callable, Generator, Iterator

from . import flow, raytask, reaper, spare, values, watcher, wire
from .logs import LogForwarder
from .wire import Kind

#: seconds the worker waits for the running call to wind down once the client is gone
EXIT_GRACE = 5.0

#: seconds the watcher gives a worker whose client is gone to leave by itself before it ends it (``watcher``):
#: the worker's own way out (``EXIT_GRACE``, then its leftovers ended: ``reaper.EXIT_GRACE`` + ``KILL_WAIT``),
#: and 2 s more (its silence check may come a second after the watcher's, on a loaded machine later)
WATCH_GRACE = EXIT_GRACE + reaper.EXIT_GRACE + reaper.KILL_WAIT + 2.0

#: seconds a timed-out function has, once interrupted (and its processes sent SIGTERM), to end
#: (its ``finally``) before its processes get SIGKILL and the worker answers without it, then exits
TIMEOUT_GRACE = 5.0

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
#: frames under these paths are skyctl's (inside the bundle: cloudpickle's too), not the user's;
#: the bundle's precompiled modules name themselves ``<skyctl bundle>/...`` (bundle.BUNDLE_FILENAME_PREFIX)
_OWN_PREFIXES = ("<skyctl bundle>/", os.path.dirname(_PACKAGE_DIR) if ".zip" in _PACKAGE_DIR else _PACKAGE_DIR)


def _is_own(filename: str) -> bool:
    return filename.startswith(_OWN_PREFIXES[0]) or os.path.abspath(filename).startswith(_OWN_PREFIXES[1])


class Connection:
    """The protocol fds: ``read(n)`` on one, a thread-safe ``FrameWriter`` on the other;
    ``clock``: where the watcher reads ``heard`` (``watcher.Clock.view``)."""

    def __init__(self, in_fd: int, out_fd: int, clock: memoryview | None = None) -> None:
        #: ``time.monotonic()`` when bytes last came from the client (its liveness)
        self.heard = time.monotonic()
        self._clock = clock if clock is not None else memoryview(bytearray(8)).cast("d")
        self.read = wire.payload_reader(in_fd, self._touch)
        self.writer = wire.FrameWriter(lambda data: wire.write_all(out_fd, data))
        self.grant = self.writer.grant
        self.gone = False

    def _touch(self) -> None:
        self.heard = self._clock[0] = time.monotonic()

    def send(self, kind: int, payload: bytes = b"", call: int | None = None) -> None:
        """Write one frame; ``call``: the id it carries (default: the running call's, ``writer.call``)."""
        try:
            self.writer.send(kind, payload, call)
        except OSError:
            self.gone = True
            raise


class CallState:
    """One call in progress: its frames, its flows, whether it was cancelled.

    How values leave is set once the call's options are read (``configure``):
    rendered as text or JSON lines for the CLI, which never unpickles what a
    remote sends; pickled for the Python API, whose decoder on the client
    allows only plain data types and classes of the modules it shipped (which
    travel as references to those modules, see ``ValuePickler``).
    """

    def __init__(self, conn: Connection, payload: bytes, call_id: int = 0,
                 on_answer: Callable[[CallState], None] | None = None) -> None:
        self.payload = payload
        #: called right before the call's last frame is written (the worker then takes the client's next CALL)
        self.on_answer = on_answer
        #: the id every frame of this call carries
        self.id = call_id
        self.dumps: Callable[[Any], bytes] = values.cloudpickle_dumps
        self.render: str | None = None
        #: values to drop before sending (a re-run chunk whose first values the client already wrote)
        self.skip = 0
        self.outbox = flow.Outbox(lambda kind, data: conn.send(kind, data, call_id), Kind.ITEMS_OUT,
                                  self._dumps_items, on_unsendable=self._unsendable_value, pack=self._pack,
                                  max_payload=wire.MAX_FRAME, seal=self._seal)
        self.inbox = flow.Inbox(lambda items, nbytes: conn.grant(items, nbytes, call_id), pickle.loads)
        #: ``QUEUED`` until the main thread takes it (``RUNNING``), ``ENDED`` once answered
        self.state = QUEUED
        #: a Ray driver's call: its task (``raydriver``), set when attached (ahead of its run: ``attach_ahead``)
        self.ray_task: Any = None
        self.cancelled = False
        #: the client may send its input: granted as it came when it queued behind another call, else as it starts
        self.input_granted = False
        #: the call's last frame has been written
        self.finished = False
        self.in_user_code = False
        #: called (from the reader thread) when the call is cancelled: a Ray task is cancelled so
        self.on_cancel: Callable[[], None] | None = None
        #: ``(timeout, idle_timeout)`` in seconds (None: no limit), from the CALL's options
        self.limits: tuple[float | None, float | None] = (None, None)
        #: set by the watchdog when a limit passed: ``"timeout"`` or ``"idle"``
        self.timed_out: str | None = None
        #: the function's run has ended (``_execute`` returned); guards ``timed_out`` against a late watchdog
        self.executed = threading.Event()
        self.settle = threading.Lock()
        #: where the function was when a limit stopped it (for the client's message)
        self.timeout_traceback = ""

    def configure(self, options: dict[str, Any]) -> None:
        render = options.get("render")
        self.render = render if render in values.MODES else None
        self.dumps = values.value_dumps(tuple(options.get("shipped", ())))
        self.skip = int(options.get("skip") or 0)
        self.limits = (_seconds(options.get("timeout")), _seconds(options.get("idle_timeout")))

    def _seal(self, payload: bytes, sent: int) -> bytes:
        """The last frame's payload (``wire.seal``); the call is answered from here: the client,
        which may start another call once it reads this frame, finds room for it on the worker."""
        if self.on_answer is not None:
            self.on_answer(self)
        return wire.seal(payload, sent)

    def _dumps_items(self, items: Any) -> bytes:
        return self.dumps(items)

    def _pack(self, items: list[Any]) -> bytes:
        return flow.pack_values(items, self.render, self.dumps)

    def result_frame(self, value: Any) -> tuple[int, bytes]:
        """RETURN: the value as a batch of one (``flow.pack_return``)."""
        return Kind.RETURN, flow.pack_return(value, self.render, self.dumps)

    def timeout_frame(self, traceback_text: str = "") -> tuple[int, bytes]:
        """RAISE for a call that ran past a limit (``failure: timeout``): the client raises ``TimedOut``."""
        idle = self.timed_out == "idle"
        limit = self.limits[1 if idle else 0] or 0.0
        info = {"type": "TimedOut", "failure": "timeout", "kind": "idle" if idle else "timeout",
                "message": f"{'no progress' if idle else 'timed out'} after {limit:g}s", "traceback": traceback_text}
        return Kind.RAISE, wire.pack_raise(info, b"")

    def raise_frame(self, exc: BaseException, where: str) -> tuple[int, bytes]:
        return _raise_frame(exc, where, None if self.render is not None else self.dumps)

    def info_frame(self, info: dict[str, Any], exc: BaseException | None = None) -> tuple[int, bytes]:
        """RAISE from an already formatted failure (a Ray task's, or the Ray driver's own);
        ``exc`` is pickled too for the API, never for the CLI."""
        return Kind.RAISE, wire.pack_raise(info, flow.pickled_error(exc, self.render, self.dumps))

    def _unsendable_value(self, exc: BaseException) -> tuple[int, bytes]:
        """The frame that ends a call whose yielded value could not be sent back."""
        return self.raise_frame(flow.with_note(exc, flow.unsendable_note(self.render)), "call")

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        self.outbox.cancel()
        self.inbox.end(flow.Cancelled())
        hook = self.on_cancel
        if hook is not None:
            try:
                hook()
            except BaseException:
                pass
        if self.in_user_code:  # interrupt user code blocked in sleep, I/O or a long loop
            # (a timed-out call: ``CallTimedOut`` is raised there, see ``_on_sigint``)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # type: ignore[arg-type]


#: a call's states: waiting for the call before it to end, run by the main thread, answered
QUEUED, RUNNING, ENDED = "queued", "running", "ended"

#: calls a client may have on a worker at once: the running one and the one queued behind it
MAX_CALLS = 2


def _of_call(act: Callable[[CallState, bytes], object]) -> Callable[[Worker, int, bytes], bool]:
    """The handler of a frame kind that speaks of a call: ``act`` on the call of the frame's id,
    running or queued (its input is buffered under its own credit until it runs).

    A frame of a call that has ended (credit, a late CANCEL, input the function no longer reads)
    is ignored, by design: the client sends it before it can know that the call ended, and the call
    id keeps it from touching another call. (The client, by contrast, takes a frame of a call not in
    flight for a protocol error: the worker does not send after a call's end, but for the credit it owes.)"""

    def handle(worker: Worker, call_id: int, payload: bytes) -> bool:
        call = worker.open_calls.get(call_id)
        if call is not None:
            act(call, payload)
        return True

    return handle


class Worker:
    """Runs calls one after another until BYE or the client goes away."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.calls: queue.SimpleQueue[CallState | None] = queue.SimpleQueue()
        #: the running call (None between calls)
        self.current: CallState | None = None
        #: the calls taken and not yet answered, by id: the running one and at most one queued behind it
        self.open_calls: dict[int, CallState] = {}
        #: guards a call's ``state`` (a queued call cancelled by the reader, or started by the main thread)
        self._lock = threading.Lock()
        self.logs: LogForwarder | None = None
        #: the client went silent past the liveness bound (a partition): its sshd session goes too
        self.client_silent = False
        self.silence_bound = 0.0
        #: a queued call's input is granted as its CALL comes, so its records wait here for it; not on a
        #: Ray driver, which puts its link in place of the call's inbox as the call starts (``Link.attach``)
        self.input_ahead = not os.environ.get("SKYCTL_RAY")

    # -- reader thread -------------------------------------------------
    def read_frames(self) -> None:
        """Reader thread: each frame goes to its kind's handler (``_HANDLERS``) until BYE. A
        kind the client never sends is, like garbage, a protocol error: the worker leaves."""
        try:
            while True:
                kind, call_id, payload = wire.read_call_frame(self.conn.read)
                handler = self._HANDLERS.get(kind)
                if handler is None:
                    raise wire.ProtocolError(f"a {kind.name} frame, which only the worker sends")
                if not handler(self, call_id, payload):
                    break
        except BaseException:  # noqa: BLE001 - EOF, garbage, anything: the client is gone either way
            pass
        self.leave()

    def _on_call(self, call_id: int, payload: bytes) -> bool:
        """A CALL: queued for the main thread, which runs calls one at a time. Its input window is
        granted now, so that a call queued behind a running one has its records here when it starts
        (bounded: one window per queued call, and a client has at most ``MAX_CALLS`` open)."""
        with self._lock:
            if call_id in self.open_calls or len(self.open_calls) >= MAX_CALLS:
                raise wire.ProtocolError(f"a CALL {call_id} with calls {sorted(self.open_calls)} open")
            call = self.open_calls[call_id] = CallState(self.conn, payload, call_id, self._answered)
            queued = len(self.open_calls) > 1
        if queued and self.input_ahead:  # its records wait here for it (a call that runs at once is granted
            # as it starts, when it has unpickled its payload)
            call.input_granted = True
            self.conn.grant(flow.WINDOW_ITEMS, flow.WINDOW_BYTES, call_id)  # unused by a call without a stream
        elif queued:  # a Ray driver: to the running call's task, to run there next, its records streaming ahead
            from . import raydriver

            call.input_granted = raydriver.attach_ahead(call)
        self.calls.put(call)
        return True

    def _on_cancel(self, call_id: int, payload: bytes) -> bool:
        """CANCEL: the running call is interrupted; a queued one is answered CANCELLED at once, never run."""
        call = self.open_calls.get(call_id)
        if call is not None:
            self._cancel(call)
        return True

    def _answered(self, call: CallState) -> None:
        with self._lock:
            self.open_calls.pop(call.id, None)

    def _cancel(self, call: CallState) -> None:
        with self._lock:
            queued = call.state == QUEUED
            if queued:
                call.state = ENDED
                self.open_calls.pop(call.id, None)
        call.cancel()
        if queued:  # its sender thread writes it (the reader never waits on a pipe for it)
            call.outbox.finish((Kind.CANCELLED, b""))

    _HANDLERS: dict[Kind, Callable[[Worker, int, bytes], bool]] = {
        Kind.CALL: _on_call,
        Kind.BYE: lambda worker, call_id, payload: False,  # the loop ends: the worker leaves
        Kind.ITEMS_IN: _of_call(lambda call, payload: call.inbox.push(payload)),
        Kind.END_IN: _of_call(lambda call, payload: call.inbox.end(None)),
        Kind.INPUT_FAILED: _of_call(lambda call, payload: call.inbox.end(_INPUT_FAILED)),
        Kind.CREDIT: _of_call(lambda call, payload: call.outbox.grant(*wire.unpack_credit(payload))),
        Kind.CANCEL: _on_cancel,
        # the client is still there: its bytes were counted as they were read (``Connection.heard``)
        Kind.HEARTBEAT: lambda worker, call_id, payload: True,
    }

    def leave(self) -> None:
        """The client said goodbye or is gone: stop what runs, then exit (at the latest ``EXIT_GRACE`` s later)."""
        with _leaving:
            if self.left:
                return
            self.left = True
        for call in list(self.open_calls.values()):
            self._cancel(call)
        self.calls.put(None)
        threading.Thread(target=_exit_after_grace, name="skyctl-exit-grace", daemon=True).start()

    left = False

    # -- heartbeat thread ------------------------------------------------
    def keep_alive(self, interval: float, bound: float) -> None:
        """Send HEARTBEAT after ``interval`` s of silence (the client's deadline);
        leave when nothing came from the client for ``bound`` s: it sends a
        HEARTBEAT every ``interval`` s of silence, so it is gone (a partition,
        a client stopped or killed with its connection left open), and nothing
        of its call may outlive it here."""
        while True:
            time.sleep(min(interval, bound) / 2)
            call = self.current
            if call is None or call.finished:
                state = wire.IDLE
            else:
                state = wire.STARVED if call.inbox.waiting and not call.cancelled else b""
            try:  # the id of the call the state is of (the reader may be taking the next CALL meanwhile)
                self.conn.writer.heartbeat(interval, state, call.id if call is not None else 0)
            except BaseException:  # noqa: BLE001 - the reader sees the same failure
                pass
            silent = time.monotonic() - self.conn.heard
            if silent > bound:
                try:
                    os.write(2, f"skyctl worker: nothing from the client for {silent:.0f}s (bound {bound:g}s): "
                                f"ending the call and exiting\n".encode())
                except OSError:
                    pass
                self.client_silent, self.silence_bound = True, bound
                self.leave()
                return

    # -- watchdog thread (a call with a time limit) ------------------------------
    def watch(self, call: CallState) -> None:
        """End ``call`` when it runs past its ``timeout``, or sends no value and takes no input
        for its ``idle_timeout``: the function is interrupted (``CallTimedOut`` in it, its
        ``finally`` runs), its processes get SIGTERM, then SIGKILL after ``TIMEOUT_GRACE``; a
        function still running then (stuck where no signal reaches it) is given up: the worker
        answers the call with the timeout frame itself and exits."""
        timeout, idle = call.limits
        started = last = time.monotonic()
        seen: tuple[int, int] = (-1, -1)
        step = min(0.25, (idle or 1.0) / 4, (timeout or 1.0) / 4)
        while not call.executed.wait(step):
            now = time.monotonic()
            progress = (call.outbox.sent, call.inbox.taken)
            if progress != seen:
                seen, last = progress, now
            if timeout is not None and now - started >= timeout:
                kind = "timeout"
            elif idle is not None and now - last >= idle:
                kind = "idle"
            else:
                continue
            with call.settle:
                if call.executed.is_set():
                    return
                call.timed_out = kind
            self._time_out(call)
            return

    def _time_out(self, call: CallState) -> None:
        deadline = time.monotonic() + TIMEOUT_GRACE
        call.cancel()  # the function is interrupted where it is; a Ray task is cancelled
        reaper.end_descendants(TIMEOUT_GRACE)  # SIGTERM to its processes, SIGKILL to those left after the grace
        if call.executed.wait(max(0.0, deadline - time.monotonic())):
            return  # it ended: the main thread answers the call
        try:
            os.write(2, f"skyctl worker: the timed-out function did not end within {TIMEOUT_GRACE:g}s: "
                        "answering without it and exiting\n".encode())
        except OSError:
            pass
        _end_leftovers()
        if self.logs:
            self.logs.drain()
        call.outbox.finish(call.timeout_frame("(the function did not stop when interrupted)\n"))
        call.outbox.join(TIMEOUT_GRACE)
        os._exit(0)

    # -- main thread ---------------------------------------------------
    def serve(self) -> None:
        """Run the calls in the order they came, each once the one before it has been answered."""
        while True:
            call = self.calls.get()
            if call is None:
                return
            with self._lock:
                if call.state != QUEUED:  # cancelled while it waited: answered already
                    continue
                call.state = RUNNING
                self.current = call
            self.conn.writer.call = call.id  # what the frames it causes (LOG) carry
            try:
                self.run_call(call)
            finally:
                with self._lock:
                    call.state = ENDED
                    self.open_calls.pop(call.id, None)  # (answered: gone already, see ``CallState._seal``)

    def run_call(self, call: CallState) -> None:
        terminal = self._execute_within_limits(call)
        call.in_user_code = False
        if call.ray_task is None:  # (a Ray task's processes and output are its Ray worker's, not this process's)
            _end_leftovers(warn=True)  # before the last frame: when the client sees the end, they are gone
            if self.logs:
                self.logs.drain()
        call.outbox.finish(terminal)
        call.outbox.join()
        call.finished = True  # its last frame is written: heartbeats say IDLE from now on

    def _execute_within_limits(self, call: CallState) -> tuple[int, bytes]:
        """``_execute``, watched by a thread of its own when the call has a time limit: a call
        that timed out is answered with the timeout frame, whatever the function ended with."""
        terminal = self._execute(call)
        with call.settle:
            call.executed.set()
            timed_out = call.timed_out
        if timed_out is None:
            return terminal
        return call.timeout_frame(call.timeout_traceback)

    def _execute(self, call: CallState) -> tuple[int, bytes]:
        """Run the call; returns the frame that ends it."""
        try:
            fn, args, kwargs, stream_at, credit, options = pickle.loads(call.payload)
            call.configure(options)
        except BaseException as exc:
            return call.raise_frame(exc, "load")
        if call.limits != (None, None):
            threading.Thread(target=self.watch, args=(call,), name="skyctl-watchdog", daemon=True).start()
        ray_options = options.get("ray") if isinstance(options, dict) else None
        if ray_options is not None:  # a ``type: ray`` host: this worker is the Ray driver (the task gets the credit)
            from . import raydriver

            return raydriver.execute(call, self.conn, fn, args, kwargs, stream_at, credit, options, _INPUT_FAILED)
        call.outbox.grant(*credit)  # (its input window was granted when the CALL came: ``_on_call``)
        if stream_at is not None:
            where, key = stream_at
            if where == "arg":
                args = list(args)
                args[key] = _stream_input(call.inbox)
            else:
                kwargs[key] = _stream_input(call.inbox)
        if not call.input_granted:
            call.input_granted = True
            self.conn.grant(flow.WINDOW_ITEMS, flow.WINDOW_BYTES, call.id)  # unused by a call without a stream
        gen = values = None
        try:
            call.in_user_code = True
            result = fn(*args, **kwargs)
            if not isinstance(result, types.GeneratorType):
                call.in_user_code = False
                return call.result_frame(result)
            gen = result
            returned: list[Any] = []
            values = gen if _returns_only_none(gen.gi_code) else _returning(gen, returned)
            flow.skip_written(values, call.skip)
            outbox = call.outbox
            while True:
                call.in_user_code = False
                outbox.wait_for_room()  # blocks while the client has granted no credit
                call.in_user_code = True  # a run of the user's generator, driven from C
                if not outbox.put_run(values):
                    call.in_user_code = False
                    return call.result_frame(returned[0] if returned else None)
        except BaseException as exc:
            call.in_user_code = False
            if isinstance(exc, CallTimedOut) or call.timed_out is not None:
                call.timeout_traceback = _user_traceback(exc)
            # a value that did not pickle cancels the outbox, which then ends the call with that error
            unsendable = isinstance(exc, flow.Cancelled) and call.outbox.unsendable is not None
            if call.cancelled or isinstance(exc, InputFailed) or unsendable:
                _close_quietly(values)
                _close_quietly(gen)
                return Kind.CANCELLED, b""
            return call.raise_frame(exc, "call")


class CallTimedOut(BaseException):
    """Raised in the function when its call ran past its time limit (a ``BaseException``, as
    ``KeyboardInterrupt``: an ``except Exception`` does not swallow it; ``finally`` runs)."""


def _seconds(value: Any) -> float | None:
    """A limit from the CALL's options: seconds greater than 0, else None (no limit)."""
    try:
        seconds = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return seconds if seconds is not None and seconds > 0 else None


def _user_traceback(exc: BaseException) -> str:
    """Where the function was when it was stopped: its traceback, skyctl's frames removed."""
    try:
        return str(raytask.error_info(exc, "call", _is_own)["traceback"])
    except BaseException:  # noqa: BLE001 - only for the message
        return ""


#: the inbox ending that INPUT_FAILED puts after the last good input item
_INPUT_FAILED = "input failed"


class InputFailed(GeneratorExit):
    """Raised where the function reads past the last good input item when the
    client's input broke (a bad stdin record): it stops as if closed, after
    every item before the bad one was consumed and its values sent."""


def _stream_input(inbox: flow.Inbox) -> Iterator[Any]:
    """The stream parameter's items (a C-level iterator over the arriving
    batches); raises ``InputFailed`` at the point the client's input broke."""
    return chain.from_iterable(_input_batches(inbox))


def _input_batches(inbox: flow.Inbox) -> Iterator[Any]:
    """The inbox's batches; once they are used up, raise if the client's input broke."""
    yield from inbox.batches()
    if inbox.ending is _INPUT_FAILED:
        raise InputFailed()


def _returning(gen: Generator[Any, Any, Any], returned: list[Any]) -> Generator[Any, Any, None]:
    """``gen``'s values; its return value is appended to ``returned`` (a run
    driven through ``islice`` would drop it)."""
    returned.append((yield from gen))


def _returns_only_none(code: types.CodeType) -> bool:
    """Whether a generator's code can only return None, read from its bytecode
    (False when unsure): then it is driven as it is, without the extra
    generator step per value that ``_returning`` costs.

    Every return must load the constant None right before it, and no jump may
    land on the return itself (a shared return of ``a if c else None``).
    """
    try:
        import dis

        before = None
        for ins in dis.get_instructions(code):
            if ins.opname == "RETURN_CONST" and ins.argval is not None:
                return False
            if ins.opname == "RETURN_VALUE" and (
                ins.is_jump_target or before is None or before.opname != "LOAD_CONST" or before.argval is not None
            ):
                return False
            before = ins
        return True
    except Exception:  # an interpreter whose bytecode reads differently
        return False


def _close_quietly(gen: Any) -> None:
    if gen is None:
        return
    try:
        gen.close()
    except BaseException:
        pass


def _exit_after_grace() -> None:
    time.sleep(EXIT_GRACE)
    _end_leftovers()
    _exit()


def _exit() -> None:
    """Exit now; after a silent client, with its sshd session (nothing of the call outlives it)."""
    if _worker is not None and _worker.client_silent:
        reaper.end_ssh_session_when_alone(_worker.silence_bound)
    os._exit(0)


def _end_leftovers(warn: bool = False) -> None:
    """End every process the function started and left running (see ``reaper``)."""
    ended = reaper.end_descendants(reaper.CALL_GRACE if warn else reaper.EXIT_GRACE)
    if ended and warn:
        message = (f"skyctl: ended {len(ended)} process{'es' if len(ended) > 1 else ''} the function left running "
                   f"(nothing outlives a call): {reaper.describe(ended)}\n")
        try:
            os.write(2, message.encode(errors="replace"))
        except OSError:
            pass


def _on_sigterm(signum: int, frame: Any) -> None:
    """A transport gave up waiting for the worker: end what the function started, then die of SIGTERM."""
    _end_leftovers()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
    os._exit(128 + signal.SIGTERM)


def _raise_frame(exc: BaseException, where: str, dumps: Callable[[Any], bytes] | None) -> tuple[int, bytes]:
    """RAISE: type name, message and traceback text; the pickled exception
    too for the API (``dumps``), never for the CLI."""
    info = raytask.error_info(exc, where, _is_own)
    try:
        pickled = dumps(exc) if dumps is not None else b""
    except BaseException:
        pickled = b""
    return Kind.RAISE, wire.pack_raise(info, pickled)


def _on_sigint(signum: int, frame: Any) -> None:
    call = _worker.current if _worker else None
    if call is not None and call.cancelled and call.in_user_code:
        if call.timed_out is not None:
            raise CallTimedOut(f"the call ran past its {'idle ' if call.timed_out == 'idle' else ''}time limit")
        raise KeyboardInterrupt()


_worker: Worker | None = None
_leaving = threading.Lock()


def _warm_ray(spec: str, conn: Connection) -> None:
    from . import raydriver

    raydriver.warm(spec, conn, _INPUT_FAILED)


def main(in_fd: int = 0, out_fd: int = 1) -> None:
    """Serve calls over ``in_fd``/``out_fd`` (the bootstrap stub's stdin/stdout; a spare's client's socket)."""
    global _worker
    claimed = None
    if spare.ENV in os.environ:  # a spare: warm up and wait for a client, whose socket it serves then
        claimed = in_fd = out_fd = spare.wait_for_client(os.environ.pop(spare.ENV))
    proto_in, proto_out = os.dup(in_fd), os.dup(out_fd)
    if claimed is not None:
        os.close(claimed)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # user code reading stdin must not eat frames
    os.close(devnull)
    clock = watcher.Clock()
    conn = Connection(proto_in, proto_out, clock.view)
    ray_spec = os.environ.get("SKYCTL_RAY")  # a Ray driver: connects while the first call comes (raydriver.warm)
    if ray_spec and claimed is not None:  # a spare (connected): its call's task is leased while HELLO and the call come
        _warm_ray(ray_spec, conn)
    interval, bound = wire.liveness(os.environ.get("SKYCTL_LIVENESS"))
    # a process that ends the worker when its client is gone and its threads cannot run (a GIL held in C): the
    # shell that starts it runs beside the import of cloudpickle and HELLO (``started`` reaps it)
    watcher.start(proto_in, clock, bound, WATCH_GRACE)
    worker = _worker = Worker(conn)
    signal.signal(signal.SIGINT, _on_sigint)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    import cloudpickle

    conn.send(
        Kind.HELLO,
        wire.pack_json(
            {
                "protocol": wire.PROTOCOL_VERSION,
                "python": "%d.%d.%d" % sys.version_info[:3],
                "cloudpickle": cloudpickle.__version__,
                "pid": os.getpid(),
            }
        ),
    )
    watcher.started()  # its shell reaped: the watcher is init's, not the subreaper's below
    reaper.become_subreaper()  # after HELLO: the client is busy with it meanwhile; before any user code
    worker.logs = LogForwarder(conn)
    if ray_spec and claimed is None:  # (after the log forwarder: what ray.init prints goes to the client)
        _warm_ray(ray_spec, conn)
    threading.Thread(target=worker.read_frames, name="skyctl-reader", daemon=True).start()
    threading.Thread(target=worker.keep_alive, args=(interval, bound), name="skyctl-heartbeat", daemon=True).start()
    try:
        worker.serve()
    finally:
        if __package__ + ".raydriver" in sys.modules:  # a Ray driver: its kept task ends before the driver does
            sys.modules[__package__ + ".raydriver"].leave()
        _end_leftovers()  # also what threads the function left behind started after its call
        if worker.logs:
            worker.logs.drain()
    _exit()
