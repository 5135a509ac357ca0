"""What user code writes to fds 1 and 2 on the worker, forwarded to the client as LOG frames.

Shipped in the bundle; stdlib only. The worker points fds 1 and 2 at pipes before any user
code runs (a stray ``print`` can never corrupt the protocol stream); a ``skyctl-log-<fd>``
thread per pipe sends what arrives there."""

from __future__ import annotations

import os
import select
import sys
import threading
from typing import Any

from . import wire
from .wire import Kind


class LogForwarder:
    """Points fds 1 and 2 at pipes and forwards what arrives there as LOG frames."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._pipes: list[tuple[int, int, threading.Lock]] = []
        for fd in (1, 2):
            r, w = os.pipe()
            os.dup2(w, fd)
            os.close(w)
            os.set_blocking(r, False)
            lock = threading.Lock()
            self._pipes.append((fd, r, lock))
            threading.Thread(target=self._pump, args=(fd, r, lock), name=f"skyctl-log-{fd}", daemon=True).start()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
            except (AttributeError, ValueError):
                pass

    def _forward(self, fd: int, r: int) -> bool:
        """Send what is in the pipe now; False at EOF."""
        while True:
            try:
                data = os.read(r, 65536)
            except BlockingIOError:
                return True
            if not data:
                return False
            try:
                self._conn.send(Kind.LOG, wire.LOG_FD.pack(fd) + data)
            except OSError:
                return False

    def _pump(self, fd: int, r: int, lock: threading.Lock) -> None:
        while True:
            select.select([r], [], [])
            with lock:
                if not self._forward(fd, r):
                    return

    def drain(self) -> None:
        """Forward everything user code has written so far (before a call's last frame)."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        for fd, r, lock in self._pipes:
            with lock:
                self._forward(fd, r)
