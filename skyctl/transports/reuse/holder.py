"""The holder of a kept SSH connection: a background process serving skyctl clients.

Started detached by ``client.ReuseTransport`` (``python -c HOLDER_BOOT
<dir> skyctl.holder``, which calls ``main()``; ``python -m
skyctl.transports.reuse.holder`` works too) with its parameters as one JSON
line on stdin. It connects
with an ``SshTransport`` (so host keys, gateways, ``~/.ssh/config`` and error
messages are the direct transport's), answers the starting client with one
JSON line on stdout (ready, or the ``ConnectError``), then listens on its
Unix socket (mode 0600, in the private directory the client checked).

Each client connection is one command: ``REQUEST`` (argv) → a round trip on
the SSH connection (a stalled peer would otherwise hang the call: without an
answer in time the holder answers ``STALE``, gives the connection
up and exits, and the client connects directly) → a fresh exec
channel, or the spare one when its argv is identical → ``STARTED``; then
stdin/stdout/stderr/exit status are relayed as frames (see
``protocol``). When the client goes away (also SIGKILL) the channel
is closed like ``SshPipes.close`` does it: EOF, then TERM and KILL.

The spares: channels running a call's argv, unused, kept for the next
calls: the remote exec and Python start-up (the login shell's rc files
included) are then off the next call's critical path. Up to ``SPARES`` (2)
are kept. They are started when a call whose command got as far as
``SKYCTL ready`` (the stub works) ends, not while it runs: a spare's start
costs the remote host CPU (a login shell that runs ``pyenv init`` or
``conda`` takes 0.1-0.2 s), which a running call should not have to share.
The second spare is what lets a call that comes right after another (or
beside it) find one anyway. Only when no spare is kept nor being started does
a call's ``ready`` start one at once. The argv names only the interpreter
(the stub reads the call's workdir, env and pip from stdin), so a spare
serves every workdir. A spare is used at most once (every call still gets a
fresh interpreter); a different argv closes them. Set
``SKYCTL_REUSE_SPARE=0`` in the environment of the client that starts the
holder to turn spares off.

The holder exits after ``idle`` seconds without clients (each client's
request carries its profile's ``reuse_idle``), when its SSH connection is
gone, or on SIGTERM; it then closes the spares (each idle worker sees EOF and
exits) and the connection, and removes its socket and pid file.

It uses the SSH transport's public surface only: ``connect``, ``start``,
``round_trip``, ``give_up``, and of the pipes ``read1``, ``forward_stderr``,
``wait_stderr``, ``is_running``, ``lost``.

Threads (all daemons): ``skyctl-holder-client`` (one per call: the client's
stdin frames), ``skyctl-holder-stdout`` (one per call: stdout to the
client), ``skyctl-holder-refill`` (starts spares), ``skyctl-holder-spare``
(a spare's heartbeat), ``skyctl-holder-close`` (closes a channel that is
no longer wanted), besides the SSH transport's.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable

from ...config import HostProfile
from ...errors import ConnectError, SkyctlError, error_info
from ..ssh import SessionRefused, SshPipes, SshTransport
from .key import take_start_lock
from .protocol import Kind, ProtocolError, error_payload, pack_json, recv_frame, send_frame, unpack_json

#: seconds the holder waits for the round trip that checks its connection (at most the profile's connect_timeout)
ROUND_TRIP_TIMEOUT = 5.0
#: bytes read from a channel per STDOUT frame
CHUNK = 256 * 1024
#: spares kept at most: a call takes one, and one is still there for a call that comes right after it
SPARES = 2
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


class Holder:
    """Serves calls on one SSH connection: a socket, the calls running, the spares."""

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
        #: spares kept (argv, channel), oldest first
        self.kept: list[tuple[list[str], SshPipes]] = []
        self.refilling = False
        #: how many spares the refill under way is to keep
        self.wanted = 0
        self.closing = False
        self.stop = threading.Event()
        self.listener: socket.socket | None = None
        self.sock_ino = 0
        #: running calls by client socket fd: watched for the client hanging up
        self.calls: dict[int, tuple[socket.socket, SshPipes]] = {}

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
        _close_later(call[1])

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with self.lock:
            self.active += 1
        threading.Thread(target=self._serve_client, args=(conn,), name="skyctl-holder-client", daemon=True).start()

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
            # not got in 2s: a client is starting a holder; it has found our socket dead or will
            take_start_lock(lock_fd, time.monotonic() + 2.0)
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
            kept, self.kept = self.kept, []
        for _, spare in kept:
            spare.close()  # EOF: the idle worker exits
        with contextlib.suppress(Exception):
            self.transport.close()
        with contextlib.suppress(OSError):
            with open(self.pid_file) as f:
                mine = f.read().strip() == str(os.getpid())
            if mine:
                os.unlink(self.pid_file)

    def start(self, argv: list[str]) -> SshPipes:
        """A new channel running ``argv``; when the server refuses one (MaxSessions), the spares' sessions
        are given up first, one at a time."""
        while True:
            try:
                return self.transport.start(argv)
            except SessionRefused:
                with self.lock:
                    spare = self.kept.pop(0) if self.kept else None
                if spare is None:
                    raise
            spare[1].close()

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

    def take_spare(self, argv: list[str]) -> SshPipes | None:
        """The oldest kept spare running ``argv``, or None; spares of another argv, or no longer
        running, are closed."""
        with self.lock:
            dropped = self._drop_unusable(argv)
            taken = self.kept.pop(0) if self.kept else None
        for _, spare in dropped:
            _close_later(spare)
        return taken[1] if taken is not None else None

    def _drop_unusable(self, argv: list[str]) -> list[tuple[list[str], SshPipes]]:
        """Take the spares that cannot serve ``argv`` out of ``kept`` (``lock`` held); the caller closes them."""
        usable: list[tuple[list[str], SshPipes]] = []
        dropped: list[tuple[list[str], SshPipes]] = []
        for entry in self.kept:
            (usable if entry[0] == argv and entry[1].is_running else dropped).append(entry)
        self.kept = usable
        if dropped:
            _debug(f"{len(dropped)} spare(s) dropped: another command, or no longer running")
        return dropped

    def refill(self, argv: list[str], want: int = 1) -> None:
        """Start spares running ``argv`` until ``want`` are kept (one at a time, in this thread); nothing
        when that many are kept already. A refill under way takes the larger ``want`` on."""
        if not self.spares:
            return
        with self.lock:
            if self.closing:
                return
            self.wanted = max(self.wanted, min(want, SPARES))
            dropped = self._drop_unusable(argv)
            go = not self.refilling and len(self.kept) < self.wanted
            if go:
                self.refilling = True
        for _, spare in dropped:
            _close_later(spare)
        while go:
            try:
                started: SshPipes | None = self.transport.start(argv)
                _debug("spare started")
            except Exception as exc:
                _log(f"no spare: {exc}")
                started = None
            with self.lock:
                keep = started is not None and not self.closing
                if keep:
                    self.kept.append((argv, started))
                    threading.Thread(target=self._keep_spare, args=(argv, started), name="skyctl-holder-spare",
                                     daemon=True).start()
                go = keep and len(self.kept) < self.wanted
                if not go:
                    self.refilling = False
                    self.wanted = 0
            if started is not None and not keep:
                _close_later(started)

    def _keep_spare(self, argv: list[str], pipes: SshPipes) -> None:
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
                if not any(kept is pipes for _, kept in self.kept):
                    return
                try:
                    pipes.write(b"\n")
                except Exception:  # noqa: BLE001 - gone: ``is_running`` says so when it is taken
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

        def send(kind: Kind, payload: bytes = b"") -> None:
            send_frame(conn, kind, payload, send_lock)

        try:
            kind, payload = recv_frame(conn)
        except (EOFError, OSError, ProtocolError):
            return
        if kind != Kind.REQUEST:
            return  # not a client of ours: hang up
        request = unpack_json(payload)
        argv = [str(a) for a in request["argv"]]
        with contextlib.suppress(TypeError, ValueError):
            self.idle = max(0.0, float(request.get("idle", self.idle)))
        if self.stop.is_set():
            return  # going away (its connection given up, or SIGTERM): the client tries again, elsewhere
        if not self.check_connection():
            with contextlib.suppress(OSError):
                send(Kind.STALE, pack_json({"reason": self.stale_reason}))
            return
        pipes = self.take_spare(argv)
        used_spare = pipes is not None
        _debug(f"call: {'the spare' if used_spare else 'a new channel'}")
        if pipes is None:
            try:
                pipes = self.start(argv)
            except SkyctlError as exc:
                # MaxSessions: the client connects on its own instead
                with contextlib.suppress(OSError):
                    send(Kind.BUSY if isinstance(exc, SessionRefused) else Kind.FAILED, error_payload(exc))
                return
        try:
            send(Kind.STARTED, pack_json({"label": self.transport.label, "spare": used_spare}))
        except OSError:
            pipes.close()
            return
        pipes.forward_stderr(lambda data: send(Kind.STDERR, data))
        with self.lock:
            self.calls[conn.fileno()] = (conn, pipes)
        pump = threading.Thread(target=self._pump_out, args=(pipes, send, conn, argv), name="skyctl-holder-stdout",
                                daemon=True)
        pump.start()
        self._relay_stdin(conn, pipes)
        with self.lock:
            if self.calls.get(conn.fileno(), (None,))[0] is conn:
                del self.calls[conn.fileno()]
        pipes.close()  # EOF, grace, TERM, KILL: nothing stays running for a client that is gone
        pump.join(5.0)

    def _relay_stdin(self, conn: socket.socket, pipes: SshPipes) -> None:
        """The client's frames, until it goes away: STDIN and STDIN_EOF; any other kind ends the call."""
        handlers = {Kind.STDIN: _write_quietly(pipes), Kind.STDIN_EOF: lambda _payload: pipes.close_stdin()}
        try:
            while True:
                kind, payload = recv_frame(conn)
                handler = handlers.get(kind)
                if handler is None:
                    _log(f"client sent {kind.name} during a call: ending the call")
                    return
                handler(payload)
        except (EOFError, OSError, ProtocolError):
            pass

    def _pump_out(self, pipes: SshPipes, send: Callable[[Kind, bytes], None], conn: socket.socket,
                  argv: list[str]) -> None:
        ready = False
        seen = b""
        try:
            while True:
                data = pipes.read1(CHUNK)
                if not data:
                    break
                if not ready and len(seen) < READY_SCAN:
                    seen = (seen + data)[:READY_SCAN]
                    ready = READY_MARK in seen
                    if ready:  # the command works: one spare now if none is kept or starting (``refill``
                        # does nothing then), the rest once this call ends
                        threading.Thread(target=self.refill, args=(argv, 1), name="skyctl-holder-refill",
                                         daemon=True).start()
                send(Kind.STDOUT, data)
            if ready:  # its call is over (its output is): the spares for the next ones, off its time
                threading.Thread(target=self.refill, args=(argv, SPARES), name="skyctl-holder-refill",
                                 daemon=True).start()
            lost = pipes.lost()
            if lost is not None:  # why the channel ended, before its EOF: the client's error says it
                send(Kind.LOST, error_payload(lost))
            send(Kind.STDOUT, b"")
            status = None
            while status is None:
                status = pipes.exit_status(timeout=0.5)
                if status is None and _peer_gone(conn):
                    return
            pipes.wait_stderr(1.0)
            send(Kind.EXIT, pack_json({"status": status}))
        except OSError:
            return  # the client went away; its reader thread closes the channel


def _write_quietly(pipes: SshPipes) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        try:
            pipes.write(data)
        except OSError:
            pass  # the command is gone; its end reaches the client through stdout/exit

    return write


def _close_later(pipes: SshPipes) -> None:
    """Close ``pipes`` on a thread of its own (closing waits out the command's grace)."""
    threading.Thread(target=pipes.close, name="skyctl-holder-close", daemon=True).start()


def _peer_gone(conn: socket.socket) -> bool:
    try:
        poller = select.poll()
        poller.register(conn, select.POLLHUP | select.POLLERR)
        return any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, ev in poller.poll(0))
    except (OSError, ValueError):
        return True


def main() -> None:
    params = unpack_json(sys.stdin.buffer.readline())
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
            os.write(status_out, pack_json(obj) + b"\n")
        os.close(status_out)

    profiles = {p["name"]: HostProfile(**{**p, "identity_file": tuple(p["identity_file"])}) for p in params["profiles"]}
    first = params["profiles"][0]["name"]

    def resolve(name: str) -> HostProfile:
        try:
            return profiles[name]
        except KeyError:
            raise ConnectError(f"unknown gateway profile {name!r}") from None

    transport = SshTransport(profiles[first], resolve, ssh_config_path=params.get("ssh_config"),
                             system_known_hosts=params.get("system_known_hosts"))
    spares = os.environ.get("SKYCTL_REUSE_SPARE", "1") not in ("0", "", "no", "false")
    holder = Holder(transport, params["socket"], params["pid_file"], float(params.get("idle", 60.0)), spares)
    signal.signal(signal.SIGTERM, lambda *_: holder.stop.set())
    signal.signal(signal.SIGINT, lambda *_: holder.stop.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        try:
            transport.connect()
        except SkyctlError as exc:
            _log(f"cannot connect: {exc.message}")
            answer({"ok": False, "error": error_info(exc)})
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


if __name__ == "__main__":
    main()
