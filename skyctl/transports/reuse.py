"""Kept SSH connections (``reuse: true``, like OpenSSH's ControlPersist): the client side.

Basics
    ``ReuseTransport(profile, resolve_profile)`` starts commands on an ssh
    host through a *holder*: a background process (``skyctl.holder``) that
    owns one paramiko connection (an ``SshTransport``) and serves any number
    of skyctl processes over a Unix socket. Each ``start(argv)`` is one
    socket connection; the holder runs ``argv`` in a fresh exec channel and
    relays its stdin/stdout/stderr and exit status. A warm call costs a local
    connect instead of an SSH handshake, and (with the holder's spare worker)
    no remote exec or Python start-up either.

    This module is the warm path of every ``skyctl run``: it imports only the
    standard library (no paramiko, fabric or typer). The holder, paramiko and
    the direct ``SshTransport`` are loaded only when needed.

Where
    The private runtime directory (``skyctl.runtime``: ours, a real
    directory, mode 0700; anything else is refused and the call then
    connects directly, with a warning). In it, per connection key:
    ``<key>.sock`` (the holder's socket, 0600), ``<key>.lock`` (serialises
    starting a holder), ``<key>.pid`` and ``<key>.log`` (the holder's stderr).

    The key is a hash of everything the connection depends on: the profile
    and its gateway chain (host, port, user, identity files, known_hosts,
    host key policy, timeouts, keepalive and keepalive_count), the login
    name, and the size and mtime of ``~/.ssh/config``, the known_hosts files
    and the identity files. Editing any of them makes the next call use
    (start) a new holder; the old one idles out. No TCP port is opened anywhere.

Starting
    The first client that finds no live socket takes ``<key>.lock``, checks
    again, and starts the holder detached (own session, stdio not ours). The
    holder connects and answers on a pipe with one JSON line: ready, or the
    ``ConnectError`` (message and hint exactly as the direct transport gives
    them), which this client raises (exit 4). A holder that cannot be started
    at all falls back to a direct connection, with a warning.

Protocol (Unix socket, one call per connection)
    Frames ``!BI`` (kind, length) + payload. Client → holder: ``REQUEST``
    (JSON: argv, idle seconds), then ``STDIN`` data and ``STDIN_EOF``.
    Holder → client: ``STARTED`` (JSON: label) or ``FAILED`` (JSON: error
    type, message, hint), then ``STDOUT`` (empty payload = EOF), ``STDERR``
    and finally ``EXIT`` (JSON: status). ``LOST`` (JSON: message, hint), just
    before the EOF, says the holder gave the SSH connection up (keepalives
    went unanswered): the call's error is then that message (exit 6).
    Closing the socket means the client is gone: the holder closes the
    channel (EOF, then TERM/KILL), so the remote worker exits within seconds
    even after a SIGKILL of the client.
    ``FAILED`` of type ``Busy`` means the server allows no more sessions on
    the kept connection (MaxSessions): that call connects directly instead.

Checked before use
    Before a call gets a channel (or the spare), the holder checks its SSH
    connection with a round trip (a keepalive request that wants a reply,
    ``ROUND_TRIP_TIMEOUT`` at most): a connection whose peer stalled stays
    open and would hang the call. Without an answer the holder gives the
    connection up and exits, and answers ``FAILED`` of type ``Stale``: the
    call connects directly instead (with a warning).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import select
import socket
import struct
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from ..errors import ConfigError, ConnectError, ConnectionLost, RemoteEnvironmentError, SkyctlError
from ..runtime import UnsafeDirectory, private_dir

if TYPE_CHECKING:
    from ..config import HostProfile

__all__ = ["ReuseTransport", "ReusePipes", "connection_key"]

#: bump when the socket protocol changes (part of the key: old holders are not spoken to)
PROTOCOL = 2
FRAME = struct.Struct("!BI")
# client -> holder
REQUEST, STDIN, STDIN_EOF = 1, 2, 3
# holder -> client
STARTED, FAILED, STDOUT, STDERR, EXIT, LOST = 10, 11, 12, 13, 14, 15
#: FAILED type when the server allows no more sessions on the kept connection: the client connects directly
BUSY = "Busy"
#: FAILED type when the kept connection did not answer the round trip that checks it: the client connects directly
STALE = "Stale"
#: seconds the holder waits for that round trip (at most the profile's connect_timeout)
ROUND_TRIP_TIMEOUT = 5.0
#: how ``SshTransport`` says the server refused a channel (MaxSessions, or a restricted key)
SESSION_REFUSED = "refused a session channel"

#: same defaults as ``SshTransport`` (not imported from there: that would load paramiko)
DEFAULT_SSH_CONFIG = "~/.ssh/config"
SYSTEM_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"
#: how much of the command's stderr is kept for ``stderr_text``
STDERR_TAIL = 8 * 1024
#: bytes asked of the socket per recv
RECV_SIZE = 256 * 1024
#: longest AF_UNIX path (sun_path is 108 bytes with its NUL)
MAX_SOCKET_PATH = 107
#: seconds to wait for a holder to say it is ready, on top of its connect timeouts (Python + paramiko start-up)
HOLDER_START_SLACK = 30.0
#: the profile fields a connection depends on (sent to the holder, hashed into the key)
CONNECTION_FIELDS = ("name", "type", "host", "port", "user", "identity_file", "known_hosts", "host_key_policy",
                     "gateway", "connect_timeout", "keepalive", "keepalive_count")
#: how the holder process is started: ``argv[1]`` is the directory that holds this ``skyctl`` package
#: (it runs in the client's directory, as relative key paths are; ``-c`` put that directory first on sys.path: replaced)
HOLDER_BOOT = "import sys; sys.path[0:1] = [sys.argv[1]]; from skyctl.holder import main; main()"

_ERRORS: dict[str, type[SkyctlError]] = {
    "ConfigError": ConfigError,  # a name in ~/.ssh/config that OpenSSH would refuse
    "ConnectError": ConnectError,
    "RemoteEnvironmentError": RemoteEnvironmentError,
    "ConnectionLost": ConnectionLost,
}


def _login_name() -> str:
    """What ``getpass.getuser()`` gives (the default ssh user), without importing getpass."""
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        value = os.environ.get(name)
        if value:
            return value
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _stat_sig(path: str) -> list[int] | None:
    try:
        st = os.stat(os.path.expanduser(path))
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _code_files() -> list[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    return [os.path.join(here, "reuse.py"), os.path.join(here, "ssh.py"), os.path.join(os.path.dirname(here), "holder.py")]


def gateway_chain(profile: "HostProfile", resolve: Callable[[str], "HostProfile"]) -> list["HostProfile"]:
    """``profile`` and every profile reached through ``gateway:`` (a config never has a cycle; guarded anyway)."""
    chain = [profile]
    seen = {profile.name}
    while chain[-1].gateway and chain[-1].gateway not in seen:
        nxt = resolve(chain[-1].gateway)
        seen.add(nxt.name)
        chain.append(nxt)
    return chain


def profile_fields(profile: "HostProfile") -> dict[str, Any]:
    """What the holder needs to rebuild ``profile`` for its transport (JSON-able)."""
    out = {name: getattr(profile, name) for name in CONNECTION_FIELDS}
    out["identity_file"] = list(out["identity_file"])
    return out


def connection_key(chain: list["HostProfile"], ssh_config_path: str | None = DEFAULT_SSH_CONFIG,
                   system_known_hosts: str | None = SYSTEM_KNOWN_HOSTS) -> str:
    """A short hash naming one kept connection (see the module docstring)."""
    files = [p for p in (ssh_config_path, system_known_hosts) if p]
    for p in chain:
        files.append(p.known_hosts)
        files.extend(p.identity_file)
    data = {
        "protocol": PROTOCOL,
        "login": _login_name(),
        "cwd": os.getcwd() if any(not os.path.isabs(os.path.expanduser(f)) for f in files) else "",  # relative paths: other files elsewhere
        "profiles": [profile_fields(p) for p in chain],
        "ssh_config": ssh_config_path,
        "system_known_hosts": system_known_hosts,
        "files": {f: _stat_sig(f) for f in files},
        "code": [_stat_sig(f) for f in _code_files()],
        "python": sys.executable,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]


# --------------------------------------------------------------------------
# frames


def send_frame(sock: socket.socket, kind: int, payload: bytes = b"") -> None:
    if len(payload) < 65536:
        sock.sendall(FRAME.pack(kind, len(payload)) + payload)
    else:
        sock.sendall(FRAME.pack(kind, len(payload)))
        sock.sendall(payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    parts = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise EOFError
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def recv_frame(sock: socket.socket) -> tuple[int, bytes]:
    """One frame; ``EOFError`` when the peer closed (also mid-frame)."""
    kind, length = FRAME.unpack(_recv_exact(sock, FRAME.size))
    return kind, _recv_exact(sock, length) if length else b""


def error_payload(exc: SkyctlError) -> bytes:
    return json.dumps({"type": type(exc).__name__, "message": exc.message, "hint": exc.hint}).encode()


def error_from_payload(payload: bytes) -> SkyctlError:
    info = json.loads(payload)
    cls = _ERRORS.get(info.get("type"), ConnectError)
    return cls(info.get("message") or "the kept SSH connection failed", info.get("hint"))


# --------------------------------------------------------------------------
# the pipes of one command started through the holder


class ReusePipes:
    """One remote command's stdin/stdout through the holder; its stderr kept as a short tail.

    Whoever needs bytes (``read``, or ``exit_status`` when no read is in
    progress) pulls frames off the socket; there is no thread of our own.
    A reader that stops makes the holder stop reading the channel, whose
    window then stops the remote writer: backpressure is kept.
    """

    #: longest ``exit_status`` sleeps between two looks while a reader holds the socket (a safety
    #: net: the reader wakes it when it lets go, or when the status arrives)
    WAIT_SLICE = 0.2

    def __init__(self, sock: socket.socket, label: str) -> None:
        self._sock = sock
        self.label = label
        self._raw = bytearray()  # socket bytes not yet split into frames
        self._out = bytearray()  # stdout bytes not yet read
        self._out_eof = False
        self._sock_eof = False
        self._tail = bytearray()
        self._status: int | None = None
        #: notified when the status arrives or a reader lets go of the socket (``exit_status`` waits on it)
        self._turn = threading.Condition()
        self._waiting = 0
        self._lost: ConnectionLost | None = None
        self._rlock = threading.Lock()
        self._wlock = threading.Lock()
        self._closed = False

    # -- reading ------------------------------------------------------------

    def _pump(self, timeout: float | None) -> bool:
        """Read what the socket has (waiting up to ``timeout``; None: forever) and dispatch whole frames.

        Caller holds ``_rlock``. False when nothing more will ever come.
        """
        if self._sock_eof:
            return False
        if timeout is not None:
            try:
                ready, _, _ = select.select([self._sock], [], [], max(0.0, timeout))
            except (OSError, ValueError):
                ready = [self._sock]
            if not ready:
                return True
        try:
            chunk = self._sock.recv(RECV_SIZE)
        except OSError:
            chunk = b""
        if not chunk:
            self._sock_eof = True
            self._out_eof = True
            if self._status is None:
                self._status = -1  # the holder or its connection went away
            self._wake()
            return False
        raw = self._raw
        raw += chunk
        pos = 0
        end = len(raw)
        while end - pos >= 5:
            kind, length = FRAME.unpack_from(raw, pos)
            if end - pos - 5 < length:
                break
            start = pos + 5
            pos = start + length
            if kind == STDOUT:
                if length:
                    self._out += raw[start:pos]
                else:
                    self._out_eof = True
            elif kind == STDERR:
                self._tail += raw[start:pos]
                del self._tail[:-STDERR_TAIL]
            elif kind == EXIT:
                self._status = int(json.loads(bytes(raw[start:pos])).get("status", -1))
                self._wake()
            elif kind == LOST:
                info = json.loads(bytes(raw[start:pos]))
                self._lost = ConnectionLost(info.get("message") or "the kept SSH connection was lost", info.get("hint"))
        del raw[:pos]
        return True

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes from the command's stdout; fewer only at EOF."""
        if n <= 0:
            return b""
        with self._rlock:
            out = self._out
            while len(out) < n and not self._out_eof:
                if not self._pump(None):
                    break
            data = bytes(out[:n])
            del out[:n]
        if self._waiting:  # an ``exit_status`` waits for the socket
            self._wake()
        return data

    def _wake(self) -> None:
        with self._turn:
            self._turn.notify_all()

    # -- writing ------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """All of ``data`` to the command's stdin; ``OSError`` when the holder or the command is gone."""
        if not data:
            return
        with self._wlock:
            if self._closed:
                raise BrokenPipeError(f"the pipes to {self.label} are closed")
            send_frame(self._sock, STDIN, bytes(data))

    def close_stdin(self) -> None:
        with self._wlock:
            if self._closed:
                return
            try:
                send_frame(self._sock, STDIN_EOF)
            except OSError:
                pass

    # -- the end --------------------------------------------------------------

    def exit_status(self, timeout: float = 0.0) -> int | None:
        """The exit status once the command ended (waiting up to ``timeout``), else None; -1 without one."""
        deadline = time.monotonic() + max(0.0, timeout)
        while self._status is None:
            remaining = deadline - time.monotonic()
            if self._rlock.acquire(blocking=False):
                try:
                    if self._status is None and not self._pump(max(0.0, min(remaining, 0.2))):
                        break
                finally:
                    self._rlock.release()
            else:  # a reader is pulling frames: wait until it lets go of the socket or the status comes
                with self._turn:
                    self._waiting += 1
                    try:
                        if self._status is None and self._rlock.locked():
                            self._turn.wait(max(0.0, min(remaining, self.WAIT_SLICE)))
                    finally:
                        self._waiting -= 1
            if remaining <= 0:
                break
        return self._status

    def stderr_text(self) -> str:
        """The last few KiB the command wrote to its stderr (what has arrived so far)."""
        if self._status is None and self._rlock.acquire(blocking=False):
            try:
                while self._pump(0.0) and self._raw_has_more():
                    pass
            finally:
                self._rlock.release()
        return bytes(self._tail).decode("utf-8", errors="replace")

    def lost(self) -> ConnectionLost | None:
        """Why the holder gave the SSH connection up (keepalives unanswered), else None.

        The holder sends it before the EOF of stdout, so it is known by the
        time a read has returned short.
        """
        return self._lost

    def _raw_has_more(self) -> bool:
        try:
            ready, _, _ = select.select([self._sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return bool(ready)

    def close(self) -> None:
        """Drop the connection to the holder; it closes the channel (EOF, then TERM/KILL). Safe to call twice."""
        with self._wlock:
            if self._closed:
                return
            self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    def __enter__(self) -> "ReusePipes":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------
# the transport


class ReuseTransport:
    """Starts commands on one SSH host through its holder (started on first use).

    Args:
        profile: the host's profile (``type: ssh``).
        resolve_profile: gives the profile named by ``gateway:``.
        warn: how to show a warning (when the kept connection cannot be used
            and the call falls back to a direct connection). Default: stderr.
        ssh_config_path / system_known_hosts: as for ``SshTransport`` (the
            holder is started with the same).
        environ: where ``XDG_RUNTIME_DIR`` is read (tests).
    """

    def __init__(
        self,
        profile: "HostProfile",
        resolve_profile: Callable[[str], "HostProfile"],
        *,
        warn: Callable[[str], None] | None = None,
        ssh_config_path: str | None = DEFAULT_SSH_CONFIG,
        system_known_hosts: str | None = SYSTEM_KNOWN_HOSTS,
        environ: Any = None,
    ) -> None:
        self.profile = profile
        self._resolve_profile = resolve_profile
        self._warn = warn or _warn_stderr
        self._ssh_config_path = ssh_config_path
        self._system_known_hosts = system_known_hosts
        self._environ = os.environ if environ is None else environ
        self._direct: Any = None
        self._paths: tuple[str, str] | None = None
        #: ``user@host:port`` as far as known without ``~/.ssh/config``; the holder tells the exact one
        host = profile.host or ""
        host = f"[{host}]" if ":" in host else host
        self.label = f"{profile.user or _login_name()}@{host}:{profile.port or 22}"

    # -- public API ---------------------------------------------------------

    def start(self, argv: list[str]) -> Any:
        """Run ``argv`` on the host through the holder and return its pipes (starting the holder if needed)."""
        if self._direct is not None:
            return self._direct.start(argv)
        try:
            sock_path, lock_path = self._socket_paths()
        except UnsafeDirectory as exc:
            return self._fall_back(f"{exc}").start(argv)
        for _attempt in range(3):
            sock = _connect(sock_path)
            if sock is None:
                sock = self._start_holder(sock_path, lock_path, argv)
                if sock is None:  # could not start one: already warned, direct from now on
                    return self._direct.start(argv)
            pipes = self._request(sock, argv)
            if isinstance(pipes, _Stale):  # the holder's connection did not answer: it is going away
                return self._fall_back(pipes.reason).start(argv)
            if pipes is _BUSY:
                # the server's MaxSessions is reached on the kept connection: this call gets its own
                from .ssh import SshTransport

                self._direct = SshTransport(self.profile, self._resolve_profile, ssh_config_path=self._ssh_config_path,
                                            system_known_hosts=self._system_known_hosts)
                return self._direct.start(argv)
            if pipes is not None:
                return pipes
            # the holder was exiting (idle) as we connected: start another
        return self._fall_back("the kept connection's holder kept going away").start(argv)

    def close(self) -> None:
        """Nothing is held here (the holder lives on until idle); closes a direct fallback connection."""
        direct, self._direct = self._direct, None
        if direct is not None:
            direct.close()

    def __enter__(self) -> "ReuseTransport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ReuseTransport {self.profile.name!r} {self.label}>"

    # -- internals ------------------------------------------------------------

    def _chain(self) -> list["HostProfile"]:
        return gateway_chain(self.profile, self._resolve_profile)

    def _socket_paths(self) -> tuple[str, str]:
        if self._paths is None:
            directory = private_dir(self._environ)
            key = connection_key(self._chain(), self._ssh_config_path, self._system_known_hosts)
            base = os.path.join(directory, key)
            if len(base + ".sock") > MAX_SOCKET_PATH:
                raise UnsafeDirectory(f"the socket path {base}.sock is too long for a Unix socket (set XDG_RUNTIME_DIR to a shorter directory)")
            self._paths = (base + ".sock", base + ".lock")
        return self._paths

    def _request(self, sock: socket.socket, argv: list[str]) -> Any:
        """Ask the holder to start ``argv``: its pipes; None when it closed on us before answering; ``_BUSY``."""
        request = {"argv": list(argv), "idle": self.profile.reuse_idle}
        wait = self.profile.connect_timeout * (len(self._chain()) + 1) + HOLDER_START_SLACK
        try:
            send_frame(sock, REQUEST, json.dumps(request).encode())
            ready, _, _ = select.select([sock], [], [], wait)
            if not ready:
                sock.close()
                raise ConnectError(
                    f"cannot connect to '{self.profile.name}' ({self.label}): the kept connection did not answer within {wait:g}s",
                    hint="try again with --no-reuse (or 'reuse: false' for this host)",
                )
            kind, payload = recv_frame(sock)
        except (EOFError, OSError):
            sock.close()
            return None
        if kind == FAILED:
            sock.close()
            info = json.loads(payload)
            if info.get("type") == BUSY:
                return _BUSY
            if info.get("type") == STALE:
                return _Stale(info.get("message") or "the kept connection did not answer")
            raise error_from_payload(payload)
        if kind != STARTED:
            sock.close()
            return None
        info = json.loads(payload)
        self.label = info.get("label") or self.label
        return ReusePipes(sock, self.label)

    def _start_holder(self, sock_path: str, lock_path: str, argv: list[str]) -> socket.socket | None:
        """Under the lock: connect to a holder another client just started, or start one.

        Returns a connected socket; None after falling back to a direct
        connection; raises the holder's ``ConnectError``.
        """
        budget = self.profile.connect_timeout * (len(self._chain()) + 1) + HOLDER_START_SLACK
        deadline = time.monotonic() + budget
        lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        self._fall_back(f"another skyctl has been starting the kept connection for over {budget:g}s")
                        return None
                    time.sleep(0.01)
            sock = _connect(sock_path)
            if sock is not None:
                return sock
            status = self._spawn_holder(sock_path, argv, deadline)
            if status is None:
                return None
            if status.get("error"):
                raise error_from_payload(json.dumps(status["error"]).encode())
            if not status.get("ok"):
                self._fall_back(f"the holder process failed: {status.get('crash', 'no reason given')} (log: {sock_path[:-5]}.log)")
                return None
            sock = _connect(sock_path)
            if sock is None:
                self._fall_back("the kept connection's holder said it was ready, but its socket does not answer")
            return sock
        finally:
            os.close(lock_fd)  # releases the flock

    def _spawn_holder(self, sock_path: str, argv: list[str], deadline: float) -> dict[str, Any] | None:
        import subprocess

        base = sock_path[: -len(".sock")]
        with contextlib.suppress(Exception):
            os.unlink(sock_path)  # a stale socket of a holder that died
        package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        params = {
            "socket": sock_path,
            "pid_file": base + ".pid",
            # the config file too, for hints (not in the connection's key: it does not change the connection)
            "profiles": [{**profile_fields(p), "config_file": p.config_file} for p in self._chain()],
            "ssh_config": self._ssh_config_path,
            "system_known_hosts": self._system_known_hosts,
            "idle": self.profile.reuse_idle,
            "argv": list(argv),
        }
        log_fd = os.open(base + ".log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", HOLDER_BOOT, package_parent],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_fd,
                close_fds=True,
                start_new_session=True,  # no Ctrl-C from our terminal, no SIGHUP when it closes
            )
        except OSError as exc:
            self._fall_back(f"cannot start the holder process ({exc.strerror or exc})")
            return None
        finally:
            os.close(log_fd)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(params).encode() + b"\n")
            proc.stdin.close()
        except OSError:
            pass
        line = b""
        fd = proc.stdout.fileno()
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, remaining))
            if not ready:
                _kill(proc)
                self._fall_back(f"the holder did not get ready in time (see {base}.log)")
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            line += chunk
        proc.stdout.close()
        try:
            return json.loads(line)
        except ValueError:
            _kill(proc)
            tail = _tail(base + ".log")
            self._fall_back(f"the holder process failed to start{': ' + tail if tail else ''} (log: {base}.log)")
            return None

    def _fall_back(self, reason: str) -> Any:
        """Warn once and use a direct connection from now on; returns that transport."""
        from .ssh import SshTransport

        self._warn(f"not keeping the SSH connection to '{self.profile.name}': {reason}; connecting directly")
        self._direct = SshTransport(self.profile, self._resolve_profile, ssh_config_path=self._ssh_config_path,
                                    system_known_hosts=self._system_known_hosts)
        self.label = self._direct.label
        return self._direct


_BUSY = object()


class _Stale:
    """The holder's answer when its connection failed the round trip: why, for the warning."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _connect(path: str) -> socket.socket | None:
    """A connection to the holder at ``path``, or None when none listens there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def _kill(proc: Any) -> None:
    import signal

    with contextlib.suppress(Exception):
        os.kill(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=5)


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            text = f.read()[-2000:].decode(errors="replace").strip()
    except OSError:
        return ""
    return text.splitlines()[-1] if text else ""


def _warn_stderr(message: str) -> None:
    try:
        sys.stderr.write(f"warning: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
