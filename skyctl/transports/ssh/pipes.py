"""The pipes of one command started over SSH: an exec channel as ``WorkerPipes``.

``read``/``write`` block without a timeout (liveness is the connection's
keepalive); the channel's window is the only buffer. stderr is always read
(by the ``skyctl-ssh-stderr`` thread, one per channel: unread stderr would
hold the window and stall stdout too) and kept as a short tail, or also
forwarded (``forward_stderr``). ``close`` ends the command like the local
transport does: EOF, ``CLOSE_GRACE``, TERM, KILL.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable

import paramiko

from ..base import CLOSE_GRACE, ClosedOnExit, end_command, read_exact
from ...errors import ConnectionLost

__all__ = ["CLOSE_GRACE", "STDERR_TAIL", "SshPipes"]

#: how much of the command's own stderr ``stderr_text`` keeps
STDERR_TAIL = 8 * 1024


class SshPipes(ClosedOnExit):
    """A remote command's stdin/stdout over one exec channel, its stderr kept as a short tail.

    ``read`` and ``write`` block without any timeout (a stream may be idle for
    hours; liveness is the connection's keepalive). The channel's window is
    the only buffer: a reader that stops makes the remote writer wait.
    """

    def __init__(self, channel: paramiko.Channel, label: str,
                 lost: Callable[[], ConnectionLost | None] | None = None) -> None:
        self._chan = channel
        self.label = label
        self._lost = lost
        self._tail = bytearray()
        self._tail_lock = threading.Lock()
        self._stderr_sink: Callable[[bytes], None] | None = None
        self._closed = False
        self._stderr_thread = threading.Thread(target=self._drain_stderr, name=f"skyctl-ssh-stderr {label}", daemon=True)
        self._stderr_thread.start()

    def _drain_stderr(self) -> None:
        # Always read stderr: unread stderr would hold the channel's window
        # and so stall stdout too.
        while True:
            try:
                chunk = self._chan.recv_stderr(32768)
            except Exception:
                return
            if not chunk:
                return
            with self._tail_lock:
                self._tail += chunk
                del self._tail[:-STDERR_TAIL]
                sink = self._stderr_sink
                if sink is not None:
                    with contextlib.suppress(Exception):
                        sink(chunk)

    def forward_stderr(self, sink: Callable[[bytes], None]) -> None:
        """Send what stderr has had so far, then every later chunk, to ``sink``, in order (the reuse
        holder relays them to its client). ``sink`` runs on the stderr thread; its errors are ignored."""
        with self._tail_lock:
            if self._tail:
                with contextlib.suppress(Exception):
                    sink(bytes(self._tail))
            self._stderr_sink = sink

    def wait_stderr(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the command's stderr to have been read to its end."""
        self._stderr_thread.join(timeout)

    @property
    def is_running(self) -> bool:
        """The command still runs, untouched by ``close``/EOF, on a live connection (a spare still usable)."""
        chan = self._chan
        transport = chan.get_transport()
        return bool(
            not self._closed and not chan.closed and not chan.eof_received and not chan.exit_status_ready()
            and transport is not None and transport.is_active()
        )

    def lost(self) -> ConnectionLost | None:
        """Why the connection under this channel was given up (keepalives unanswered), else None.

        Asked after a read hit EOF: the error then says more than "closed".
        """
        return self._lost() if self._lost is not None else None

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes from the command's stdout; fewer only at EOF (or when the connection is gone)."""
        return read_exact(self._recv, n)

    def read1(self, n: int) -> bytes:
        """Up to ``n`` bytes of stdout, as soon as any have come; ``b""`` at EOF or on any failure (for relaying)."""
        try:
            return self._chan.recv(n)
        except Exception:
            return b""

    def _recv(self, n: int) -> bytes:
        try:
            return self._chan.recv(n)
        except (OSError, EOFError, paramiko.SSHException):
            return b""

    def write(self, data: bytes) -> None:
        """All of ``data`` to the command's stdin; ``OSError`` when the channel or connection is gone."""
        if not data:
            return
        # Not ``chan.sendall``: it re-slices the rest of the buffer after every
        # packet (quadratic for a multi-MiB frame) and spins forever once the
        # channel has sent EOF (``send`` then returns 0).
        view = memoryview(data)
        try:
            while view:
                sent = self._chan.send(view)
                if not sent:
                    raise BrokenPipeError(f"ssh channel to {self.label} is closed for writing")
                view = view[sent:]
        except OSError:
            raise
        except (EOFError, paramiko.SSHException) as exc:
            raise BrokenPipeError(f"ssh channel to {self.label} closed: {exc}") from None

    def close_stdin(self) -> None:
        """Send EOF on the command's stdin (``shutdown_write``)."""
        with contextlib.suppress(Exception):
            self._chan.shutdown_write()

    def close(self) -> None:
        """Release the channel and make sure the command is gone. Safe to call twice.

        Like the local transport: EOF on its stdin, up to ``CLOSE_GRACE``
        seconds to exit, then SIGTERM and SIGKILL to its process group (SSH
        ``signal`` requests, which OpenSSH honours since 7.9), then the
        channel is closed (so its pipes close too).
        """
        if self._closed:
            return
        self._closed = True
        chan = self._chan
        transport = chan.get_transport()
        if transport is not None and transport.is_active() and not chan.closed:
            end_command(self, lambda name: _send_signal(chan, name))
        with contextlib.suppress(Exception):
            chan.close()
        self._stderr_thread.join(1.0)

    def stderr_text(self) -> str:
        """The last few KiB the command wrote to its stderr."""
        if self._chan.closed or self._chan.eof_received:
            self._stderr_thread.join(0.5)
        with self._tail_lock:
            return bytes(self._tail).decode("utf-8", errors="replace")

    def exit_status(self, timeout: float = 0.0) -> int | None:
        """The exit status once the command ended (waiting up to ``timeout``), else None.

        -1 when the channel closed without one (the command was killed by a
        signal, or the channel or connection was closed first).
        """
        self._chan.status_event.wait(max(0.0, timeout))
        if not self._chan.exit_status_ready():
            return None
        return self._chan.exit_status



def _send_signal(chan: paramiko.Channel, name: str) -> None:
    """RFC 4254 6.9 ``signal`` request (paramiko has no API for it; same shape as its ``send_exit_status``)."""
    with contextlib.suppress(Exception):
        m = paramiko.Message()
        m.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
        m.add_int(chan.remote_chanid)
        m.add_string("signal")
        m.add_boolean(False)
        m.add_string(name)
        chan.get_transport()._send_user_message(m)  # type: ignore[union-attr]
