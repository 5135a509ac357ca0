"""The ``local`` transport: the worker as a child process of this machine.

Same stub, same bundle, same protocol as over SSH; only the pipes differ. The
child gets its own session so a Ctrl-C at the terminal reaches only the
client, which then cancels the call over the protocol (the user's ``finally``
runs); EOF on its stdin tells it the client is gone.
"""

from __future__ import annotations

import subprocess
import threading
from collections import deque
from typing import TYPE_CHECKING

from ..errors import RemoteEnvironmentError
from ..remote.wire import write_all
from .base import end_command

if TYPE_CHECKING:
    from ..config import HostProfile


class ProcessPipes:
    """A child process's stdin/stdout as protocol pipes; stderr kept as a short tail."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        assert proc.stdin and proc.stdout and proc.stderr
        self._in_fd = proc.stdin.fileno()
        self._stdout = proc.stdout
        self._tail: deque[bytes] = deque(maxlen=64)
        self._stderr_thread = threading.Thread(target=self._keep_stderr, name="skyctl-local-stderr", daemon=True)
        self._stderr_thread.start()
        self._closed = False

    def _keep_stderr(self) -> None:
        assert self._proc.stderr
        for chunk in iter(lambda: self._proc.stderr.read1(4096), b""):  # type: ignore[union-attr]
            self._tail.append(chunk)

    def read(self, n: int) -> bytes:
        try:
            return self._stdout.read(n)
        except ValueError:  # closed under us
            return b""

    def write(self, data: bytes) -> None:
        write_all(self._in_fd, data)

    def close_stdin(self) -> None:
        try:
            self._proc.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # as over ssh: EOF, a grace, then SIGTERM (the worker ends what the function started) and SIGKILL
        signals = {"TERM": self._proc.terminate, "KILL": self._proc.kill}
        if not end_command(self, lambda name: signals[name]()):
            self._proc.wait()
        self._stdout.close()

    def stderr_text(self) -> str:
        self._stderr_thread.join(0.5)
        return b"".join(self._tail).decode(errors="replace")[-4096:]

    def exit_status(self, timeout: float = 0.0) -> int | None:
        try:
            return self._proc.wait(timeout) if timeout else self._proc.poll()
        except subprocess.TimeoutExpired:
            return None

    @property
    def pid(self) -> int:
        return self._proc.pid


class LocalTransport:
    """Starts commands as child processes."""

    label = "local"

    def __init__(self, profile: HostProfile | None = None) -> None:
        #: the profile it serves, for messages (a local profile may have any name)
        self.profile = profile

    def start(self, argv: list[str]) -> ProcessPipes:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            raise RemoteEnvironmentError(
                f"python '{argv[0]}' cannot be run here: {exc.strerror}",
                hint="set 'python:' in the local host's profile to an existing interpreter",
            ) from None
        return ProcessPipes(proc)

    def close(self) -> None:
        pass
