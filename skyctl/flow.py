"""Credit-based flow control for one stream of items, used the same way on both sides.

Shipped to the remote beside ``worker.py``: stdlib only, no skyctl imports.

- ``Outbox``: the sending side. A producer ``put()``s items; a sender thread
  batches whatever is waiting into one frame (dense streams make big batches,
  a sparse stream sends each item at once) and writes it. ``put()`` blocks
  while the receiver has granted no more credit, in items or in bytes, so a
  slow receiver pauses the producer.
- ``Inbox``: the receiving side. Batches are queued as they arrive (never more
  than the credit granted); ``items()`` hands them out one at a time and grants
  the credit back only when the consumer has taken a whole batch.

The client feeds stdin records through an Outbox into the worker's Inbox; the
worker feeds the user's yields through an Outbox into the client's Inbox.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from itertools import chain, islice, repeat, starmap
from typing import Any, Callable, Iterator

#: default credit a receiver grants: items and pickled bytes in flight
WINDOW_ITEMS = 1 << 18
WINDOW_BYTES = 4 << 20

#: the most items the sender packs into one frame
BATCH_ITEMS = 8192
#: about the most pickled bytes waiting for the sender: ``put()`` also blocks
#: while this much (estimated from the last batch's size per item) is queued,
#: so a slow link cannot pile items up behind the credit (which counts only
#: bytes already sent)
QUEUED_BYTES = 1 << 20

#: the most items ``put()`` queues between two credit checks
RUN_ITEMS = 1024

_END = object()


class Cancelled(Exception):
    """The stream was cancelled (the peer went away or asked to stop)."""


class Outbox:
    """Items waiting to be framed, sent only as the receiver's credit allows.

    Items wait in a ``SimpleQueue``: its ``put`` is C and wakes the sender
    thread only when it was idle, so ``put_run`` can drive a generator a run at
    a time without a Python call per item, and the sender drains whatever is
    waiting in one C-level sweep.

    Args:
        send: writes one frame of ``kind`` (thread-safe; called from the sender thread).
        kind: the frame kind that carries a batch.
        dumps: pickles a list of items (see ``pack_batch``).
        lists: the producer queues whole lists (``put_many``: chunks of stdin),
            which then travel without a step per item.
    """

    def __init__(self, send: Callable[[int, bytes], None], kind: int, dumps: Callable[[Any], bytes],
                 lists: bool = False) -> None:
        self._send = send
        self._kind = kind
        self._dumps = dumps
        self._lists = lists
        #: single items, or with ``lists`` lists of items, then ``_END``
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        #: items the sender has taken off the queue
        self._taken = 0
        self._credit = threading.Condition()
        self._granted_items = 0
        self._granted_bytes = 0
        self._sent_bytes = 0
        self._terminal: list[tuple[int, bytes]] = []
        self._finishing = False
        self._cancelled = False
        #: items ``put()`` may still queue before it checks credit again (0: check now)
        self._room = 0
        #: items ``put()`` may queue ahead of the sender: QUEUED_BYTES over the last
        #: batch's bytes per item (1 until a first batch has been sized)
        self._max_queued = 1
        self.produced = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"outbox-{kind}", daemon=True)
        self._thread.start()

    # -- producer side -------------------------------------------------
    def put(self, item: Any) -> None:
        """Queue one item; blocks while out of credit; raises ``Cancelled``."""
        if self._room <= 0:
            self._make_room()
        self._room -= 1
        self.produced += 1
        self._queue.put([item] if self._lists else item)

    def put_many(self, items: list[Any]) -> None:
        """Queue a list of items at once (a chunk of stdin); may overshoot the
        credit by that one list, then waits as ``put`` does."""
        if self._room <= 0:
            self._make_room()
        self._room -= len(items)
        self.produced += len(items)
        if self._lists:
            self._queue.put(items)
        else:
            deque(map(self._queue.put, items), 0)

    def wait_for_room(self) -> None:
        """Block until ``put_run`` may queue at least one item; raises ``Cancelled``."""
        if self._room <= 0:
            self._make_room()

    def put_run(self, items: Iterator[Any]) -> bool:
        """Queue items from ``items`` for as long as the credit allows without a
        new check (at most ``RUN_ITEMS``), the loop running in C; blocks first
        while out of credit. False once ``items`` is exhausted.

        Each item is visible to the sender the moment it is queued, so a slow
        generator's values still go one at a time, at once.
        """
        assert not self._lists, "put_run queues single items"
        if self._room <= 0:
            self._make_room()
        room = self._room
        taken = len(list(map(self._queue.put, islice(items, room))))
        self._room -= taken
        self.produced += taken
        return taken == room

    def _make_room(self) -> None:
        """The slow path of ``put``: wait for credit and for the sender, then
        allow a few more items without checking (a hot loop checks once per run).

        The run is capped by the items and bytes still granted and, through
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
            first = get()  # sleeps until the producer queues something
            waiting = [first]
            waiting.extend(starmap(get, repeat((), min(qsize(), BATCH_ITEMS * 16))))
            last = False
            if self._finishing:  # _END may be in there, with items of a cancelled producer after it
                for i, entry in enumerate(waiting):
                    if entry is _END:
                        del waiting[i:]
                        last = True
                        break
            if self._lists:
                waiting = list(chain.from_iterable(waiting))
            self._taken += len(waiting)
            with self._credit:  # room in the queue: wake a producer waiting for the sender
                self._credit.notify_all()
            for start in range(0, len(waiting), BATCH_ITEMS):
                batch = waiting[start : start + BATCH_ITEMS] if len(waiting) > BATCH_ITEMS else waiting
                if not batch or self._cancelled or self.error is not None:
                    break
                try:
                    payload = pack_batch(batch, self._dumps)
                    self._max_queued = max(1, QUEUED_BYTES * len(batch) // len(payload))
                    self._send(self._kind, payload)
                except BaseException as exc:  # the peer is gone, or an item does not pickle
                    self.error = exc
                    self.cancel()
                else:
                    self._sent_bytes += len(payload)
            if last:
                for kind, payload in self._terminal:
                    try:
                        self._send(kind, payload)
                    except BaseException as exc:
                        self.error = self.error or exc
                        break
                return


#: the first byte of an ITEMS payload says how the rest holds the batch
LINES = b"L"  # UTF-8 text, the items joined by "\n": every item a str without "\n" (the common case, fast both ways)
PICKLED = b"P"  # a pickled list


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
    return PICKLED + dumps(items)


def unpack_batch(payload: bytes, loads: Callable[[bytes], Any]) -> list[Any]:
    """The list of items ``pack_batch`` made."""
    tag = payload[:1]
    if tag == LINES:
        return _split_lines(memoryview(payload)[1:])
    if tag == PICKLED:
        return loads(memoryview(payload)[1:])
    raise ValueError(f"unknown batch encoding {tag!r}")


class LineBatch:
    """A batch of one-line strs as it arrived: ``text``, UTF-8, the items joined by "\\n"."""

    __slots__ = ("text", "_count")

    def __init__(self, text: bytes) -> None:
        self.text = text
        self._count = text.count(b"\n") + 1

    def __len__(self) -> int:
        return self._count

    def items(self) -> list[str]:
        return _split_lines(self.text)


def _split_lines(text: bytes | memoryview) -> list[str]:
    """The items of a LINES batch."""
    return str(text, "utf-8").split("\n")


class Inbox:
    """Batches received for one stream, handed out one item at a time.

    Args:
        grant: tells the sender it may send this many more items and bytes.
        loads: unpickles one pickled batch (see ``unpack_batch``).
    """

    def __init__(self, grant: Callable[[int, int], None], loads: Callable[[bytes], list[Any]]) -> None:
        self._grant = grant
        self._loads = loads
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.taken = 0
        #: what ended the stream (set by ``end``), read once ``items()`` stops
        self.ending: Any = None

    def push(self, payload: bytes) -> None:
        """A batch arrived (reader thread)."""
        self._queue.put(payload)

    def end(self, ending: Any) -> None:
        """No more batches; ``ending`` says why (reader thread). Only the first counts."""
        self._queue.put(_Ending(ending))

    def batches(self, keep_lines: bool = False) -> Iterator[list[Any] | LineBatch]:
        """Every batch, in order; credit for a batch goes back when the next is asked for.

        With ``keep_lines``, a batch of one-line strs comes as a ``LineBatch``
        (still UTF-8 text), for a writer that prints it as it is.
        Returns when an ending arrives (see ``ending``).
        """
        get = self._queue.get
        while True:
            entry = get()
            if type(entry) is _Ending:
                self.ending = entry.value
                return
            nbytes = len(entry)
            batch: list[Any] | LineBatch
            if keep_lines and entry[:1] == LINES:
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
            self._grant(count, nbytes)

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
