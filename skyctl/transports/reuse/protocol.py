"""The socket protocol between a kept connection's holder and its clients: kinds, frames, payloads.

One Unix socket connection per call. A frame is ``!BI`` (kind, payload
length) and the payload. Client → holder: ``REQUEST`` (JSON: argv, idle
seconds), then ``STDIN`` data and ``STDIN_EOF``. Holder → client: ``STARTED``
(JSON: label), or instead ``FAILED`` (an error, ``error_payload``), ``BUSY``
(the server allows no more sessions on the kept connection: connect
directly) or ``STALE`` (the kept connection did not answer its round trip:
connect directly; JSON: reason); then ``STDOUT`` (empty payload = EOF),
``STDERR`` and finally ``EXIT`` (JSON: status). ``LOST`` (an error), just
before the EOF, says the holder gave the SSH connection up. Closing the
socket means the client is gone.

Both sides use only this module to write and read frames: ``send_frame``,
``recv_frame`` (blocking) and ``FrameBuffer`` (bytes as they come). A kind
not in ``Kind`` is a ``ProtocolError``, never skipped. Errors cross as
``skyctl.errors.error_info`` (type, message, hint). Standard library only.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from enum import IntEnum, unique
from typing import Any, Iterator

from ...errors import ConnectError, SkyctlError, error_from_info, error_info
from ..base import read_exact

__all__ = ["FRAME", "PROTOCOL", "FrameBuffer", "Kind", "ProtocolError", "error_from_payload", "error_payload",
           "pack_json", "recv_frame", "send_frame", "unpack_json"]

#: bump when the protocol changes (part of the connection key: old holders are not spoken to)
PROTOCOL = 3
#: ``[u8 kind][u32 payload length]``, network order
FRAME = struct.Struct("!BI")
#: payloads up to this size go out in one ``sendall`` with their header (larger: two, no copy)
_JOIN_BELOW = 65536


@unique
class Kind(IntEnum):
    """Frame kinds; the comment says who sends it and what the payload is."""

    REQUEST = 1  # client → holder, first: JSON {argv, idle}
    STDIN = 2  # client → holder: bytes for the command's stdin
    STDIN_EOF = 3  # client → holder: EOF on the command's stdin (empty)
    STARTED = 10  # holder → client: JSON {label, spare}: the command runs
    FAILED = 11  # holder → client: error_payload; the call ends
    STDOUT = 12  # holder → client: the command's stdout bytes; empty = EOF
    STDERR = 13  # holder → client: the command's stderr bytes
    EXIT = 14  # holder → client: JSON {status}; the last frame
    LOST = 15  # holder → client: error_payload (a ConnectionLost), just before STDOUT's EOF
    BUSY = 16  # holder → client: error_payload; MaxSessions reached on the kept connection: connect directly
    STALE = 17  # holder → client: JSON {reason}; the kept connection did not answer: connect directly


class ProtocolError(ValueError):
    """A frame of a kind not in ``Kind``: the peer speaks something else."""


def _kind(value: int) -> Kind:
    try:
        return Kind(value)
    except ValueError:
        raise ProtocolError(f"unknown frame kind {value}") from None


def send_frame(sock: socket.socket, kind: Kind, payload: bytes = b"", lock: threading.Lock | None = None) -> None:
    """Write one frame (under ``lock``, when several threads write to ``sock``)."""
    header = FRAME.pack(kind, len(payload))
    if lock is not None:
        with lock:
            _send(sock, header, payload)
    else:
        _send(sock, header, payload)


def _send(sock: socket.socket, header: bytes, payload: bytes) -> None:
    if len(payload) < _JOIN_BELOW:
        sock.sendall(header + payload)
    else:
        sock.sendall(header)
        sock.sendall(payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = read_exact(sock.recv, n)
    if len(data) < n:
        raise EOFError
    return data


def recv_frame(sock: socket.socket) -> tuple[Kind, bytes]:
    """One frame; ``EOFError`` when the peer closed (also mid-frame), ``ProtocolError`` for an unknown kind."""
    kind, length = FRAME.unpack(_recv_exact(sock, FRAME.size))
    return _kind(kind), _recv_exact(sock, length) if length else b""


class FrameBuffer:
    """Frames out of bytes as they arrive (a reader that must not block for a whole frame)."""

    def __init__(self) -> None:
        self._raw = bytearray()

    def feed(self, chunk: bytes) -> Iterator[tuple[Kind, bytes]]:
        """Add ``chunk``; yield every frame now complete (``ProtocolError`` for an unknown kind)."""
        raw = self._raw
        raw += chunk
        pos = 0
        end = len(raw)
        try:
            while end - pos >= FRAME.size:
                kind, length = FRAME.unpack_from(raw, pos)
                start = pos + FRAME.size
                if end - start < length:
                    break
                pos = start + length
                yield _kind(kind), bytes(memoryview(raw)[start:pos])
        finally:
            del raw[:pos]


def pack_json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def unpack_json(payload: bytes) -> Any:
    return json.loads(payload)


def error_payload(exc: SkyctlError) -> bytes:
    """``exc`` as a ``FAILED``/``BUSY``/``LOST`` payload (also the holder's start-up answer's ``error``)."""
    return pack_json(error_info(exc))


def error_from_payload(payload: bytes | dict[str, Any], default: type[SkyctlError] = ConnectError) -> SkyctlError:
    """The error an ``error_payload`` carried (``default`` for a type not known here)."""
    info = unpack_json(payload) if isinstance(payload, (bytes, bytearray)) else payload
    return error_from_info(info, default, message="the kept SSH connection failed")
