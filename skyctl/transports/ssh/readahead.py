"""The TCP socket paramiko reads an SSH connection from, read ahead.

paramiko reads each SSH packet in two or three recvs of exact sizes (its
first cipher block, the rest, the MAC), each a ``poll`` and a ``recv`` under
the 0.1 s timeout it sets. A stream of small values is a packet per value,
so that was four system calls per value in every process that keeps an SSH
connection (the client without reuse, a kept connection's holder). Here one
``recv_into`` takes whatever the kernel has, and the exact-size reads are
served from it: one system call per packet, fewer when packets come together.
"""

from __future__ import annotations

import socket
from typing import Any

#: bytes taken from the kernel per recv (one buffer per connection, reused)
READ_AHEAD = 64 * 1024


class ReadAheadSocket:
    """``sock`` for paramiko's ``Transport``: ``recv(n)`` serves up to ``n`` bytes from one buffer that a
    single ``recv_into`` fills; everything else (``send``, ``settimeout``, ``close``, ...) is ``sock``'s own.

    Only the transport's thread reads (paramiko's rule), so the buffer needs no lock.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._view = memoryview(bytearray(READ_AHEAD))
        self._start = self._end = 0

    def recv(self, n: int) -> bytes:
        """Up to ``n`` bytes: what is buffered, else one ``recv_into`` (raising what ``recv`` would: a
        timeout, a reset); ``b""`` at EOF."""
        if self._start == self._end:
            got = self.sock.recv_into(self._view)
            if not got:
                return b""
            self._start, self._end = 0, got
        stop = min(self._end, self._start + n)
        data = bytes(self._view[self._start:stop])
        self._start = stop
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)
