"""The pipes of one command started through a kept connection's holder.

Whoever needs bytes (``read``, or ``exit_status`` when no read is in
progress) pulls frames off the socket; there is no thread of our own.
Frames are dispatched by a table of handlers, one per kind the holder may
send once the command runs; any other kind breaks the call (exit 6).
Standard library only.
"""

from __future__ import annotations

import select
import socket
import threading
import time

from ..base import ClosedOnExit
from ...errors import ConnectionLost
from .protocol import FrameBuffer, Kind, ProtocolError, error_from_payload, send_frame, unpack_json

__all__ = ["RECV_SIZE", "STDERR_TAIL", "ReusePipes"]

#: how much of the command's stderr is kept for ``stderr_text``
STDERR_TAIL = 8 * 1024
#: bytes asked of the socket per recv
RECV_SIZE = 256 * 1024


class ReusePipes(ClosedOnExit):
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
        self._frames = FrameBuffer()  # socket bytes not yet split into frames
        #: what each recv fills: one buffer for the call's life (a fresh ``recv(RECV_SIZE)`` would map,
        #: shrink and unmap 256 KiB per frame, three system calls and a page fault for every value)
        self._recv_buf = memoryview(bytearray(RECV_SIZE))
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
            got = self._sock.recv_into(self._recv_buf)
        except OSError:
            got = 0
        if not got:
            self._end()
            return False
        try:
            for kind, payload in self._frames.feed(self._recv_buf[:got]):
                self._HANDLERS[kind](self, payload)
        except (ProtocolError, KeyError, ValueError) as exc:  # not the holder's protocol: as if it went away
            self._lost = ConnectionLost(f"the kept connection to {self.label} broke the protocol ({exc})",
                                        "try again with --no-reuse (or 'reuse: false' for this host)")
            self._end()
            return False
        return True

    def _end(self) -> None:
        """Nothing more will come: stdout is at EOF, and without an EXIT the status is -1."""
        self._sock_eof = True
        self._out_eof = True
        if self._status is None:
            self._status = -1  # the holder or its connection went away
        self._wake()

    # -- one handler per kind the holder sends after STARTED ----------------

    def _on_stdout(self, payload: bytes) -> None:
        if payload:
            self._out += payload
        else:
            self._out_eof = True

    def _on_stderr(self, payload: bytes) -> None:
        self._tail += payload
        del self._tail[:-STDERR_TAIL]

    def _on_exit(self, payload: bytes) -> None:
        self._status = int(unpack_json(payload).get("status", -1))
        self._wake()

    def _on_lost(self, payload: bytes) -> None:
        lost = error_from_payload(payload, ConnectionLost)
        self._lost = lost if isinstance(lost, ConnectionLost) else ConnectionLost(lost.message, lost.hint)

    _HANDLERS = {Kind.STDOUT: _on_stdout, Kind.STDERR: _on_stderr, Kind.EXIT: _on_exit, Kind.LOST: _on_lost}

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
            send_frame(self._sock, Kind.STDIN, bytes(data))

    def close_stdin(self) -> None:
        with self._wlock:
            if self._closed:
                return
            try:
                send_frame(self._sock, Kind.STDIN_EOF)
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

