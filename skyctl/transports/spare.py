"""Spare workers for a local host: started when a run ends, warm, and handed to the next run.

For a ``type: ray`` host whose driver runs on a ``local`` via host (``reuse:
true``, the default): the driver's own start (``import ray``, ``ray.init``,
Ray starting a worker process for the new job) is most of a run's time to
its first value and depends on no call. So ``SpareTransport`` wraps the via
host's ``LocalTransport``:

- ``start_for(argv, args)``: a spare started for the same command and the
  same stub arguments (``key``) is claimed (its socket renamed: one client
  per spare), connected and checked (``SO_PEERCRED``: the pid in its name,
  our uid), and its socket is the worker's pipes (``SocketPipes``); with
  none, the command starts as a child, as always.
- ``close()``: for a transport that started a worker, one spare is started
  in its place (``start_spare``): the same command and arguments, plus
  ``SKYCTL_SPARE`` in its environment, in a session of its own; it is not
  waited for. The worker side (``remote/spare.py``) warms up, waits up to
  the profile's ``reuse_idle`` seconds, and leaves when as many spares of its
  key as the host has ``workers:`` are there already.

The sockets live in the private runtime directory's ``spares`` (0700, ours):
only this user can claim a spare, and a spare serves only a client that
sends the arguments it was started for. ``SKYCTL_REUSE_SPARE=0`` (as for
kept SSH connections) or ``--no-reuse`` turns spares off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import signal
import socket
import subprocess
from typing import Any

from ..bootstrap import with_env
from ..remote import spare
from ..runtime import UnsafeDirectory, private_subdir
from .base import end_command, read_exact
from .local import LocalTransport

#: seconds a claimed spare has to accept the connection
CONNECT_SECONDS = 2.0


def spares_dir(environ: Any = None) -> str:
    """The private runtime directory's ``spares`` (0700, created): raises ``UnsafeDirectory`` when it is
    not a directory of ours that only we can use."""
    return private_subdir("spares", environ)


def key_of(argv: list[str], args: bytes) -> str:
    """What a spare is for: the command and the stub's arguments."""
    return hashlib.sha256(json.dumps(argv).encode() + b"\0" + args).hexdigest()[:20]


class SocketPipes:
    """A claimed spare's socket as a worker's pipes; the process is not our child: a pidfd waits for it
    and signals it (no pidfd: its ``/proc`` entry and ``kill``)."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self._sock = sock
        self.pid = pid
        self._pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self._pidfd = os.pidfd_open(pid)
        self._closed = False

    def read(self, n: int) -> bytes:
        try:
            return read_exact(self._sock.recv, n)
        except OSError:
            return b""

    def write(self, data: bytes) -> None:
        self._sock.sendall(data)

    def close_stdin(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        end_command(self, self._signal)
        self._sock.close()
        if self._pidfd is not None:
            os.close(self._pidfd)

    def stderr_text(self) -> str:
        return ""  # a spare's stderr is /dev/null: what it says goes over the protocol (LOG frames)

    def exit_status(self, timeout: float = 0.0) -> int | None:
        """0 once it has ended (its real status is its parent's to see), else None."""
        if self._pidfd is not None:
            return 0 if select.select([self._pidfd], [], [], timeout)[0] else None
        if not os.path.exists(f"/proc/{self.pid}"):
            return 0
        if timeout:
            with contextlib.suppress(OSError):
                select.select([self._sock], [], [], timeout)  # EOF comes as it exits
        return None if os.path.exists(f"/proc/{self.pid}") else 0

    def _signal(self, name: str) -> None:
        sig = signal.SIGTERM if name == "TERM" else signal.SIGKILL
        with contextlib.suppress(OSError):
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, sig)
            else:
                os.kill(self.pid, sig)


class SpareTransport:
    """A local transport that runs a call in a spare when one waits, and leaves one for the next call.

    Args:
        inner: the via host's ``LocalTransport``.
        idle: seconds a spare waits for a client (the profile's ``reuse_idle``).
        most: spares of one key kept at most (the host's ``workers:``, a distributed pipe's slots).
        environ: where ``XDG_RUNTIME_DIR`` and ``SKYCTL_REUSE_SPARE`` are read (tests).
    """

    def __init__(self, inner: LocalTransport, idle: float, most: int, environ: Any = None) -> None:
        self._inner = inner
        self._idle = idle
        self._most = most
        self._environ = os.environ if environ is None else environ
        self.profile = inner.profile
        self.label = inner.label
        #: the command and arguments of the last worker started, for the spare ``close`` leaves
        self._last: tuple[list[str], bytes] | None = None

    def start(self, argv: list[str]) -> Any:
        return self._inner.start(argv)

    def start_for(self, argv: list[str], args: bytes) -> Any:
        """A worker for the stub arguments ``args``: a spare's socket when one waits, else a new child."""
        self._last = (argv, args)
        pipes = self._claim(key_of(argv, args))
        return pipes if pipes is not None else self._inner.start(argv)

    def close(self) -> None:
        last, self._last = self._last, None
        if last is not None and self._environ.get("SKYCTL_REUSE_SPARE", "1") != "0":
            with contextlib.suppress(OSError, UnsafeDirectory):
                start_spare(*last, idle=self._idle, most=self._most, environ=self._environ)
        self._inner.close()

    def _claim(self, key: str) -> SocketPipes | None:
        try:
            directory = spares_dir(self._environ)
            names = os.listdir(directory)
        except (OSError, UnsafeDirectory):
            return None
        for name in names:
            pid = spare.parse_name(name, key)
            if pid is None:
                continue
            path = os.path.join(directory, name)
            claimed = os.path.join(directory, f"{os.urandom(6).hex()}.taken")  # no longer than its name
            try:
                os.rename(path, claimed)  # ours alone from here on
            except OSError:
                continue  # another client took it
            try:
                sock = _connect(claimed, pid)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(claimed)
            if sock is not None:
                return SocketPipes(sock, pid)
        return None


def _connect(path: str, pid: int) -> socket.socket | None:
    """A connection to the spare at ``path``, if the process at the other end is ``pid`` and ours."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_SECONDS)
        sock.connect(path)
        if spare.peer(sock) != (pid, os.geteuid()):
            raise OSError("not the spare its name says")
        sock.settimeout(None)
        return sock
    except (OSError, AttributeError):  # AttributeError: no SO_PEERCRED here, so no spare is trusted
        sock.close()
        return None


def start_spare(argv: list[str], args: bytes, *, idle: float, most: int, environ: Any = None) -> None:
    """Start a spare for the command ``argv`` and stub arguments ``args``, in a session of its own; not
    waited for (a spare that cannot start leaves nothing: the next call starts its worker as always)."""
    spec = {"dir": spares_dir(environ), "key": key_of(argv, args), "args": hashlib.sha256(args).hexdigest(),
            "idle": idle, "most": most}
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)
    assert proc.stdin is not None  # not kept: once freed, ``subprocess`` reaps it when it has ended
    try:
        proc.stdin.write(with_env(args, {spare.ENV: json.dumps(spec)}))
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()
