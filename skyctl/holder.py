"""The holder of a kept SSH connection: a background process serving skyctl clients.

Started detached by ``transports.reuse.ReuseTransport`` (``python -c ...
holder.main()``) with its parameters as one JSON line on stdin. It connects
with an ``SshTransport`` (so host keys, gateways, ``~/.ssh/config`` and error
messages are the direct transport's), answers the starting client with one
JSON line on stdout (ready, or the ``ConnectError``), then listens on its
Unix socket (mode 0600, in the private directory the client checked).

Each client connection is one command: ``REQUEST`` (argv) → a round trip on
the SSH connection (a stalled peer would otherwise hang the call: without an
answer in time the holder answers ``FAILED``/``Stale``, gives the connection
up and exits, and the client connects directly) → a fresh exec
channel, or the spare one when its argv is identical → ``STARTED``; then
stdin/stdout/stderr/exit status are relayed as frames (see
``transports.reuse``). When the client goes away (also SIGKILL) the channel
is closed like ``SshPipes.close`` does it: EOF, then TERM and KILL.

The spare: as soon as a call's command has got as far as ``SKYCTL ready``
(the stub works), the holder starts the same argv again and keeps that one
channel running, unused, for the next call: the remote exec and Python
start-up are then off the next call's critical path (and the spare's exec
happens while this call still runs, not after its client has gone). The
argv names only the interpreter (the stub reads the call's workdir, env and
pip from stdin), so one spare serves every workdir. A spare is used at most
once (every call still gets a fresh interpreter); a different argv closes it. Set
``SKYCTL_REUSE_SPARE=0`` in the environment of the client that starts the
holder to turn spares off.

The holder exits after ``idle`` seconds without clients (each client's
request carries its profile's ``reuse_idle``), when its SSH connection is
gone, or on SIGTERM; it then closes the spare (the idle worker sees EOF and
exits) and the connection, and removes its socket and pid file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import socket
import sys
import threading
import time
from typing import Any

from .config import HostProfile
from .errors import ConnectError, SkyctlError
from .transports.reuse import (
    BUSY,
    FAILED,
    FRAME,
    LOST,
    ROUND_TRIP_TIMEOUT,
    SESSION_REFUSED,
    STALE,
    REQUEST,
    STARTED,
    STDERR,
    STDIN,
    STDIN_EOF,
    STDOUT,
    EXIT,
    error_payload,
    recv_frame,
)
from .transports.ssh import SshPipes, SshTransport

#: bytes read from a channel per STDOUT frame
CHUNK = 256 * 1024
#: the stub's line saying the worker is about to start: a command that printed it is worth a spare
READY_MARK = b"SKYCTL ready\n"
#: how far into a command's stdout the mark is looked for
READY_SCAN = 64 * 1024
#: seconds between checks of the idle time and of the connection
TICK = 0.25


#: log every call and spare too (``SKYCTL_DEBUG`` set for the client that started the holder)
DEBUG = bool(os.environ.get("SKYCTL_DEBUG"))


def _debug(message: str) -> None:
    if DEBUG:
        _log(message)


def _log(message: str) -> None:
    with contextlib.suppress(Exception):
        sys.stderr.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} holder[{os.getpid()}]: {message}\n")
        sys.stderr.flush()


class HeldPipes(SshPipes):
    """``SshPipes`` whose stderr also goes to a sink once one is attached (the client of the call)."""

    _sink: Any = None

    def _stderr_chunk(self, chunk: bytes) -> None:
        sink = self._sink
        if sink is not None:
            with contextlib.suppress(Exception):
                sink(chunk)

    def attach(self, sink: Any) -> None:
        """Send what stderr has had so far, then every later chunk, to ``sink`` (in order)."""
        with self._tail_lock:
            if self._tail:
                with contextlib.suppress(Exception):
                    sink(bytes(self._tail))
            self._sink = sink

    @property
    def alive(self) -> bool:
        """Still running and untouched: usable as a spare."""
        chan = self._chan
        transport = chan.get_transport()
        return bool(
            not self._closed and not chan.closed and not chan.eof_received and not chan.exit_status_ready()
            and transport is not None and transport.is_active()
        )


class Holder:
    def __init__(self, transport: SshTransport, sock_path: str, pid_file: str, idle: float, spares: bool) -> None:
        self.transport = transport
        self.sock_path = sock_path
        self.lock_path = sock_path[: -len(".sock")] + ".lock"
        self.pid_file = pid_file
        self.idle = idle
        self.spares = spares
        self.lock = threading.Lock()
        self.active = 0
        self.last_used = time.monotonic()
        self.spare: tuple[list[str], HeldPipes] | None = None
        self.refilling = False
        self.closing = False
        self.stop = threading.Event()
        self.listener: socket.socket | None = None
        self.sock_ino = 0
        #: running calls by client socket fd: watched for the client hanging up
        self.calls: dict[int, tuple[socket.socket, HeldPipes]] = {}

    # -- the socket -----------------------------------------------------------

    def listen(self) -> None:
        tmp = f"{self.sock_path}.{os.getpid()}.tmp"
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(tmp)
        finally:
            os.umask(old)
        os.chmod(tmp, 0o600)
        listener.listen(64)
        os.replace(tmp, self.sock_path)
        self.sock_ino = os.stat(self.sock_path).st_ino
        self.listener = listener
        fd = os.open(self.pid_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, b"%d\n" % os.getpid())
        os.close(fd)

    def serve(self) -> None:
        """Accept clients; notice clients that hang up (even while their thread is blocked); exit when due."""
        assert self.listener is not None
        listen_fd = self.listener.fileno()
        while True:
            poller = select.poll()
            poller.register(listen_fd, select.POLLIN)
            with self.lock:
                watched = list(self.calls)
            for fd in watched:
                poller.register(fd, 0)  # POLLHUP/POLLERR are always reported
            events = poller.poll(TICK * 1000)
            for fd, _ in events:
                if fd == listen_fd:
                    self._accept()
                else:
                    self._hung_up(fd)
            if events:
                continue
            why = self._should_exit()
            if why and self._retire(why):
                return

    def _hung_up(self, fd: int) -> None:
        """A client went away (also SIGKILL): close its channel now, whatever its threads are blocked in."""
        with self.lock:
            call = self.calls.get(fd)
            # (the fd may have been closed and reused since the poll: ask the socket registered now)
            if call is None or not _peer_gone(call[0]):
                return
            del self.calls[fd]
        threading.Thread(target=call[1].close, name="hung-up", daemon=True).start()

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with self.lock:
            self.active += 1
        threading.Thread(target=self._serve_client, args=(conn,), name="client", daemon=True).start()

    def _should_exit(self) -> str:
        if self.stop.is_set():
            return "asked to stop"
        with self.lock:
            if self.active:
                return ""
            idle_for = time.monotonic() - self.last_used
        if not self.transport.is_connected:
            return "the SSH connection is gone"
        if idle_for >= self.idle:
            return f"idle for {idle_for:.1f}s"
        return ""

    def _retire(self, why: str) -> bool:
        """Stop listening (under the start lock, so no client starts a holder meanwhile); False when a client came."""
        assert self.listener is not None
        lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + 2.0
            while True:
                try:
                    fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        break  # a client is starting a holder: it has found our socket dead or will
                    time.sleep(0.01)
            ready, _, _ = select.select([self.listener], [], [], 0)
            if ready and not self.stop.is_set():
                return False
            with contextlib.suppress(OSError):
                if os.stat(self.sock_path).st_ino == self.sock_ino:
                    os.unlink(self.sock_path)
            self.listener.close()
        finally:
            os.close(lock_fd)
        _log(f"exiting: {why}")
        return True

    def shutdown(self) -> None:
        with self.lock:
            self.closing = True
            spare, self.spare = self.spare, None
        if spare is not None:
            spare[1].close()  # EOF: the idle worker exits
        with contextlib.suppress(Exception):
            self.transport.close()
        with contextlib.suppress(OSError):
            with open(self.pid_file) as f:
                mine = f.read().strip() == str(os.getpid())
            if mine:
                os.unlink(self.pid_file)

    def start(self, argv: list[str]) -> HeldPipes:
        """A new channel running ``argv``; when the server refuses one (MaxSessions), the spare's session is given up first."""
        try:
            return self.transport.start(argv)  # type: ignore[return-value]
        except ConnectError as exc:
            if SESSION_REFUSED not in exc.message:
                raise
            with self.lock:
                spare, self.spare = self.spare, None
            if spare is None:
                raise
        spare[1].close()
        return self.transport.start(argv)  # type: ignore[return-value]

    # -- the round trip before each call --------------------------------------

    @property
    def stale_reason(self) -> str:
        return f"the kept connection did not answer a round trip within {self.round_trip_timeout:g}s"

    @property
    def round_trip_timeout(self) -> float:
        return min(ROUND_TRIP_TIMEOUT, self.transport.profile.connect_timeout)

    def check_connection(self) -> bool:
        """Before a call may use the connection: does its peer answer? False: it was given up, the holder exits.

        A connection that is already gone (not stalled) passes: ``start``
        reconnects as it always did.
        """
        if not self.transport.is_connected or self.transport.round_trip(self.round_trip_timeout):
            return True
        _log(f"giving the connection up: {self.stale_reason}")
        self.stop.set()
        self.transport.give_up(
            self.stale_reason,
            hint="the host or the network stopped responding; values printed so far are complete",
        )
        return False

    # -- spares ---------------------------------------------------------------

    def take_spare(self, argv: list[str]) -> HeldPipes | None:
        with self.lock:
            spare, self.spare = self.spare, None
        if spare is None:
            return None
        if spare[0] == argv and spare[1].alive:
            return spare[1]
        _debug(f"spare dropped: {'another command' if spare[0] != argv else 'it is no longer running'}")
        threading.Thread(target=spare[1].close, daemon=True).start()
        return None

    def refill(self, argv: list[str]) -> None:
        """Start ``argv`` as the spare, unless one is already kept or being started."""
        if not self.spares:
            return
        with self.lock:
            if self.closing or self.refilling or (self.spare is not None and self.spare[0] == argv and self.spare[1].alive):
                return
            self.refilling = True
        try:
            pipes = self.transport.start(argv)
            _debug("spare started")
        except Exception as exc:
            _log(f"no spare: {exc}")
            pipes = None
        with self.lock:
            self.refilling = False
            old = None
            if pipes is not None and not self.closing:
                old, self.spare = self.spare, (argv, pipes)  # type: ignore[assignment]
                threading.Thread(target=self._keep_spare, args=(argv, pipes), name="spare-heartbeat",
                                 daemon=True).start()
                pipes = None
        for extra in (old[1] if old else None, pipes):
            if extra is not None:
                threading.Thread(target=extra.close, daemon=True).start()

    def _keep_spare(self, argv: list[str], pipes: HeldPipes) -> None:
        """Send the spare's stub a blank line (its heartbeat) every few seconds while it is
        kept: a stub started with a liveness bound (``bootstrap.stub_argv``) exits when it
        hears nothing for that long, so a spare cut off from this holder does not linger.
        Written under the lock ``take_spare`` takes: never inside the arguments of the
        call that takes it."""
        try:
            bound = float(argv[3]) if len(argv) > 3 else 0.0
        except ValueError:
            bound = 0.0
        if bound <= 0:
            return
        interval = min(2.0, bound / 3)
        while True:
            time.sleep(interval)
            with self.lock:
                if self.spare is None or self.spare[1] is not pipes:
                    return
                try:
                    pipes.write(b"\n")
                except Exception:  # noqa: BLE001 - gone: ``alive`` says so when it is taken
                    return

    # -- one client -------------------------------------------------------------

    def _serve_client(self, conn: socket.socket) -> None:
        try:
            self._call(conn)
        except Exception as exc:  # never let one client take the holder down
            _log(f"client failed: {type(exc).__name__}: {exc}")
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            with self.lock:
                self.active -= 1
                self.last_used = time.monotonic()

    def _call(self, conn: socket.socket) -> None:
        send_lock = threading.Lock()

        def send(kind: int, payload: bytes = b"") -> None:
            header = FRAME.pack(kind, len(payload))
            with send_lock:
                if len(payload) < 65536:
                    conn.sendall(header + payload)
                else:
                    conn.sendall(header)
                    conn.sendall(payload)

        try:
            kind, payload = recv_frame(conn)
        except (EOFError, OSError):
            return
        if kind != REQUEST:
            return
        request = json.loads(payload)
        argv = [str(a) for a in request["argv"]]
        with contextlib.suppress(TypeError, ValueError):
            self.idle = max(0.0, float(request.get("idle", self.idle)))
        if self.stop.is_set():
            return  # going away (its connection given up, or SIGTERM): the client tries again, elsewhere
        if not self.check_connection():
            with contextlib.suppress(OSError):
                send(FAILED, json.dumps({"type": STALE, "message": self.stale_reason, "hint": None}).encode())
            return
        pipes = self.take_spare(argv)
        used_spare = pipes is not None
        _debug(f"call: {'the spare' if used_spare else 'a new channel'}")
        if pipes is None:
            try:
                pipes = self.start(argv)  # type: ignore[assignment]
            except SkyctlError as exc:
                payload = error_payload(exc)
                if SESSION_REFUSED in exc.message:  # MaxSessions: the client connects on its own instead
                    payload = json.dumps({"type": BUSY, "message": exc.message, "hint": exc.hint}).encode()
                with contextlib.suppress(OSError):
                    send(FAILED, payload)
                return
        assert isinstance(pipes, HeldPipes)
        try:
            send(STARTED, json.dumps({"label": self.transport.label, "spare": used_spare}).encode())
        except OSError:
            pipes.close()
            return
        pipes.attach(lambda data: send(STDERR, data))
        with self.lock:
            self.calls[conn.fileno()] = (conn, pipes)
        state = {"ready": False}
        pump = threading.Thread(target=self._pump_out, args=(pipes, send, state, conn, argv), name="stdout", daemon=True)
        pump.start()
        # this thread: the client's stdin frames, until it goes away
        try:
            while True:
                kind, payload = recv_frame(conn)
                if kind == STDIN:
                    try:
                        pipes.write(payload)
                    except OSError:
                        pass  # the command is gone; its end reaches the client through stdout/exit
                elif kind == STDIN_EOF:
                    pipes.close_stdin()
        except (EOFError, OSError):
            pass
        with self.lock:
            if self.calls.get(conn.fileno(), (None,))[0] is conn:
                del self.calls[conn.fileno()]
        pipes.close()  # EOF, grace, TERM, KILL: nothing stays running for a client that is gone
        pump.join(5.0)

    def _pump_out(self, pipes: HeldPipes, send: Any, state: dict[str, bool], conn: socket.socket, argv: list[str]) -> None:
        chan = pipes._chan
        seen = b""
        try:
            while True:
                try:
                    data = chan.recv(CHUNK)
                except Exception:
                    data = b""
                if not data:
                    break
                if not state["ready"] and len(seen) < READY_SCAN:
                    seen = (seen + data)[:READY_SCAN]
                    state["ready"] = READY_MARK in seen
                    if state["ready"]:  # the command works: have the next identical call's channel on the way
                        threading.Thread(target=self.refill, args=(argv,), name="refill", daemon=True).start()
                send(STDOUT, data)
            lost = pipes.lost()
            if lost is not None:  # why the channel ended, before its EOF: the client's error says it
                send(LOST, json.dumps({"message": lost.message, "hint": lost.hint}).encode())
            send(STDOUT, b"")
            status = None
            while status is None:
                status = pipes.exit_status(timeout=0.5)
                if status is None and _peer_gone(conn):
                    return
            pipes._stderr_thread.join(1.0)
            send(EXIT, json.dumps({"status": status}).encode())
        except OSError:
            return  # the client went away; its reader thread closes the channel


def _peer_gone(conn: socket.socket) -> bool:
    try:
        poller = select.poll()
        poller.register(conn, select.POLLHUP | select.POLLERR)
        return any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, ev in poller.poll(0))
    except (OSError, ValueError):
        return True


def main() -> None:
    params = json.loads(sys.stdin.buffer.readline())
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    status_out = os.dup(1)
    os.dup2(devnull, 1)  # nothing of ours ever goes to the starting client's pipe but the status line
    os.close(devnull)

    answered = []

    def answer(obj: dict[str, Any]) -> None:
        if answered:
            return
        answered.append(True)
        with contextlib.suppress(OSError):
            os.write(status_out, json.dumps(obj).encode() + b"\n")
        os.close(status_out)

    profiles = {p["name"]: HostProfile(**{**p, "identity_file": tuple(p["identity_file"])}) for p in params["profiles"]}
    first = params["profiles"][0]["name"]

    def resolve(name: str) -> HostProfile:
        try:
            return profiles[name]
        except KeyError:
            raise ConnectError(f"unknown gateway profile {name!r}") from None

    SshTransport.pipes_class = HeldPipes
    transport = SshTransport(profiles[first], resolve, ssh_config_path=params.get("ssh_config"),
                             system_known_hosts=params.get("system_known_hosts"))
    spares = os.environ.get("SKYCTL_REUSE_SPARE", "1") not in ("0", "", "no", "false")
    holder = Holder(transport, params["socket"], params["pid_file"], float(params.get("idle", 60.0)), spares)
    signal.signal(signal.SIGTERM, lambda *_: holder.stop.set())
    signal.signal(signal.SIGINT, lambda *_: holder.stop.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        try:
            transport._ensure_connected()
        except SkyctlError as exc:
            _log(f"cannot connect: {exc.message}")
            answer({"ok": False, "error": json.loads(error_payload(exc))})
            return
        argv = params.get("argv")
        if spares and argv:
            # the starting client asks for this next: have its channel on the way already
            holder.refill([str(a) for a in argv])
        holder.listen()
        _log(f"serving {transport.label} on {params['socket']}")
        answer({"ok": True, "pid": os.getpid(), "label": transport.label})
        holder.serve()
    except BaseException as exc:
        _log(f"failed: {type(exc).__name__}: {exc}")
        answer({"ok": False, "crash": f"{type(exc).__name__}: {exc}"})  # the client falls back to a direct connection
        raise
    finally:
        holder.shutdown()
    os._exit(0)
