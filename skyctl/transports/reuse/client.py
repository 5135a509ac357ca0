"""Kept SSH connections (``reuse: true``, like OpenSSH's ControlPersist): the client side.

Basics
    ``ReuseTransport(profile, resolve_profile)`` starts commands on an ssh
    host through a *holder*: a background process (``holder`` in this package) that
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

    The key (``key.connection_key``) is a hash of everything the connection
    depends on: editing the profile, ``~/.ssh/config``, a known_hosts or
    identity file makes the next call use (start) a new holder; the old one
    idles out. No TCP port is opened anywhere.

Starting
    The first client that finds no live socket takes ``<key>.lock``, checks
    again, and starts the holder detached (own session, stdio not ours). The
    holder connects and answers on a pipe with one JSON line: ready, or the
    ``ConnectError`` (message and hint exactly as the direct transport gives
    them), which this client raises (exit 4). A holder that cannot be started
    at all falls back to a direct connection, with a warning.

Protocol (Unix socket, one call per connection)
    See ``protocol``: ``REQUEST``, then stdin frames one way and
    stdout/stderr/exit frames the other. Closing the socket means the client
    is gone: the holder closes the channel (EOF, then TERM/KILL), so the
    remote worker exits within seconds even after a SIGKILL of the client.
    ``BUSY`` means the server allows no more sessions on the kept connection
    (MaxSessions): that call connects directly instead.

Checked before use
    Before a call gets a channel (or the spare), the holder checks its SSH
    connection with a round trip (a keepalive request that wants a reply,
    ``holder.ROUND_TRIP_TIMEOUT`` at most): a connection whose peer stalled stays
    open and would hang the call. Without an answer the holder gives the
    connection up and exits, and answers ``STALE``: the
    call connects directly instead (with a warning).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import time
from typing import TYPE_CHECKING, Any, Callable

from ..base import ClosedOnExit
from ...config.names import address_label
from ...errors import ConnectError
from ...runtime import UnsafeDirectory, private_dir
from .key import (DEFAULT_SSH_CONFIG, SYSTEM_KNOWN_HOSTS, connection_key, gateway_chain, login_name, profile_fields,
                  take_start_lock)
from .pipes import ReusePipes
from .protocol import Kind, ProtocolError, error_from_payload, pack_json, recv_frame, send_frame, unpack_json

if TYPE_CHECKING:
    from ...config import HostProfile

__all__ = ["HOLDER_BOOT", "HOLDER_NAME", "ReuseTransport"]

#: longest AF_UNIX path (sun_path is 108 bytes with its NUL)
MAX_SOCKET_PATH = 107
#: seconds to wait for a holder to say it is ready, on top of its connect timeouts (Python + paramiko start-up)
HOLDER_START_SLACK = 30.0
#: how the holder process is started: ``argv[1]`` is the directory that holds this ``skyctl`` package
#: (it runs in the client's directory, as relative key paths are; ``-c`` put that directory first on sys.path: replaced)
HOLDER_BOOT = "import sys; sys.path[0:1] = [sys.argv[1]]; from skyctl.transports.reuse.holder import main; main()"
#: the holder's last argument: how ``ps``/``pgrep -f`` (and the tests' clean-up) tell a holder process
HOLDER_NAME = "skyctl.holder"
#: the directory that holds the ``skyctl`` package (``skyctl/transports/reuse/client.py``: four levels up)
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


class ReuseTransport(ClosedOnExit):
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
        self.label = address_label(profile.user or login_name(), profile.host or "", profile.port or 22)

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
                self._direct = self._direct_transport()
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
            send_frame(sock, Kind.REQUEST, pack_json(request))
            ready, _, _ = select.select([sock], [], [], wait)
            if not ready:
                sock.close()
                raise ConnectError(
                    f"cannot connect to '{self.profile.name}' ({self.label}): the kept connection did not answer within {wait:g}s",
                    hint="try again with --no-reuse (or 'reuse: false' for this host)",
                )
            kind, payload = recv_frame(sock)
        except (EOFError, OSError, ProtocolError):
            sock.close()
            return None
        if kind == Kind.STARTED:
            self.label = unpack_json(payload).get("label") or self.label
            return ReusePipes(sock, self.label)
        sock.close()
        if kind == Kind.BUSY:
            return _BUSY
        if kind == Kind.STALE:
            return _Stale(unpack_json(payload).get("reason") or "the kept connection did not answer")
        if kind == Kind.FAILED:
            raise error_from_payload(payload)
        return None  # not an answer to a REQUEST: as if the holder had gone away

    def _start_holder(self, sock_path: str, lock_path: str, argv: list[str]) -> socket.socket | None:
        """Under the lock: connect to a holder another client just started, or start one.

        Returns a connected socket; None after falling back to a direct
        connection; raises the holder's ``ConnectError``.
        """
        budget = self.profile.connect_timeout * (len(self._chain()) + 1) + HOLDER_START_SLACK
        deadline = time.monotonic() + budget
        lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if not take_start_lock(lock_fd, deadline):
                self._fall_back(f"another skyctl has been starting the kept connection for over {budget:g}s")
                return None
            sock = _connect(sock_path)
            if sock is not None:
                return sock
            status = self._spawn_holder(sock_path, argv, deadline)
            if status is None:
                return None
            if status.get("error"):
                raise error_from_payload(status["error"])
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
        package_parent = _PACKAGE_PARENT
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
                [sys.executable, "-c", HOLDER_BOOT, package_parent, HOLDER_NAME],
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
            proc.stdin.write(pack_json(params) + b"\n")
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
            return unpack_json(line)
        except ValueError:
            _kill(proc)
            tail = _tail(base + ".log")
            self._fall_back(f"the holder process failed to start{': ' + tail if tail else ''} (log: {base}.log)")
            return None

    def _fall_back(self, reason: str) -> Any:
        """Warn once and use a direct connection from now on; returns that transport."""
        self._warn(f"not keeping the SSH connection to '{self.profile.name}': {reason}; connecting directly")
        self._direct = self._direct_transport()
        self.label = self._direct.label
        return self._direct

    def _direct_transport(self) -> Any:
        """An ``SshTransport`` of its own for this host (loads paramiko)."""
        from ..ssh import SshTransport

        return SshTransport(self.profile, self._resolve_profile, ssh_config_path=self._ssh_config_path,
                            system_known_hosts=self._system_known_hosts)


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
