"""The Distributor's reader: records read from the source, kept pending, and cut into
chunks sized for the host whose worker takes them (``skyctl-chunk-reader``)."""

from __future__ import annotations

import sys
import threading
from collections import deque
from typing import Any, Callable, Iterable

from ..chunking import ChunkSizer
from ..errors import BadRecord
from ..remote.flow import LineBatch
from .chunks import Chunk, Cut, Slot
from .stats import HostStats


class _Pending:
    """A batch read from the source and not yet all cut into chunks."""

    __slots__ = ("batch", "span", "count", "at", "pos")

    def __init__(self, batch: Any, span: tuple[int, int] | None) -> None:
        self.batch = batch
        self.span = span
        self.count = len(batch)
        #: records already taken, and (a ``LineBatch``) the byte where the next one starts
        self.at = 0
        self.pos = 0

    @property
    def left(self) -> int:
        return self.count - self.at

    def take(self, chunk: Chunk, n: int) -> int:
        """Move up to ``n`` records into ``chunk`` (``chunk.cond`` held); how many moved."""
        n = min(n, self.left)
        batch = self.batch
        if self.at == 0 and n == self.count:
            part = batch
        elif type(batch) is LineBatch:
            text = batch.text
            if self.at + n == self.count:
                part = LineBatch(text[self.pos:])
            else:
                end = self.pos - 1
                for _ in range(n):
                    end = text.index(b"\n", end + 1)
                part = LineBatch(text[self.pos:end])
                self.pos = end + 1
        else:
            part = batch[self.at:self.at + n]
        if self.span is not None:
            _note_lines(chunk, self.span, self.count, self.at, n)
        self.at += n
        chunk.add(part, n)
        return n


class ChunkReading:
    """``Distributor``'s reading half: ``_read`` (the reader thread) and ``_cut`` (a worker's next chunk)."""

    #: the Distributor's own state, which the reading half uses
    slots: list[Slot]
    stats: dict[str, HostStats]
    sizer: ChunkSizer
    stop: threading.Event
    failed_chunk: Chunk | None
    records_read: int
    bad_record: BaseException | None
    _cond: threading.Condition
    _in_flight: int
    _workers: int
    abort: Callable[[BaseException], None]

    def _start_reading(self, source: Iterable[Any], lines: Callable[[], tuple[int, int] | None] | None) -> None:
        """The reader's state, before the run starts."""
        self._source = source
        self._lines = lines
        #: batches read and not yet cut into chunks (and the source's ``Cut`` marks between them, never two
        #: in a row), their records, and the marks
        self._pending: deque[_Pending | Cut] = deque()
        self._pending_records = 0
        self._pending_cuts = 0
        #: the ``about`` of the last ``Cut`` a chunk was cut after (the next chunks' ``Chunk.about``)
        self._about: Any = None
        #: what the records read so far take in memory, estimated (the sizer's memory cap)
        self._input_bytes = 0.0
        self._input_records = 0
        #: the size each host's last chunk was cut to (how far the reader reads ahead)
        self._last_size: dict[str, int] = {}
        #: a bad record after the pending batches: the chunk that takes the last of them ends with it
        self._input_failure: BaseException | None = None
        self._reading_done = False
        #: the chunk being filled as records are read, and how many chunks have been cut
        self._current: Chunk | None = None
        self._chunks = 0

    def _read(self) -> None:
        """Reader thread: records go into the chunk being filled (its call started with its first
        record), else wait, read ahead, until a worker takes them (``_cut``). A ``Cut`` ends the
        chunk being filled, or waits among the pending records as a boundary ``_cut`` stops at."""
        try:
            for batch in self._source:
                if type(batch) is Cut:
                    self._add_cut(batch)
                    continue
                span = self._lines() if self._lines is not None else None
                self._input_bytes += _held_bytes(batch)
                self._input_records += len(batch)
                entry = _Pending(batch, span)
                with self._cond:
                    while entry.left:
                        chunk = self._current
                        if chunk is not None:
                            with chunk.cond:
                                self.records_read += entry.take(chunk, chunk.limit - chunk.size)
                                if chunk.closed:
                                    self._current = None
                                    self._cond.notify_all()  # a lane waiting for it to close may cut the next
                            continue
                        while (not self._stopping() and self._current is None
                               and (self._pending_records >= self._read_ahead()
                                    or self._pending_cuts > max(1, self._workers))):
                            self._cond.wait()
                        if self._stopping():
                            return
                        if self._current is None:
                            self._pending.append(entry)
                            self._pending_records += entry.left
                            self._cond.notify_all()
                            break
        except BadRecord as exc:
            self.bad_record = exc
            with self._cond:
                if self._current is not None:
                    self._current.close(exc)
                elif self._pending and type(self._pending[-1]) is not Cut:  # after a cut: no chunk's records
                    self._input_failure = exc
        except BaseException as exc:  # noqa: BLE001 - stdin failed
            self.abort(exc)
        finally:
            with self._cond:
                if self._current is not None:  # the input ended (or a failure): its call must not wait for more
                    self._current.close(self._input_failure)  # a bad record after the records it took
                    self._input_failure = None
                self._current = None
                self._reading_done = True
                self._cond.notify_all()

    def _add_cut(self, cut: Cut) -> None:
        """The source's ``Cut``: the chunk being filled ends; else a boundary after the pending records
        (one that follows another with no records between them replaces it: no chunk is empty)."""
        with self._cond:
            if self._current is not None:
                self._current.close()
                self._current = None
            if self._pending and type(self._pending[-1]) is Cut:
                self._pending[-1] = cut
            else:
                self._pending.append(cut)
                self._pending_cuts += 1
            self._cond.notify_all()

    def _read_ahead(self) -> int:
        """Records the reader may hold that no worker has taken yet (``_cond`` held): about one
        chunk per live worker, at the size its host's chunks have now."""
        total = 0
        for slot in self.slots:
            if not self.stats[slot.name].dead and slot.lane == 0:
                size = self._last_size.get(slot.name)
                total += size if size is not None else self.sizer.size(slot.name, self._chunks, live=self._workers)
        return max(1, total)

    def _cut(self, slot: Slot) -> Chunk:
        """A new chunk for ``slot`` (``_cond`` held, records pending), sized for its host: it takes
        the pending records up to its size or the next ``Cut``, then (if it is neither full nor cut)
        is filled as they are read."""
        while type(self._pending[0]) is Cut:  # a boundary before its records: what it says is this chunk's
            self._about = self._pending.popleft().about
            self._pending_cuts -= 1
        record_bytes = self._input_bytes / self._input_records if self._input_records else None
        remaining = self._pending_records if self._reading_done else None
        size = self.sizer.size(slot.name, self._chunks, live=max(1, self._workers), remaining=remaining,
                               record_bytes=record_bytes)
        if remaining is None:
            self._last_size[slot.name] = size
        chunk = Chunk(self._chunks, size, self._about)
        self._chunks += 1
        self._in_flight += 1
        with chunk.cond:
            while self._pending and chunk.size < size:
                entry = self._pending[0]
                if type(entry) is Cut:  # the source's boundary: the chunk ends here, below its size
                    chunk.closed = True
                    break
                taken = entry.take(chunk, size - chunk.size)
                self._pending_records -= taken
                self.records_read += taken
                if not entry.left:
                    self._pending.popleft()
            if not chunk.closed:
                if self._reading_done:
                    chunk.closed = True
                else:
                    self._current = chunk
            if not self._pending and self._reading_done and self._input_failure is not None:
                chunk.failure, self._input_failure = self._input_failure, None
        self._cond.notify_all()
        return chunk

    def _stopping(self) -> bool:
        return self.stop.is_set() or self.failed_chunk is not None


def _held_bytes(batch: Any) -> float:
    """About the memory ``batch``'s records take while a chunk holds them: a ``LineBatch`` its text;
    a list, its pointers plus a few records' own sizes (one level deep: a dict's keys and values)
    times its length."""
    if type(batch) is LineBatch:
        return float(len(batch.text) + 1)
    count = len(batch)
    if not count:
        return 0.0
    sample = [batch[i] for i in range(0, count, max(1, count // 4))][:4]
    each = sum(map(_record_size, sample)) / len(sample)
    return count * (each + 8.0)


def _record_size(record: Any) -> int:
    size = sys.getsizeof(record, 64)
    if type(record) is dict:
        size += sum(sys.getsizeof(k, 64) + sys.getsizeof(v, 64) for k, v in record.items())
    elif type(record) in (list, tuple):
        size += sum(sys.getsizeof(v, 64) for v in record)
    return size


def _note_lines(chunk: Chunk, span: tuple[int, int], count: int, at: int, taken: int) -> None:
    """Widen ``chunk``'s stdin line range by records ``at``..``at + taken`` of a batch of ``count``
    records read from lines ``span``: exact when each line of the batch is one record, else the
    batch's own lines bound them."""
    first, last = span
    if last - first + 1 == count:
        low, high = first + at, first + at + taken - 1
    else:
        low, high = first, last
    if chunk.first_line is None:
        chunk.first_line = low
    chunk.last_line = high
