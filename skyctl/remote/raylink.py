"""The Ray driver's end of the direct link to a task (the task's end is ``raycall``).

Ray places and schedules a call's task; its data does not go through Ray
objects (a cost per object that was most of a chunk's time) but over a TCP
connection the task opens back to the driver: the driver listens on its own
node's address (the one its Ray node registered, so the task can reach it),
a port of the system's choice, for this task only, and takes the first
connection that sends the 16 random bytes the task was given in its
arguments (anything else is closed unanswered). A task on the driver's own
Ray node connects to an abstract Unix socket the link listens on as well
(same token, same frames; ``Link.local``): it costs both ends about half
what loopback TCP does per byte.

A ``Link`` carries the task's calls (``attach``: a CALL frame with the call,
then its frames, each with the link's call id), which the task runs one after
another. A ``pipe`` slot's next call may be attached while one runs (the
worker's reader thread, ``raydriver.attach_ahead``): its CALL and records
reach the task ahead, and it starts there the moment the one before it ends,
with no round trip to the client between them. A call's values go to the
client only once every call attached before it has been answered (they are
held until then: the client's credit bounds them), so the client sees one
call's last frame before the next call's values. Each call has a ``Port``,
which stands in for the call's Inbox and Outbox in the worker's
``CallState``: the worker's reader thread hands it the client's frames
(``push``, ``end``, ``grant``, ``cancel``) and it relays them to the task as
they are; the task's value batches go to the client as they came (the client
checks them as any worker's: the driver decodes nothing), its input credit
goes back as the worker's own, and its last frame is kept for ``raydriver``
to end the call with, sealed with the count of values the port relayed
(``finish``). So credit runs end to end, client to task, and a slow reader
pauses the task; the driver holds at most what the client's input window
allows.

Threads, per link: ``skyctl-ray-link`` accepts the task's connection and then
reads its frames; the driver's frames to it are written by whoever puts them
(the worker's reader thread, mostly), and ``skyctl-ray-input`` writes only
what the socket could not take at once (``Link.put``).
"""

from __future__ import annotations

import hmac
import os
import select
import socket
import threading
from typing import Any, Callable

from . import flow, wire
from .raytask import TOKEN_BYTES
from .wire import Kind

#: seconds a connection has to send the token once accepted
TOKEN_SECONDS = 10.0
#: seconds between two looks at whether the call ended while no task has connected
ACCEPT_POLL = 0.5

class Link:
    """The connection to one task (see the module's docstring): it carries the task's calls one at a time,
    each through a ``Port`` (``attach``).

    Args:
        send: writes one frame of a call to the client (the worker's ``Connection.send``: kind, payload, call id).
        grant: grants the client input credit for a call (the worker's ``Connection.grant``).
        input_failed: the inbox ending the worker's INPUT_FAILED handler puts.
        host: the address to listen on (the driver's Ray node's).
    """

    def __init__(self, send: Callable[[int, bytes, int], None], grant: Callable[[int, int, int], None],
                 input_failed: Any, host: str, node: str | None = None) -> None:
        self._send = send
        self._grant = grant
        self._input_failed = input_failed
        self.token = os.urandom(TOKEN_BYTES)
        tcp = socket.create_server((host, 0), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.address = (host, int(tcp.getsockname()[1]))
        self._listeners = [tcp]
        #: ``(name, node)``: an abstract Unix socket a task on the driver's own Ray node (``node``) connects to
        #: instead (the same frames, a token all the same; a Unix socket costs both ends about half of what
        #: loopback TCP does per byte); None without a node id or where it cannot listen
        self.local: tuple[str, str] | None = None
        if node and hasattr(socket, "AF_UNIX"):
            name = "\0skyctl-ray-" + os.urandom(12).hex()
            try:
                unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                unix.bind(name)
                unix.listen(4)
            except OSError:
                pass
            else:
                self._listeners.append(unix)
                self.local = (name, node)
        self._sock: socket.socket | None = None
        #: what waits for the input thread, in order: headers and payloads (sent while nothing waits, see ``put``)
        self._backlog: list[Any] = []
        self._backlog_changed = threading.Condition(threading.Lock())
        self._closed = False
        self._calls = 0
        #: the calls it carries, by their id on the link, until the task's last frame of each came
        self.ports: dict[int, Port] = {}
        #: the calls attached and not yet answered to the client, in order: only the first relays values
        self._unanswered: list[Port] = []
        self._order = threading.Lock()
        #: set once the task has connected (and sent its token)
        self.connected = threading.Event()
        #: set once the connection has ended (the task's end, or ``close``)
        self.done = threading.Event()
        threading.Thread(target=self._run, name="skyctl-ray-link", daemon=True).start()

    def attach(self, call: Any, payload: bytes, credit: tuple[int, int]) -> Port:
        """Give the task ``call`` (``payload``: what ``raycall.run`` reads as a CALL) and the client's credit
        for values; the ``Port`` takes the place of the call's Inbox and Outbox (before any input was
        granted or value sent), and the call's own outbox's idle sender thread ends. A call attached while
        another is unanswered runs after it in the task, its values held until that one is answered."""
        with self._order:
            self._calls += 1
            port = Port(self, self._calls, call, held=bool(self._unanswered))
            self.ports[port.id] = port
            self._unanswered.append(port)
        self.put(Kind.CALL, port.id, payload)
        self.put(Kind.CREDIT, port.id, wire.pack_credit(*credit))
        old = call.outbox
        call.inbox = call.outbox = port
        old.finish()
        return port

    def put(self, kind: int, call_id: int, payload: Any = b"") -> None:
        """A frame for the task: written at once by the caller when nothing waits for the input thread and
        the socket takes it whole without blocking (the usual case: the task reads as frames come, and the
        client's credit bounds what is in flight), else left, in order, for the input thread, which may
        block. Why: a hand-off to another thread per frame cost the driver more CPU than the write."""
        header = wire.HEADER.pack(wire.PROTOCOL_VERSION, kind, call_id, len(payload))
        with self._backlog_changed:
            sock = self._sock
            if sock is not None and not self._backlog and not self._closed:
                parts = [header, payload] if len(payload) else [header]
                try:
                    sent = sock.sendmsg(parts, (), socket.MSG_DONTWAIT)
                except BlockingIOError:
                    sent = 0
                except OSError:  # broken: the link thread sees it; nothing more goes to the task
                    return
                if sent == len(header) + len(payload):
                    return
                self._backlog.append(b"".join(parts)[sent:])
            else:
                self._backlog.append(header)
                if len(payload):
                    self._backlog.append(payload)
            self._backlog_changed.notify()

    def close(self) -> None:
        """End the connection: the task sees EOF (and ends, its call cancelled if one ran); both threads end."""
        with self._backlog_changed:
            self._closed = True
            self._backlog_changed.notify()
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _run(self) -> None:
        """Link thread: accept the task, start the input thread, relay the task's frames until EOF."""
        try:
            sock = self._accept()
            if sock is None:
                return
            with self._backlog_changed:
                self._sock = sock
            self.connected.set()
            if self._closed:  # closed while it connected
                sock.shutdown(socket.SHUT_RDWR)
                return
            threading.Thread(target=self._write, args=(sock,), name="skyctl-ray-input", daemon=True).start()
            self._relay(wire.fd_reader(sock.fileno()))
        except BaseException:  # noqa: BLE001 - a broken link: raydriver asks Ray what became of the task
            pass
        finally:
            for listener in self._listeners:
                listener.close()
            self.close()
            self.done.set()
            for port in list(self.ports.values()):
                port.end_with(None)

    def _accept(self) -> socket.socket | None:
        poller = select.poll()  # (not ``select.select``: a driver's fds may pass 1023)
        by_fd = {listener.fileno(): listener for listener in self._listeners}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        while not self._closed:
            ready = poller.poll(ACCEPT_POLL * 1000)
            if not ready:
                continue
            try:
                sock, _ = by_fd[ready[0][0]].accept()
            except OSError:
                continue
            try:
                sock.settimeout(TOKEN_SECONDS)
                token = b""
                while len(token) < TOKEN_BYTES:
                    piece = sock.recv(TOKEN_BYTES - len(token))
                    if not piece:
                        break
                    token += piece
                if hmac.compare_digest(token, self.token):
                    sock.settimeout(None)
                    if sock.family != socket.AF_UNIX:
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    return sock
            except OSError:
                pass
            sock.close()  # not our task
        return None

    def has_next(self, port: Port) -> bool:
        """Whether a call attached after ``port``'s is still to be answered (the task is that call's next)."""
        with self._order:
            if port in self._unanswered:
                return self._unanswered[-1] is not port
            return bool(self._unanswered)

    def _answered(self, port: Port) -> None:
        """``port``'s last frame went to the client: the next unanswered call relays its values from now on."""
        with self._order:
            if port in self._unanswered:
                self._unanswered.remove(port)
            head = self._unanswered[0] if self._unanswered else None
        if head is not None:
            head.release()

    def _relay(self, read: Callable[[int], bytes]) -> None:
        """The task's frames: each call's values to the client, its input credit back as the worker's own,
        its last frame to its port. The task runs its calls in order: a frame of a call whose predecessor
        has not ended there, or of no call, is not the task's to send."""
        while True:
            kind, call_id, payload = wire.read_call_frame(read)
            port = self.ports.get(call_id)
            earlier = [other for other in list(self.ports.values()) if other.id < call_id]
            if port is None or any(other.terminal is None for other in earlier):
                raise wire.ProtocolError(f"a {kind.name} frame of call {call_id} from the Ray task")
            for other in earlier:  # the task is done with them
                del self.ports[other.id]
            if kind == Kind.ITEMS_OUT:
                port.relay(payload)
            elif kind == Kind.CREDIT:
                if port.terminal is None:  # (credit flushed behind a call's end: the client has no use for it)
                    self._grant(*wire.unpack_credit(payload), port.call_id)
            elif kind in (Kind.RETURN, Kind.RAISE, Kind.CANCELLED):
                if port.terminal is not None:
                    raise wire.ProtocolError(f"a second last frame of call {call_id} from the Ray task")
                port.end_with((kind, payload))
            else:
                raise wire.ProtocolError(f"a {kind.name} frame from the Ray task")

    def _write(self, sock: socket.socket) -> None:
        """Input thread: what waits in the backlog to the task, all of it in one write (blocking). What it
        writes stays in the backlog until written, so that ``put`` queues behind it, in order."""
        changed = self._backlog_changed
        try:
            while True:
                with changed:
                    while not self._backlog and not self._closed:
                        changed.wait()
                    if self._closed:
                        return
                    count = len(self._backlog)
                    data = b"".join(self._backlog)
                sock.sendall(data)
                with changed:
                    del self._backlog[:count]
        except OSError:
            pass
        finally:
            self.done.wait(TOKEN_SECONDS)  # the link thread has stopped reading it (``close`` shut it down)
            sock.close()


class Port:
    """One call on a link: stands in for the call's Inbox and Outbox in the worker's ``CallState``. Once
    the call has ended (``finish``) it passes nothing on: a late frame of the client's for it is dropped."""

    def __init__(self, link: Link, call_id: int, call: Any, held: bool = False) -> None:
        self._link = link
        self.id = call_id
        self._call = call
        #: the id the client knows the call by
        self.call_id: int = call.id
        self._relaying = threading.Lock()
        #: values from the task held until the calls attached before this one are answered (None: relayed)
        self._held: list[bytes] | None = [] if held else None
        self._finished = False
        self._ended_input = False
        #: values relayed to the client; input batches relayed to the task (progress, for the idle watchdog)
        self.sent = 0
        self.taken = 0
        #: as an Inbox's and an Outbox's: what ended the input, whether the call was cancelled
        self.ending: Any = None
        self.cancelled = False
        self.waiting = False
        self.unsendable = None
        #: the task's last frame for the call (RETURN, RAISE or CANCELLED, without the count), once it came
        self.terminal: tuple[Kind, bytes] | None = None
        #: set when that frame came or the link ended without it
        self.ended = threading.Event()
        self._on_ended: list[Callable[[], None]] = []

    def when_ended(self, callback: Callable[[], None]) -> None:
        """``callback()`` once ``ended`` is set (at once if it is)."""
        self._on_ended.append(callback)
        if self.ended.is_set():
            callback()

    def end_with(self, terminal: tuple[Kind, bytes] | None) -> None:
        """The call's last frame came (or, None, the link ended without it): the link thread."""
        if terminal is not None:
            self.terminal = terminal
        self.ended.set()
        for callback in self._on_ended:
            callback()

    def open_input(self) -> None:
        """Grant the client the input window: its records come into the link, and on to the task once it
        connects; the task's Inbox returns credit as it takes them, relayed as the worker's own."""
        self._link._grant(flow.WINDOW_ITEMS, flow.WINDOW_BYTES, self.call_id)

    def relay(self, payload: bytes) -> None:
        """A batch of values from the task to the client (the link thread); held while a call before it is
        unanswered (at most the client's credit for this call)."""
        with self._relaying:
            if self._finished:
                return
            if self._held is not None:
                self._held.append(payload)
                return
            self._pass_on(payload)

    def release(self) -> None:
        """The calls before this one on the link are answered: the values held go to the client, and the
        next ones as they come."""
        with self._relaying:
            held, self._held = self._held, None
            for payload in held or ():
                if not self._finished:
                    self._pass_on(payload)

    def _pass_on(self, payload: bytes) -> None:
        """A batch to the client, counted (``_relaying`` held)."""
        self._link._send(Kind.ITEMS_OUT, payload, self.call_id)
        self.sent += flow.batch_size(payload)

    # -- as the call's Inbox (from the worker's reader thread) -------------------------------
    def push(self, payload: Any) -> None:
        if not self._finished:
            self.taken += 1
            self._link.put(Kind.ITEMS_IN, self.id, payload)

    def end(self, ending: Any) -> None:
        if self._ended_input or self._finished:
            return
        self._ended_input = True
        self.ending = ending
        if ending is None:
            self._link.put(Kind.END_IN, self.id)
        elif ending is self._link._input_failed:
            self._link.put(Kind.INPUT_FAILED, self.id)
        else:  # cancelled
            self.cancel()

    # -- as the call's Outbox ----------------------------------------------------------------
    def grant(self, items: int, nbytes: int) -> None:
        if not self._finished:
            self._link.put(Kind.CREDIT, self.id, wire.pack_credit(items, nbytes))

    def cancel(self) -> None:
        if not self.cancelled and not self._finished:
            self.cancelled = True
            self._link.put(Kind.CANCEL, self.id)

    def finish(self, *frames: tuple[int, bytes]) -> None:
        """The call's last frame(s) to the client, sealed with the count of values relayed (by the call's
        ``_seal``: the call is answered from then on, and the worker has room for the client's next CALL);
        nothing is relayed after."""
        with self._relaying:
            if self._finished:
                return
            self._finished = True
            try:
                for kind, payload in frames:
                    self._link._send(kind, self._call._seal(payload, self.sent), self.call_id)
            finally:
                self._held = None
                self._link._answered(self)

    def join(self, timeout: float | None = None) -> bool:
        return True
