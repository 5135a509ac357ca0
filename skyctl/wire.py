"""The frame format and message kinds spoken between client and worker.

Shipped to the remote beside ``worker.py``: stdlib only, no skyctl imports.
A frame is a fixed 6-byte header ``[u8 version][u8 kind][u32 length]``
followed by ``length`` payload bytes. Control frames (HELLO, CREDIT, CANCEL,
BYE, RAISE's header) are JSON or struct so a mismatched peer fails readably;
only values (CALL, ITEMS_*, RETURN, RAISE's exception) are pickles.
See ``docs/protocol.md`` for the table of who sends what.
"""

from __future__ import annotations

import json
import os
import struct
from enum import IntEnum
from typing import Any, Callable

PROTOCOL_VERSION = 1

#: ``[u8 protocol version][u8 kind][u32 payload length]``, network order
HEADER = struct.Struct("!BBI")

#: the largest payload a frame may carry. Far under what memory allows: a
#: remote that is not trusted cannot make the client allocate more than this
#: for one frame (the credit bounds how many are queued). A value whose batch
#: would be larger is an error on the sending side.
MAX_FRAME = 256 << 20


class Kind(IntEnum):
    """Message kinds; the comment says who sends it and what the payload is."""

    HELLO = 1  # worker → client, first frame: JSON {protocol, python, cloudpickle, pid}
    CALL = 2  # client → worker: pickle (fn, args, kwargs, stream_param, (credit_items, credit_bytes), options)
    ITEMS_IN = 3  # client → worker: a batch of items for the stream parameter (flow.pack_batch)
    END_IN = 4  # client → worker: the input stream is finished (empty payload)
    CREDIT = 5  # both ways: struct !QQ — more items and bytes the other side may send
    ITEMS_OUT = 6  # worker → client: a batch of values yielded (flow.pack_batch)
    RETURN = 7  # worker → client: the return value as a batch of one (flow.pack_batch, or flow.pack_rendered for the CLI: none for None); ends the call
    RAISE = 8  # worker → client: [u32 n][JSON n bytes][pickled exception, or nothing for the CLI]; ends the call
    LOG = 9  # worker → client: [u8 fd][bytes] that user code wrote to fd 1 or 2
    CANCEL = 10  # client → worker: close the running generator (empty payload)
    CANCELLED = 11  # worker → client: the generator was closed after CANCEL; ends the call
    BYE = 12  # client → worker: no more calls, exit (empty payload)
    INPUT_FAILED = 13  # client → worker: the input broke after the items sent (a bad record); the function is closed when it reads that far (empty payload)


CREDIT_FORMAT = struct.Struct("!QQ")
LOG_FD = struct.Struct("!B")
RAISE_HEADER = struct.Struct("!I")


class ProtocolError(Exception):
    """The peer sent something that is not a frame of this protocol."""


class Eof(Exception):
    """The peer closed its end between frames."""


def encode(kind: Kind, payload: bytes = b"") -> bytes:
    """One frame as bytes."""
    return HEADER.pack(PROTOCOL_VERSION, kind, len(payload)) + payload


def read_frame(read: Callable[[int], bytes]) -> tuple[Kind, bytes]:
    """Read one frame with ``read(n)`` (exactly n bytes, fewer only at EOF).

    Raises ``Eof`` at a clean end between frames, ``ProtocolError`` on garbage
    or a frame cut short.
    """
    header = read(HEADER.size)
    if not header:
        raise Eof()
    if len(header) < HEADER.size:
        raise ProtocolError("connection closed inside a frame header")
    version, kind, length = HEADER.unpack(header)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"unexpected bytes on the protocol stream (version byte {version!r})")
    try:
        kind = Kind(kind)
    except ValueError:
        raise ProtocolError(f"unknown frame kind {kind}") from None
    if length > MAX_FRAME:
        raise ProtocolError(f"a frame of {length:,} bytes is over the {MAX_FRAME:,} a frame may carry")
    payload = read(length) if length else b""
    if len(payload) < length:
        raise ProtocolError("connection closed inside a frame")
    return kind, payload


def fd_reader(fd: int) -> Callable[[int], bytes]:
    """``read(n)`` over a raw fd: exactly n bytes, fewer only at EOF."""

    def read(n: int) -> bytes:
        chunks = []
        while n > 0:
            chunk = os.read(fd, n)
            if not chunk:
                break
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    return read


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to a raw fd."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def pack_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def unpack_json(payload: bytes) -> Any:
    return json.loads(payload.decode())


def pack_credit(items: int, nbytes: int) -> bytes:
    return CREDIT_FORMAT.pack(items, nbytes)


def unpack_credit(payload: bytes) -> tuple[int, int]:
    return CREDIT_FORMAT.unpack(payload)


def pack_raise(info: dict[str, Any], pickled: bytes) -> bytes:
    header = pack_json(info)
    return RAISE_HEADER.pack(len(header)) + header + pickled


def unpack_raise(payload: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = RAISE_HEADER.unpack_from(payload)
    start = RAISE_HEADER.size
    return unpack_json(payload[start : start + n]), payload[start + n :]


class FrameWriter:
    """Writes frames to one pipe from several threads.

    - A frame is never torn: writes are serialised, and on the main thread
      SIGINT (skyctl's cancel signal, and Ctrl-C on the client) is held back
      until the frame is out.
    - ``grant()`` never waits behind a large batch being written: credit is
      added to a pending total that whoever holds the pipe sends when done.
      (A consumer that stalled on the lock would stall its own stream.)

    Args:
        write: writes all of the given bytes (blocking).
    """

    def __init__(self, write: Callable[[bytes], None]) -> None:
        import threading

        self._write = write
        self._lock = threading.Lock()
        self._credit_lock = threading.Lock()
        self._pending = [0, 0]
        self._main = threading.main_thread()
        self._current_thread = threading.current_thread

    def send(self, kind: int, payload: bytes = b"") -> None:
        """Write one frame (and any pending credit after it)."""
        frame = encode(kind, payload)
        on_main = self._current_thread() is self._main
        if on_main:
            _block_sigint(True)
        try:
            with self._lock:
                self._write(frame)
                self._flush_credit_locked()
        finally:
            if on_main:
                _block_sigint(False)
        self._try_flush_credit()

    def grant(self, items: int, nbytes: int) -> None:
        """Tell the peer it may send this many more items and bytes."""
        with self._credit_lock:
            self._pending[0] += items
            self._pending[1] += nbytes
        self._try_flush_credit()

    def _try_flush_credit(self) -> None:
        while self._pending[0] or self._pending[1]:
            if not self._lock.acquire(blocking=False):
                return  # the holder sends it when its write is done
            on_main = self._current_thread() is self._main
            if on_main:
                _block_sigint(True)
            try:
                self._flush_credit_locked()
            finally:
                self._lock.release()
                if on_main:
                    _block_sigint(False)

    def _flush_credit_locked(self) -> None:
        with self._credit_lock:
            items, nbytes = self._pending
            self._pending = [0, 0]
        if items or nbytes:
            self._write(encode(Kind.CREDIT, pack_credit(items, nbytes)))


def _block_sigint(block: bool) -> None:
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK if block else signal.SIG_UNBLOCK, {signal.SIGINT})
