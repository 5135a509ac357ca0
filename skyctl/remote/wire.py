"""The frame format and message kinds spoken between client and worker.

Shipped to the remote beside ``worker.py``: stdlib only, no skyctl imports.
A frame is a fixed 10-byte header ``[u8 version][u8 kind][u32 call][u32 length]``
followed by ``length`` payload bytes; ``call`` is the id of the call the frame
belongs to (0: none, the connection's own frames). Control frames (HELLO, CREDIT, CANCEL,
BYE, RAISE's header) are JSON or struct so a mismatched peer fails readably;
only values (CALL, ITEMS_*, RETURN, RAISE's exception) are pickles.
See ``docs/protocol.md`` for the table of who sends what.
"""

from __future__ import annotations

import io
import json
import mmap
import os
import struct
from time import monotonic as _monotonic
from enum import IntEnum
from typing import Any, Callable

PROTOCOL_VERSION = 2

#: ``[u8 protocol version][u8 kind][u32 call id][u32 payload length]``, network order
HEADER = struct.Struct("!BBII")

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
    HEARTBEAT = 14  # both ways: "still here", sent after ``interval`` s in which nothing else was sent; empty, or from the worker STARVED (b"\x01": "the call's function waits for input and none is queued") or IDLE (b"\x02": "the call has ended")


#: a worker's HEARTBEAT payload while its call's function waits for input that has not come
STARVED = b"\x01"
#: a worker's HEARTBEAT payload once the call of the header's id has ended (its last frame was written
#: before): a client still waiting for that call's end knows the frame was lost
IDLE = b"\x02"

#: seconds of silence after which a side sends HEARTBEAT, and after which it
#: takes a silent peer for gone, when nothing else is said (see ``liveness``)
HEARTBEAT_INTERVAL = 2.0
SILENCE_BOUND = 45.0


def liveness(spec: str | None) -> tuple[float, float]:
    """``(interval, bound)`` from ``"interval,bound"`` (the ``SKYCTL_LIVENESS``
    the client hands the worker), else the defaults; nonsense falls back too."""
    try:
        interval, bound = (float(x) for x in (spec or "").split(","))
    except ValueError:
        return HEARTBEAT_INTERVAL, SILENCE_BOUND
    if not (0 < interval < bound < 1e6):
        return HEARTBEAT_INTERVAL, SILENCE_BOUND
    return interval, bound

CREDIT_FORMAT = struct.Struct("!QQ")
#: before a RETURN, RAISE or CANCELLED payload: how many values the worker sent in the call's ITEMS_OUT frames
SENT = struct.Struct("!Q")
LOG_FD = struct.Struct("!B")
RAISE_HEADER = struct.Struct("!I")


class ProtocolError(Exception):
    """The peer sent something that is not a frame of this protocol."""


class Eof(Exception):
    """The peer closed its end between frames."""


def encode(kind: Kind, payload: bytes = b"", call: int = 0) -> bytes:
    """One frame as bytes."""
    return HEADER.pack(PROTOCOL_VERSION, kind, call, len(payload)) + payload


#: a payload longer than this is read in pieces of this size, so a reader's
#: ``progress`` (the liveness deadline) sees a long frame arrive as it does
READ_PIECE = 256 << 10


def read_frame(read: Callable[[int], bytes], progress: Callable[[], None] | None = None) -> tuple[Kind, bytes]:
    """``read_call_frame`` without the call id."""
    kind, _, payload = read_call_frame(read, progress)
    return kind, payload


def read_call_frame(read: Callable[[int], bytes],
                    progress: Callable[[], None] | None = None) -> tuple[Kind, int, bytes]:
    """Read one frame with ``read(n)`` (exactly n bytes, fewer only at EOF):
    ``(kind, call id, payload)``.

    Raises ``Eof`` at a clean end between frames, ``ProtocolError`` on garbage
    or a frame cut short. ``progress`` is called after the header and after
    each piece of a long payload (a liveness deadline counts bytes, not frames).
    """
    header = read(HEADER.size)
    if not header:
        raise Eof()
    if len(header) < HEADER.size:
        raise ProtocolError("connection closed inside a frame header")
    version, kind, call, length = HEADER.unpack(header)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"unexpected bytes on the protocol stream (version byte {version!r})")
    try:
        kind = Kind(kind)
    except ValueError:
        raise ProtocolError(f"unknown frame kind {kind}") from None
    if length > MAX_FRAME:
        raise ProtocolError(f"a frame of {length:,} bytes is over the {MAX_FRAME:,} a frame may carry")
    if progress is not None:
        progress()
    if not length:
        return kind, call, b""
    if progress is None or length <= READ_PIECE:
        payload = read(length)
    else:
        pieces = []
        left = length
        while left:
            piece = read(min(left, READ_PIECE))
            if not piece:
                break
            pieces.append(piece)
            left -= len(piece)
            progress()
        payload = b"".join(pieces)
    if len(payload) < length:
        raise ProtocolError(f"connection closed inside a frame ({kind.name}, {len(payload):,} of {length:,} bytes)")
    return kind, call, payload


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


#: a read of at least this many bytes (a frame payload: a batch of input items)
#: gets its own anonymous mapping (see ``payload_reader``): above it, rounding
#: to whole pages wastes under 1/8 and the mapping costs a few µs a batch
MAP_PAYLOAD = 32 << 10


def payload_reader(fd: int, touch: Callable[[], None] = lambda: None) -> Callable[[int], Any]:
    """``read(n)`` over a raw fd, as ``fd_reader`` (exactly n bytes, fewer
    only at EOF), except that ``n >= MAP_PAYLOAD`` is read straight into an
    anonymous ``mmap`` of exactly ``n`` bytes, returned as it is (bytes-like:
    ``len``, slicing, ``memoryview``, ``pickle.loads``).

    Why: input batches are read here on the reader thread, wait in the Inbox
    (a few MiB of them, as much as the credit allows, of sizes that vary from
    batch to batch) and are freed on the main thread once decoded. From malloc
    they came from the reader thread's arena, where this churn of
    variable-size blocks left holes that made the arena keep growing for
    hundreds of MB of input (peak RSS ~5 MiB higher after 1 GB than after
    100 MB). A mapping goes back to the OS whole, the moment its batch is
    decoded, so memory follows what is in flight. Reading into it directly
    also saves joining the pipe-sized chunks into a copy.
    """
    small = fd_reader(fd)
    readinto = io.FileIO(fd, "rb", closefd=False).readinto

    def read(n: int) -> Any:
        if n < MAP_PAYLOAD:
            data = small(n)
            touch()
            return data
        buf = mmap.mmap(-1, n)
        with memoryview(buf) as view:
            got = 0
            while got < n:
                k = readinto(view[got:])
                if not k:  # EOF inside the payload: hand back what came
                    return buf[:got]
                got += k
                touch()  # a long payload on a slow link is not silence
        return buf

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


def seal(payload: bytes, sent: int) -> bytes:
    """A terminal frame's payload: the count of values sent before it, then ``payload``."""
    return SENT.pack(sent) + payload


def unseal(kind: Kind, payload: bytes) -> tuple[int, bytes]:
    """``(values sent, payload)`` of a terminal frame; ``ProtocolError`` when too short."""
    if len(payload) < SENT.size:
        raise ProtocolError(f"a {kind.name} frame of {len(payload)} bytes (the count of values sent is missing)")
    return SENT.unpack_from(payload)[0], payload[SENT.size:]


def pack_credit(items: int, nbytes: int) -> bytes:
    return CREDIT_FORMAT.pack(items, nbytes)


def unpack_credit(payload: bytes) -> tuple[int, int]:
    """A CREDIT payload; ``ProtocolError`` unless it is exactly ``!QQ``."""
    if len(payload) != CREDIT_FORMAT.size:
        raise ProtocolError(f"a CREDIT frame of {len(payload)} bytes, not {CREDIT_FORMAT.size}")
    return CREDIT_FORMAT.unpack(payload)


def pack_raise(info: dict[str, Any], pickled: bytes) -> bytes:
    header = pack_json(info)
    return RAISE_HEADER.pack(len(header)) + header + pickled


def unpack_raise(payload: bytes) -> tuple[dict[str, Any], bytes]:
    """A RAISE payload: its JSON object (every value checked for its type) and
    the pickled exception; ``ProtocolError`` for anything else."""
    if len(payload) < RAISE_HEADER.size:
        raise ProtocolError(f"a RAISE frame of {len(payload)} bytes (no header)")
    (n,) = RAISE_HEADER.unpack_from(payload)
    start = RAISE_HEADER.size
    if start + n > len(payload):
        raise ProtocolError(f"a RAISE frame whose header claims {n:,} bytes of JSON, more than it holds")
    try:
        info = unpack_json(bytes(payload[start : start + n]))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ProtocolError("a RAISE frame whose header is not JSON") from None
    if type(info) is not dict:
        raise ProtocolError(f"a RAISE frame whose header is a JSON {type(info).__name__}, not an object")
    for key in ("type", "message", "traceback", "where", "failure", "hint", "module_not_found"):
        if info.get(key) is not None and type(info[key]) is not str:
            raise ProtocolError(f"a RAISE frame whose {key!r} is not a string")
    return info, payload[start + n :]


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
        #: credit not yet written, per call id (each CREDIT frame carries the id of the call it is for)
        self._pending: dict[int, list[int]] = {}
        self._main = threading.main_thread()
        self._current_thread = threading.current_thread
        #: the id frames carry when ``send`` is not given one (the current call's)
        self.call = 0
        #: ``time.monotonic()`` when a frame was last written (heartbeats fill silences only)
        self.last_sent = 0.0

    def send(self, kind: int, payload: bytes = b"", call: int | None = None) -> None:
        """Write one frame (and any pending credit after it)."""
        frame = encode(kind, payload, self.call if call is None else call)
        on_main = self._current_thread() is self._main
        if on_main:
            _block_sigint(True)
        try:
            with self._lock:
                self._write(frame)
                self._flush_credit_locked()
                self.last_sent = _monotonic()
        finally:
            if on_main:
                _block_sigint(False)
        self._try_flush_credit()

    def heartbeat(self, interval: float, payload: bytes = b"", call: int | None = None) -> None:
        """Send HEARTBEAT unless a frame went out in the last ``interval`` seconds
        or one is being written now (its bytes say as much); ``call``: the id it
        carries (default: the current one), which a STARVED or IDLE speaks of."""
        if _monotonic() - self.last_sent < interval or not self._lock.acquire(blocking=False):
            return
        on_main = self._current_thread() is self._main
        if on_main:
            _block_sigint(True)
        try:
            self._write(encode(Kind.HEARTBEAT, payload, self.call if call is None else call))
            self.last_sent = _monotonic()
        finally:
            self._lock.release()
            if on_main:
                _block_sigint(False)

    def grant(self, items: int, nbytes: int, call: int | None = None) -> None:
        """Tell the peer it may send this many more items and bytes for ``call`` (default: the current one)."""
        with self._credit_lock:
            owed = self._pending.setdefault(self.call if call is None else call, [0, 0])
            owed[0] += items
            owed[1] += nbytes
        self._try_flush_credit()

    def _try_flush_credit(self) -> None:
        while self._pending:
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
            pending, self._pending = self._pending, {}
        for call, (items, nbytes) in pending.items():
            if items or nbytes:
                self._write(encode(Kind.CREDIT, pack_credit(items, nbytes), call))


def _block_sigint(block: bool) -> None:
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK if block else signal.SIG_UNBLOCK, {signal.SIGINT})
