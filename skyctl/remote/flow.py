"""Credit-based flow control for one stream of items, used the same way on both sides.

Shipped to the remote beside ``worker.py``: stdlib only, no skyctl imports.

- ``Outbox``: the sending side. The producer queues each item the moment it
  exists (a generator's values, driven from C, one queue entry each; or a
  whole chunk of stdin as one entry); a sender thread wakes when something is
  pending and takes *everything* pending into one batch. Nothing decides a
  "mode": a lone value after a pause is a batch of one, sent at once; a dense
  stream piles up while the sender writes, so its batches grow by themselves,
  and more so on a busy machine. The producer blocks while the receiver has
  granted no more credit, in items or in bytes, so a slow receiver pauses it.
- ``Inbox``: the receiving side. Batches are queued as they arrive (never more
  than the credit granted); ``items()`` hands them out one at a time; credit
  for a batch is owed once the consumer has taken all of it, and goes back in
  lumps of an eighth of the window.

The client feeds stdin records through an Outbox into the worker's Inbox; the
worker feeds the user's yields through an Outbox into the client's Inbox.
"""

from __future__ import annotations

import queue
import struct
import threading
import time
from itertools import chain, groupby, islice, repeat, starmap, takewhile
from operator import is_
from typing import Any, Callable, Iterator

from . import values

#: default credit a receiver grants: items and pickled bytes in flight
WINDOW_ITEMS = 1 << 20
WINDOW_BYTES = 4 << 20
#: a receiver returns credit once it owes this much (an eighth of the window),
#: not after every batch: a CREDIT frame wakes the other side's reader, and on
#: a sparse stream that is a second frame in each direction per item
GRANT_EVERY = (WINDOW_ITEMS // 8, WINDOW_BYTES // 8)

#: the most items the sender packs into one frame
BATCH_ITEMS = 8192
#: about the most pickled bytes waiting for the sender: the producer also
#: blocks while this much (estimated from the last batch's size per item) is
#: queued, so a slow link cannot pile items up behind the credit (which counts
#: only bytes already sent)
QUEUED_BYTES = 1 << 20

#: bytes a sender may overshoot its byte credit by: what was queued when the
#: credit ran out, and one frame (the receiver's check allows this much)
OVERRUN_BYTES = 2 * QUEUED_BYTES + (64 << 20)

#: the most items ``put_run`` queues between two credit checks. Not a batch
#: size: every item is visible to the sender the moment it is queued.
RUN_ITEMS = 1024

_END = object()


class Cancelled(Exception):
    """The stream was cancelled (the peer went away or asked to stop)."""


class CreditOverrun(ValueError):
    """The peer sent more than the credit it was granted: it does not follow the protocol."""


class _Chunk:
    """A list of items (or a ``LineBatch``) queued as one entry by ``put_many``."""

    __slots__ = ("items",)

    def __init__(self, items: list[Any] | LineBatch) -> None:
        self.items = items


class Outbox:
    """Items waiting to be framed, sent only as the receiver's credit allows.

    The producer puts every item on a ``SimpleQueue`` as soon as it has it
    (``put_run`` drives a generator from C, ``map(queue.put, …)``, no Python
    call per item); the sender thread blocks on that queue while it is empty
    and, each time it wakes, takes all that is there. Batch size is therefore
    whatever accumulated while the sender was busy: one item for a sparse
    stream, thousands for a dense one. There is no timer and no state that
    outlives one batch.

    A run's first item is pulled in Python; when everything before it has been
    sent and the sender is idle, the producer sends it itself (one thread
    hand-over less for a lone value). That is decided per item, from what is
    pending, so it cannot stick.

    Args:
        send: writes one frame of ``kind`` (thread-safe; called from the sender
            thread, and from the producer's for a lone value: ``_send_now``).
        kind: the frame kind that carries a batch.
        dumps: pickles a list of items (see ``pack_batch``).
        on_unsendable: the frame that ends the stream instead of ``finish``'s
            frames when an item could not be pickled (the stream is then cut
            short: its end must say so, never look complete).
        pack: makes a batch's payload instead of ``pack_batch(items, dumps)``
            (the worker renders text for the CLI: ``pack_rendered``).
        max_payload: the largest payload a frame may carry: a bigger batch is
            cut in two, a single item that big cannot be sent.
        seal: makes a terminal frame's payload from ``(payload, items sent)``
            (the worker puts the count of values it sent before its RETURN,
            RAISE or CANCELLED, so the client can tell a batch lost or doubled).
    """

    def __init__(self, send: Callable[[int, bytes], None], kind: int, dumps: Callable[[Any], bytes],
                 on_unsendable: Callable[[BaseException], tuple[int, bytes]] | None = None,
                 pack: Callable[[list[Any]], bytes] | None = None, max_payload: int | None = None,
                 seal: Callable[[bytes, int], bytes] | None = None) -> None:
        self._send = send
        self._seal = seal
        self._kind = kind
        self._pack: Callable[[list[Any]], bytes] = pack or (lambda items: pack_batch(items, dumps))
        self._max_payload = max_payload
        self._on_unsendable = on_unsendable
        #: why an item could not be pickled (the outbox then cancels itself)
        self.unsendable: BaseException | None = None
        #: items (``put_run``) or ``_Chunk``s (``put_many``), then ``_END``
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        #: whether ``put_many`` queues chunks here (an outbox gets chunks or items, not both)
        self._chunked = False
        #: items the sender has taken off the queue, and of those sent
        self._taken = 0
        self._sent_items = 0
        #: held while items are framed and written: by the sender thread, or by
        #: the producer sending a lone value itself (``_send_now``)
        self._sending = threading.Lock()
        self._credit = threading.Condition()
        self._granted_items = 0
        self._granted_bytes = 0
        self._sent_bytes = 0
        self._terminal: list[tuple[int, bytes]] = []
        self._finishing = False
        self._cancelled = False
        #: items the producer may still queue before it checks credit again (0: check now)
        self._room = 0
        #: items the producer may queue ahead of the sender: QUEUED_BYTES over the last
        #: batch's bytes per item (1 until a first batch has been sized)
        self._max_queued = 1
        self.produced = 0
        #: frames of items written (for tests and the status line)
        self.frames = 0
        self.error: BaseException | None = None
        role = str(getattr(kind, "name", kind)).lower().replace("_", "-")
        self._thread = threading.Thread(target=self._run, name=f"skyctl-outbox-{role}", daemon=True)
        self._thread.start()

    # -- producer side -------------------------------------------------
    def put(self, item: Any) -> None:
        """Queue one item; blocks while out of credit; raises ``Cancelled``."""
        self.put_many([item])

    def put_many(self, items: list[Any] | LineBatch) -> None:
        """Queue a list of items as one entry (a chunk of stdin); may overshoot
        the credit by that one list, then waits as ``put`` does."""
        if self._room <= 0:
            self._make_room()
        self._chunked = True
        self._room -= len(items)
        self.produced += len(items)
        self._queue.put(_Chunk(items))

    def wait_for_room(self) -> None:
        """Block until ``put_run`` may queue at least one item; raises ``Cancelled``."""
        if self._room <= 0:
            self._make_room()

    def put_run(self, items: Iterator[Any]) -> bool:
        """Queue items from ``items`` until the room left (credit, queue) is
        used up, each the moment it is yielded; blocks first while out of
        credit. False once ``items`` is exhausted."""
        if self._room <= 0 or self._cancelled:  # a cancel that came between two runs: not one more run
            self._make_room()
        room = self._room
        for first in items:  # the first value, however long it takes
            break
        else:
            return False
        self._room -= 1
        self.produced += 1
        if not self._send_now(first):
            self._queue.put(first)
        if room > 1:
            # each value is put on the queue (waking an idle sender) as it is
            # yielded; the list of put()'s Nones only counts them, from C
            taken = len(list(map(self._queue.put, islice(items, room - 1))))
            self.produced += taken
            self._room -= taken
            return taken == room - 1
        return True

    def _send_now(self, item: Any) -> bool:
        """Send ``item`` (already counted as produced) from the producer's own
        thread when everything before it has been sent and the sender is idle.
        False: queue it."""
        if self._sent_items != self.produced - 1 or not self._sending.acquire(blocking=False):
            return False
        try:
            if self._sent_items != self.produced - 1:  # the sender took something meanwhile
                return False
            self._send_all([[item]])
            return True
        finally:
            self._sending.release()

    def _make_room(self) -> None:
        """The slow path of ``put``: wait for credit and for the sender, then
        allow a few more items without checking (a hot loop checks once per run).

        The room is capped by the items and bytes still granted and, through
        ``_max_queued`` (an estimate from the last batch), to about
        ``QUEUED_BYTES / 8`` of pickled data.
        """
        while True:
            if self.produced >= self._granted_items or self._sent_bytes >= self._granted_bytes or self._cancelled:
                self._wait_for_credit()
            if self.produced - self._taken >= self._max_queued:
                self._wait_for_sender()
            room = min(
                self._granted_items - self.produced,
                self._max_queued - (self.produced - self._taken),
                max(1, self._max_queued // 8),
                RUN_ITEMS,
            )
            if room > 0:
                self._room = room
                return

    def finish(self, *frames: tuple[int, bytes]) -> None:
        """Send what is queued, then ``frames``; the sender thread then ends.
        Only the first call counts."""
        with self._credit:
            if self._finishing:
                return
            self._finishing = True
            self._terminal = list(frames)
        self._queue.put(_END)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the sender thread to end; True when it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- receiver's side, from the reader thread -------------------------
    def grant(self, items: int, nbytes: int) -> None:
        """The receiver took items: it may be sent this many more items and bytes."""
        with self._credit:
            self._granted_items += items
            self._granted_bytes += nbytes
            self._credit.notify_all()

    def cancel(self) -> None:
        """Drop what is queued and make ``put()`` raise ``Cancelled`` (terminal frames still go)."""
        with self._credit:
            self._cancelled = True
            self._room = 0
            self._credit.notify_all()

    @property
    def sent(self) -> int:
        """Items written so far (a call's progress, for an idle limit)."""
        return self._sent_items

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def waiting_for_credit(self) -> bool:
        return self._waiting

    _waiting = False

    def _wait_for_credit(self) -> None:
        with self._credit:
            self._waiting = True
            try:
                while not self._cancelled and (
                    self.produced >= self._granted_items or self._sent_bytes >= self._granted_bytes
                ):
                    self._credit.wait()
            finally:
                self._waiting = False
            if self._cancelled:
                raise Cancelled()

    def _wait_for_sender(self) -> None:
        """Block while the sender has ``_max_queued`` items still to frame (it is behind: a slow link)."""
        with self._credit:
            while not self._cancelled and self.produced - self._taken >= self._max_queued:
                self._credit.wait()
            if self._cancelled:
                raise Cancelled()

    # -- sender thread ---------------------------------------------------
    def _run(self) -> None:
        get, qsize = self._queue.get, self._queue.qsize
        while True:
            entries = [get()]  # asleep while nothing is pending
            entries.extend(starmap(get, repeat((), qsize())))  # and everything that piled up meanwhile
            last = self._finishing and any(map(is_, entries, repeat(_END)))
            if last:  # items of a cancelled producer may follow it
                del entries[list(map(is_, entries, repeat(_END))).index(True):]
            if self._chunked:
                taken: list[Any] = [e.items if type(e) is _Chunk else [e] for e in entries]
            else:
                taken = [entries]
            with self._sending:
                self._send_all(taken)
            if last:
                terminal = self._terminal
                if self.unsendable is not None and self._on_unsendable is not None:
                    terminal = [self._on_unsendable(self.unsendable)]
                for kind, payload in terminal:
                    try:
                        self._send(kind, payload if self._seal is None else self._seal(payload, self._sent_items))
                    except BaseException as exc:
                        self.error = self.error or exc
                        break
                return

    def _send_all(self, taken: list[Any]) -> None:
        self._taken += sum(map(len, taken))
        with self._credit:  # room in the queue: wake a producer waiting for the sender
            self._credit.notify_all()
        for count, payload in self._packed(taken):
            if self._cancelled or self.error is not None:
                return
            self._max_queued = max(1, QUEUED_BYTES * count // len(payload))
            # counted before it goes: a KeyboardInterrupt (skyctl's cancel, held back while
            # the frame is written) may come out of ``_send`` once the frame is out, and the
            # count of values sent ends the call (``wire.seal``)
            self.frames += 1
            self._sent_bytes += len(payload)
            self._sent_items += count
            try:
                self._send(self._kind, payload)
            except Exception as exc:  # the peer is gone (a KeyboardInterrupt goes on up)
                self.frames -= 1
                self._sent_bytes -= len(payload)
                self._sent_items -= count
                self.error = exc
                self.cancel()

    def _pickles(self, item: Any) -> bool:
        try:
            self._pack_within([item])
        except BaseException:
            return False
        return True

    def _pack_within(self, batch: list[Any]) -> list[tuple[int, bytes]]:
        """``(items, payload)`` for ``batch``: one, or more when a payload
        would be over ``max_payload``; raises ``ValueError`` for a single item that is."""
        payload = self._pack(batch)
        if self._max_payload is None or len(payload) <= self._max_payload:
            return [(len(batch), payload)]
        if len(batch) == 1:
            raise ValueError(f"an item of {len(payload):,} bytes is over the {self._max_payload:,} bytes a frame may carry")
        half = len(batch) // 2
        return self._pack_within(batch[:half]) + self._pack_within(batch[half:])

    def _packed(self, taken: list[Any]) -> Iterator[tuple[int, bytes]]:
        """``(items, payload)`` for each frame of what the sender took.

        A ``LineBatch`` (a chunk of stdin lines, already UTF-8 text) is a frame
        as it is; the lists between them are joined and cut ``BATCH_ITEMS`` to a frame.
        """
        for text, group in groupby(taken, key=_is_line_batch):
            if text:
                for lines in group:
                    yield len(lines), LINES + lines.text
                continue
            lists = list(group)
            items = lists[0] if len(lists) == 1 else list(chain.from_iterable(lists))  # one list: not copied
            for start in range(0, len(items), BATCH_ITEMS):
                batch = items[start : start + BATCH_ITEMS] if len(items) > BATCH_ITEMS else items
                try:
                    packed = self._pack_within(batch)
                except BaseException as exc:  # an item does not pickle: send the ones before it, then stop
                    good = list(takewhile(self._pickles, batch))
                    if good:
                        yield from self._pack_within(good)
                    self.error = self.unsendable = exc
                    self.cancel()
                    return
                yield from packed


#: the first byte of an ITEMS payload says how the rest holds the batch
LINES = b"L"  # UTF-8 text, the items joined by "\n": every item a str without "\n" (the common case, fast both ways)
PICKLED = b"P"  # [u32 items] then a pickled list
RENDERED = b"R"  # [u32 items] then the text the CLI prints for them (``values.render``): never unpickled
#: the item count after a PICKLED or RENDERED tag (a receiver checks it against the credit it granted)
COUNT = struct.Struct("!I")


def pack_batch(items: list[Any], dumps: Callable[[Any], bytes]) -> bytes:
    """A batch as an ITEMS payload: plain text lines when every item is a
    one-line str (no pickle memo, a third of the work), else a pickle."""
    try:
        text = "\n".join(items)
    except TypeError:  # not all str: fails at the first non-str, so cheap
        pass
    else:
        if text.count("\n") == len(items) - 1 and list(map(type, items)).count(str) == len(items):
            try:
                return LINES + text.encode()
            except UnicodeEncodeError:  # lone surrogates: pickle keeps them
                pass
    return PICKLED + COUNT.pack(len(items)) + dumps(items)


def pack_rendered(text: bytes, count: int) -> bytes:
    """``count`` items already rendered as the CLI prints them."""
    return RENDERED + COUNT.pack(count) + text


def pack_values(items: list[Any], render: Any, dumps: Callable[[Any], bytes]) -> bytes:
    """A call's batch of values: rendered as the CLI prints them (``render``: ``values.render``'s
    options), else as the API's pickles."""
    if render is not None:
        return pack_rendered(values.render(items, render), len(items))
    return pack_batch(items, dumps)


def pack_return(value: Any, render: Any, dumps: Callable[[Any], bytes]) -> bytes:
    """RETURN's payload: the value as a batch of one (rendered: none for None, which the CLI does not print)."""
    if render is not None and value is None:
        return pack_rendered(b"", 0)
    return pack_values([value], render, dumps)


def pickled_error(exc: BaseException | None, render: Any, dumps: Callable[[Any], bytes]) -> bytes:
    """A failure's exception pickled for the API's client (RAISE's second part); nothing for the
    CLI (it prints the formatted failure) or when it does not pickle."""
    if exc is None or render is not None:
        return b""
    try:
        return dumps(exc)
    except BaseException:
        return b""


def unsendable_note(render: Any) -> str:
    """What a value that could not be sent back is told (the RAISE that ends its call)."""
    return "skyctl: a value the function yielded could not be " + ("sent back" if render else "pickled to send it back")


def batch_size(payload: bytes) -> int:
    """How many items an ITEMS payload holds, read without decoding it."""
    tag = payload[:1]
    if tag == LINES:
        return payload.count(b"\n", 1) + 1
    if tag in (PICKLED, RENDERED) and len(payload) >= 1 + COUNT.size:
        return COUNT.unpack_from(payload, 1)[0]
    raise ValueError(f"unknown batch encoding {tag!r}")


def unpack_batch(payload: bytes, loads: Callable[[bytes], Any]) -> list[Any]:
    """The list of items ``pack_batch`` made."""
    tag = payload[:1]
    if tag == LINES:
        return _split_lines(memoryview(payload)[1:])
    if tag == PICKLED:
        items = loads(memoryview(payload)[1 + COUNT.size:])
        if not isinstance(items, list) or len(items) != COUNT.unpack_from(payload, 1)[0]:
            raise ValueError("a pickled batch that is not the list of as many items as its count says")
        return items
    raise ValueError(f"unknown batch encoding {tag!r}")


class Rendered:
    """Items the worker already rendered as text (a RENDERED payload): written as they are."""

    __slots__ = ("text", "_count")

    def __init__(self, text: bytes, count: int) -> None:
        self.text = text
        self._count = count

    def __len__(self) -> int:
        return self._count

    @classmethod
    def from_payload(cls, payload: bytes) -> Rendered:
        return cls(bytes(memoryview(payload)[1 + COUNT.size:]), COUNT.unpack_from(payload, 1)[0])


class LineBatch:
    """A batch of one-line strs as it arrived: ``text``, UTF-8, the items joined by "\\n"."""

    __slots__ = ("text", "_count")

    def __init__(self, text: bytes) -> None:
        self.text = text
        self._count = text.count(b"\n") + 1

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[str]:
        return iter(self.items())

    def items(self) -> list[str]:
        return _split_lines(self.text)


def with_note(exc: BaseException, note: str) -> BaseException:
    """``exc`` with ``note`` added where the Python has notes (3.11+)."""
    add_note = getattr(exc, "add_note", None)
    if add_note is not None:
        add_note(note)
    return exc


def _is_line_batch(entry: object) -> bool:
    return type(entry) is LineBatch


def _split_lines(text: bytes | memoryview) -> list[str]:
    """The items of a LINES batch."""
    return str(text, "utf-8").split("\n")


class Inbox:
    """Batches received for one stream, handed out one item at a time.

    Args:
        grant: tells the sender it may send this many more items and bytes.
        loads: unpickles one pickled batch (see ``unpack_batch``).
        grant_every: credit is returned once this many items or bytes are owed
            (at most the window the sender started with, or the stream stalls).
        window: the credit the sender started with; given, every batch that
            arrives is checked against the credit granted so far (``push``
            raises ``CreditOverrun``): a peer that is not trusted cannot make
            this side hold more than it asked for.
    """

    def __init__(self, grant: Callable[[int, int], None], loads: Callable[[bytes], list[Any]],
                 grant_every: tuple[int, int] = GRANT_EVERY, window: tuple[int, int] | None = None) -> None:
        self._grant = grant
        self._checked = window is not None
        #: items and bytes the sender may have sent so far (``window`` plus every grant), and has
        self._allowed_items, self._allowed_bytes = window or (0, 0)
        self._received_items = self._received_bytes = 0
        self._grant_items, self._grant_bytes = grant_every
        self._loads = loads
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.taken = 0
        #: taken since credit was last returned
        self._owed_items = self._owed_bytes = 0
        #: what ended the stream (set by ``end``), read once ``items()`` stops
        self.ending: Any = None
        #: the consumer waits for a batch and none is queued (the worker tells its
        #: client so in its heartbeat: see ``session.CallStream.starved``)
        self.waiting = False

    def push(self, payload: bytes) -> None:
        """A batch arrived (reader thread)."""
        if self._checked:
            self._check_credit(payload)
        self._queue.put(payload)

    @property
    def received(self) -> int:
        """Items that arrived so far (counted when the inbox checks credit: ``window`` given)."""
        return self._received_items

    def _check_credit(self, payload: bytes) -> None:
        """Items exactly; bytes with the slack an honest sender can overshoot by
        (what it had queued when the byte credit ran out, and one frame)."""
        self._received_items += batch_size(payload)
        if self._received_items > self._allowed_items:
            raise CreditOverrun(f"{self._received_items:,} items sent against a credit of {self._allowed_items:,}")
        if self._received_bytes > self._allowed_bytes + OVERRUN_BYTES:
            raise CreditOverrun(f"{self._received_bytes:,} bytes sent against a credit of {self._allowed_bytes:,}")
        self._received_bytes += len(payload)

    def end(self, ending: Any) -> None:
        """No more batches; ``ending`` says why (reader thread). Only the first counts."""
        self._queue.put(_Ending(ending))

    def batches(self, keep_lines: bool = False) -> Iterator[list[Any] | LineBatch]:
        """Every batch, in order; credit for a batch is owed once the next is
        asked for, and goes back in lumps of ``grant_every``.

        With ``keep_lines``, a batch of one-line strs comes as a ``LineBatch``
        (still UTF-8 text), for a writer that prints it as it is.
        Returns when an ending arrives (see ``ending``).
        """
        get = self._queue.get
        while True:
            self.waiting = True
            entry = get()
            self.waiting = False
            if type(entry) is _Ending:
                self.ending = entry.value
                return
            nbytes = len(entry)
            batch: list[Any] | LineBatch | Rendered
            tag = entry[:1]
            if tag == RENDERED:
                batch = Rendered.from_payload(entry)
            elif keep_lines and tag == LINES:
                batch = LineBatch(entry[1:])
            else:
                batch = unpack_batch(entry, self._loads)
            del entry  # decoded: the payload can go now
            count = len(batch)
            yield batch
            # Drop the consumed batch before waiting for (and decoding) the next,
            # so at most one decoded batch is alive at a time.
            del batch
            self.taken += count
            self._owed_items += count
            self._owed_bytes += nbytes
            if self._owed_items >= self._grant_items or self._owed_bytes >= self._grant_bytes:
                self._allowed_items += self._owed_items
                self._allowed_bytes += self._owed_bytes
                self._grant(self._owed_items, self._owed_bytes)
                self._owed_items = self._owed_bytes = 0

    def items(self) -> Iterator[Any]:
        """Every item, in order (see ``batches``)."""
        for batch in self.batches():
            yield from batch
            del batch  # not kept while the next batch is decoded

    def wait_for_end(self, timeout: float) -> bool:
        """Discard batches until an ending arrives and keep it in ``ending``;
        False if none came within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                entry = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if type(entry) is _Ending:
                self.ending = entry.value
                return True


class _Ending:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class ChunkMismatch(Exception):
    """A re-run call (``skip``) yielded fewer values than its first run had delivered: not deterministic."""


def skip_written(values: Iterator[Any], skip: int) -> None:
    """Drop the first ``skip`` values (a re-run chunk: the client already wrote them);
    ``ChunkMismatch`` if there are fewer."""
    if skip:
        skipped = sum(1 for _ in islice(values, skip))
        if skipped < skip:
            raise ChunkMismatch(f"this re-run yielded {skipped} values, fewer than the {skip} its first run "
                                "already wrote; skyctl re-runs a chunk assuming it yields the same values")
