"""The stdin cutter: chunks of ``--chunk N`` stdin lines (or, for the API, N items), hashed as read.

Why apart: chunk boundaries must be a pure function of the input and the
recorded settings, so a resume cuts the same chunks; this module decides
them and checks a resumed input against the log, and knows nothing of
hosts, files or values.

- ``CutStream`` wraps stdin's bytes; the record reader reads through it, so
  each batch of records is known to come from one chunk.
- ``chunked_source`` turns the reader's batches into the Distributor's
  source: a ``Cut`` before each chunk's records, the records of chunks
  already done (by the resume plan) checked and dropped; ``chunked_items``
  does the same for ``pool.map``'s items.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from ..errors import BadRecord
from .log import JobLogError


@dataclass
class ChunkInput:
    """One chunk's share of stdin: 0-based ``number``, its 1-based stdin lines, the sha256 of their bytes."""

    number: int
    first_line: int
    last_line: int = 0
    nbytes: int = 0
    sha256: str = ""
    records: int = 0
    #: the resume plan says it is done: its records are checked, not run
    skip: bool = False
    _hash: Any = field(default=None, repr=False)

    def entry(self) -> dict[str, Any]:
        return {"chunk": self.number + 1, "first_line": self.first_line, "last_line": self.last_line,
                "records": self.records, "sha256": self.sha256}


class CutStream:
    """stdin's bytes as the record reader reads them (``read1``/``readline``),
    never handing out bytes of two chunks in one read: a chunk is ``lines``
    physical lines, so chunk boundaries are a pure function of the input.

    ``last`` is the chunk the last read came from (so every batch of records
    the reader makes belongs to ``last`` when it is handed on); ``finished``
    holds the chunks whose input is complete, until ``pop_done``.
    """

    def __init__(self, raw: BinaryIO, lines: int) -> None:
        self._raw = raw
        self._lines = max(1, lines)
        self._buf = b""
        self._eof = False
        self._in_chunk = 0  # lines of the current chunk read so far
        self._partial = False  # the last read ended inside a line
        self._line = 0  # physical lines read (ended by a newline) so far
        self._begun = 0
        self.current: ChunkInput | None = None
        self.last: ChunkInput | None = None
        self.finished: list[ChunkInput] = []

    # the reader's side
    def read1(self, size: int = -1) -> bytes:
        if not self._buf and not self._eof:
            self._buf = self._raw.read1(size if size and size > 0 else 1 << 16)  # type: ignore[attr-defined]
            self._eof = not self._buf
        if not self._buf:
            return b""
        data = self._buf
        room = self._lines if self.at_boundary() or self.current is None else self._lines - self._in_chunk
        count = data.count(b"\n")
        if count >= room:
            data = data[:_nth_newline(data, room, count) + 1]
        self._buf = self._buf[len(data):]
        self._take(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        if self._buf:
            end = self._buf.find(b"\n")
            line = self._buf[:end + 1] if end >= 0 else self._buf
            self._buf = self._buf[len(line):]
            if end < 0 and not self._eof:
                line += self._raw.readline()
        elif self._eof:
            line = b""
        else:
            line = self._raw.readline()
            self._eof = not line
        if not line:
            return b""
        self._take(line)
        return line

    def _take(self, data: bytes) -> None:
        chunk = self.current
        if chunk is None or self.at_boundary():
            if chunk is not None:
                self._finish(chunk)
            chunk = self.current = self.last = ChunkInput(self._begun, self._line + 1, _hash=hashlib.sha256())
            self._begun += 1
            self._in_chunk = 0
        chunk._hash.update(data)
        chunk.nbytes += len(data)
        newlines = data.count(b"\n")
        self._line += newlines
        self._in_chunk += newlines
        self._partial = not data.endswith(b"\n")

    def _finish(self, chunk: ChunkInput) -> None:
        chunk.last_line = self._line + (1 if self._partial else 0)
        chunk.sha256 = chunk._hash.hexdigest()
        chunk._hash = None
        self.finished.append(chunk)
        self.current = None

    def at_boundary(self) -> bool:
        """The last read ended exactly at the end of a chunk (the next byte starts another)."""
        return self.current is not None and self._in_chunk >= self._lines and not self._partial

    def close_current(self) -> None:
        """The current chunk's input is complete (at a boundary, or at the end of the input)."""
        if self.current is not None:
            self._finish(self.current)

    def pop_done(self) -> list[ChunkInput]:
        done, self.finished = self.finished, []
        return done


def _nth_newline(data: bytes, n: int, count: int) -> int:
    """Where the ``n``-th of the ``count`` newlines of ``data`` is (1 <= n <= count): a guess from the
    average line length, corrected by counting, then a few ``find``s (not one per line)."""
    at = min(len(data) - 1, len(data) * n // count)
    before = data.count(b"\n", 0, at)  # newlines before ``at``
    if before < n:
        at -= 1
        for _ in range(n - before):
            at = data.index(b"\n", at + 1)
        return at
    at = data.rfind(b"\n", 0, at)
    for _ in range(before - n):
        at = data.rfind(b"\n", 0, at)
    return at


def chunked_source(batches: Iterable[Any], cut: CutStream, *, done: dict[int, dict[str, Any]],
                   on_chunk: Callable[[ChunkInput], None], cut_mark: Callable[[ChunkInput | None], Any],
                   on_bad: Callable[[ChunkInput, BaseException], None] = lambda chunk, exc: None,
                   failing: Callable[[], bool] = lambda: False) -> Iterator[Any]:
    """The Distributor's source for a run with a job log: ``cut_mark(chunk)``
    before each chunk's records and ``cut_mark(None)`` as soon as its input is
    complete; a chunk in ``done`` (chunk number → its logged entry) is checked
    against its entry and its records dropped.

    ``on_chunk(chunk)`` once each chunk's input is complete (its sha256
    known): the caller logs a chunk without records at once, and learns
    when every logged chunk has been checked. A chunk whose input differs
    from the log raises ``JobLogError``. ``on_bad(chunk, error)`` when a bad
    record ends the input in a chunk none of whose records were handed on
    (no call will report it). ``failing()``: the reader's next batch is a
    bad record, so a chunk that just ended its input is not complete yet.
    """
    active: ChunkInput | None = None

    def settle() -> Iterator[Any]:
        for chunk in cut.pop_done():
            chunk.skip = chunk.number in done
            if chunk.skip:
                check_against_log(chunk, done[chunk.number])
            if chunk is active and not chunk.skip:
                yield cut_mark(None)
            on_chunk(chunk)

    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            break
        except BadRecord as exc:
            owner = cut.last
            if owner is not None and owner is not active and owner.number not in done:
                on_bad(owner, exc)
            elif active is not None and not active.skip and not active.records:
                on_bad(active, exc)
            raise
        owner = cut.last
        yield from settle()
        if owner is not active and owner is not None:
            active = owner
            owner.skip = owner.number in done
            if not owner.skip:
                yield cut_mark(owner)
        if active is not None and not active.skip:
            active.records += len(batch)
            yield batch
        if cut.at_boundary() and not failing():
            cut.close_current()
            yield from settle()
    cut.close_current()
    yield from settle()
    if done:
        last = max(done)
        seen = cut.last
        if seen is None or seen.number < last:
            ended = seen.last_line if seen is not None else 0
            raise JobLogError(f"the input differs from the logged run at line {ended + 1}: it ends at line {ended}, the "
                              f"logged run went on to line {done[last].get('last_line')}",
                              hint="resume with the same input, or start over without --resume (nothing was written)")


def chunked_items(items: Iterable[Any], size: int, *, done: dict[int, dict[str, Any]],
                  on_chunk: Callable[[ChunkInput], None], cut_mark: Callable[[ChunkInput | None], Any]) -> Iterator[Any]:
    """``chunked_source`` for the API's ``pool.map``: chunks of ``size`` items; an item's "line" is its
    1-based position, and the chunk's sha256 is of its items' pickles (protocol 4)."""
    import pickle
    from itertools import islice

    iterator = iter(items)
    number, line = 0, 0
    last: ChunkInput | None = None
    while True:
        batch = list(islice(iterator, size))
        if not batch:
            break
        chunk = last = ChunkInput(number, line + 1, records=len(batch), _hash=hashlib.sha256())
        for item in batch:
            chunk._hash.update(pickle.dumps(item, protocol=4))
        line += len(batch)
        number += 1
        chunk.last_line, chunk.nbytes, chunk.sha256, chunk._hash = line, len(batch), chunk._hash.hexdigest(), None
        chunk.skip = chunk.number in done
        if chunk.skip:
            check_against_log(chunk, done[chunk.number])
        else:
            yield cut_mark(chunk)
            yield batch
            yield cut_mark(None)
        on_chunk(chunk)
    if done and (last is None or last.number < max(done)):
        ended = last.last_line if last is not None else 0
        raise JobLogError(f"the items differ from the logged run at item {ended + 1}: they end at item {ended}",
                          hint="resume with the same items, or start over without resume")


def check_against_log(chunk: ChunkInput, entry: dict[str, Any]) -> None:
    """A chunk the log has as done must have the same lines and bytes now."""
    if chunk.sha256 == entry.get("sha256") and chunk.first_line == entry.get("first_line") \
            and chunk.last_line == entry.get("last_line"):
        return
    raise JobLogError(f"the input differs from the logged run at line {chunk.first_line} "
                      f"(chunk {chunk.number + 1}, lines {chunk.first_line}-{chunk.last_line}: its sha256 is not the logged one)",
                      hint="resume with the same input, or start over without --resume (nothing was written)")
