"""Long jobs: the job log (``--joblog``), the resume plan (``--resume``), the
results file (``--results``) and the stdin cutter that makes chunks a pure
function of the input.

Why a module of its own: the distributed pipe (``pool.Distributor``) only
calls an observer at each chunk attempt's start and end and follows the
``pool.Cut`` marks of its source; everything that makes a run accountable
and resumable lives here.

- ``CutStream`` wraps stdin's bytes: a chunk is ``--chunk N`` stdin lines,
  hashed (sha256) as they are read. The record reader reads through it, so
  each batch of records is known to come from one chunk.
- ``chunked_source`` turns the reader's batches into the Distributor's
  source: a ``Cut`` before each chunk's records, the records of chunks
  already done (by the resume plan) checked and dropped.
- ``JobLog``: JSON Lines, locked for the run, each line fsync'd.
- ``Blocks``: a chunk's values are spooled (memory, then a temp file beside
  the results file) until the chunk ends ``ok``; then appended as one block
  (in input order with ``--keep-order``), flushed and fsync'd, and only then
  logged with the block's offset and length.
- ``plan_resume``: what a job log says is done, and where FILE is cut.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from .errors import BadRecord, ExitStatus, SkyctlError, UsageError

#: the job log's format version (its header's ``"joblog"`` field)
VERSION = 1
#: chunk statuses; ``DONE_STATUSES`` are final (``--resume`` skips them), ``--resume-failed`` re-runs ``FAILED_STATUSES``
STATUSES = ("ok", "failed", "lost", "timeout", "interrupted")
FAILED_STATUSES = ("failed", "timeout")
#: a chunk's values are held in memory up to this many bytes, then in a temp file
SPOOL_MEMORY = 1 << 20
#: seconds between group commits at most: each costs two fsyncs, and on a VM an fsync can stall more than
#: its own thread (a distributed pipe of 1 M short lines ran ~20% slower with one group per chunk end)
COMMIT_INTERVAL = 0.1
#: test-only, ``POINT:N:PATH``: at POINT of the Nth block committed by this run (``after-block``: its bytes
#: fsync'd, its log line not written; ``mid-block``: half of its bytes written; ``at-end``: after the last
#: chunk, N unused) write ``PATH.at`` and wait until PATH exists, so a test can kill the client right there
PAUSE_ENV = "SKYCTL_TEST_PAUSE"


class JobLogError(UsageError):
    """A job log (or its results file) that cannot be used as asked: exit 2."""


# -- the input: chunks of N stdin lines, hashed as read --------------------------------


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


# -- the job log ---------------------------------------------------------------------


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"


class JobLog:
    """The job log file, locked (``flock``) for the whole run; one JSON line per entry, each fsync'd."""

    def __init__(self, path: Path, *, resume: bool) -> None:
        import fcntl

        self.path = path
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise JobLogError(f"cannot open the job log {path}: {exc.strerror}", hint="check the path") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise JobLogError(f"the job log {path} is in use by another skyctl run",
                              hint="wait for it to end, or use another --joblog FILE") from None
        self._lock = threading.Lock()
        self.torn = False
        self.entries: list[dict[str, Any]] = []
        if resume:
            self.entries = self._read()
        else:
            os.ftruncate(self._fd, 0)

    def _read(self) -> list[dict[str, Any]]:
        """The entries so far; a torn last line (a crash mid-write) is cut off the file."""
        with open(self._fd, "rb", closefd=False) as f:
            f.seek(0)
            data = f.read()
        entries: list[dict[str, Any]] = []
        at = 0
        number = 0
        while at < len(data):
            end = data.find(b"\n", at)
            line = data[at:] if end < 0 else data[at:end]
            number += 1
            try:
                entry = json.loads(line) if end >= 0 else None
            except ValueError:
                entry = None
            if not isinstance(entry, dict):
                if data.find(b"\n", end + 1) >= 0 and end >= 0:
                    raise JobLogError(f"the job log {self.path} is damaged at line {number}",
                                      hint="start over without --resume, or restore the file")
                os.ftruncate(self._fd, at)  # torn: the last line, half written
                self.torn = True
                break
            entries.append(entry)
            at = end + 1
        return entries

    def write(self, entry: dict[str, Any], sync: bool = True) -> None:
        self.write_many([entry], sync)

    def write_many(self, entries: list[dict[str, Any]], sync: bool = True) -> None:
        """Entries as lines, one write and (``sync``) one fsync; a run's first and last lines need none:
        a resume depends only on the chunk lines, and each of those is fsync'd."""
        data = b"".join((json.dumps(entry, separators=(", ", ": ")) + "\n").encode() for entry in entries)
        with self._lock:
            while data:
                data = data[os.write(self._fd, data):]
            if sync:
                os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)  # releases the lock
                self._fd = -1


@dataclass
class ResumePlan:
    """What a job log says: chunks done (number → entry), where the results file ends, the first run's header."""

    header: dict[str, Any] | None
    done: dict[int, dict[str, Any]]
    results_end: int


def plan_resume(entries: list[dict[str, Any]], *, rerun_failed: bool) -> ResumePlan:
    """Chunks logged ``ok`` are done; so are ``failed``/``timeout`` ones unless ``rerun_failed``."""
    header = next((e for e in entries if "joblog" in e), None)
    last: dict[int, dict[str, Any]] = {}
    ok: dict[int, dict[str, Any]] = {}
    end = 0
    for entry in entries:
        if "chunk" not in entry or "status" not in entry or not entry.get("sha256"):
            continue  # a run's header or end; or an attempt cut short before its input was all read
        number = int(entry["chunk"]) - 1
        last[number] = entry
        if entry["status"] == "ok":
            ok[number] = entry
            if "offset" in entry:
                end = max(end, int(entry["offset"]) + int(entry["length"]))
    done = dict(ok)
    if not rerun_failed:
        for number, entry in last.items():
            if entry["status"] in FAILED_STATUSES and number not in done:
                done[number] = entry
    return ResumePlan(header, done, end)


# -- where values go: one block per chunk ---------------------------------------------


class Spool:
    """One chunk attempt's values, rendered, until the chunk ends: memory, then a temp file beside the results file."""

    def __init__(self, make_writer: Callable[[Any], Any], where: str | None) -> None:
        self.file = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY, dir=where)
        self.text = io.TextIOWrapper(self.file, encoding="utf-8", newline="", write_through=True)  # type: ignore[arg-type]
        self.writer = make_writer(self.text)
        self.values = 0

    def size(self) -> int:
        return self.file.tell()

    def copy_to(self, out: BinaryIO, half: bool = False) -> None:
        """The spooled bytes onto ``out``; ``half``: only the first half of them (a test's torn block)."""
        left = self.size() // 2 if half else -1
        self.file.seek(0)
        while left and (data := self.file.read(1 << 20 if left < 0 else min(left, 1 << 20))):
            out.write(data)
            left -= len(data) if left > 0 else 0

    def close(self) -> None:
        try:
            self.text.detach()
        except ValueError:
            pass
        self.file.close()


class Blocks:
    """Holds each chunk's values until the chunk ends, then commits them as one block.

    A commit: the block goes to the sink (the results file: appended,
    flushed, fsync'd; or stdout), then the chunk's ``ok`` line to the log,
    so the log never names a block that is not on disk. Commits are made by
    a thread of their own, as a group, at most every ``COMMIT_INTERVAL``
    seconds: every block ready by then is written, one fsync, then their log
    lines, one fsync (an fsync costs milliseconds, and more than its own
    thread's; one per chunk would slow the whole run). With ``ordered`` a
    block waits for the blocks of every chunk before it; a chunk that failed
    holds back those after it (they are logged ``interrupted``: a resume
    runs them again). Until ``open_gate()`` (every chunk the log had as done
    was checked against the input) nothing is committed.
    """

    def __init__(self, log: JobLog, *, results: BinaryIO | None, stdout: Callable[[Spool, dict[str, Any]], Any] | None,
                 make_writer: Callable[[Any], Any], ordered: bool, spool_dir: str | None,
                 gate_open: bool = True, on_error: Callable[[BaseException], None] = lambda exc: None) -> None:
        self._log = log
        self._results = results
        self._stdout = stdout
        self._make_writer = make_writer
        self._ordered = ordered
        self._spool_dir = spool_dir
        self._on_error = on_error
        self._lock = threading.Condition(threading.RLock())
        self._spools: dict[int, Spool] = {}
        self._ready: dict[int, tuple[Spool | None, dict[str, Any]]] = {}
        self._settled: set[int] = set()
        self._blocked: int | None = None  # the first chunk that failed (ordered: nothing after it is committed)
        self._head = 0
        self._gate = gate_open
        self._pause = _test_pause()
        #: blocks taken for the committer, in commit order; ``_busy`` while it writes a group
        self._pending: list[tuple[Spool | None, dict[str, Any]]] = []
        self._busy = False
        self._closing = False
        self._hurry = False  # drain(): commit what is pending without waiting for COMMIT_INTERVAL
        self._next_at = 0.0  # when the committer may commit again
        self.error: BaseException | None = None
        self.values = 0
        self.committed = 0
        self._committer = threading.Thread(target=self._commit_loop, name="joblog-commit", daemon=True)
        self._committer.start()

    def spool(self, number: int) -> Spool:
        """The current attempt's spool of chunk ``number`` (the Distributor's chunk number)."""
        spool = self._spools.get(number)
        if spool is None:
            spool = self._spools[number] = Spool(self._make_writer, self._spool_dir)
        return spool

    def restart(self, number: int) -> None:
        """A new attempt of the chunk: what an earlier one spooled is dropped (it starts from zero)."""
        old = self._spools.pop(number, None)
        if old is not None:
            old.close()

    def settled(self, log_number: int) -> None:
        """Chunk ``log_number`` needs no block in this run (the log has it as done)."""
        with self._lock:
            self._settled.add(log_number)
            self._take()

    def finished(self, number: int, log_number: int, entry: dict[str, Any]) -> None:
        """The chunk ended ok: its block is committed soon, or when its turn and the gate come."""
        spool = self._spools.pop(number, None)
        with self._lock:
            self._ready[log_number] = (spool, entry)
            self._take()

    def failed(self, number: int, log_number: int) -> None:
        """The chunk ended without a block; with ``ordered`` nothing after it is committed in this run."""
        spool = self._spools.pop(number, None)
        if spool is not None:
            spool.close()
        with self._lock:
            if self._blocked is None or log_number < self._blocked:
                self._blocked = log_number

    def open_gate(self) -> None:
        with self._lock:
            self._gate = True
            self._take()

    def _take(self) -> None:
        """Move the blocks whose turn has come to the committer (``_lock`` held)."""
        if not self._gate:
            return
        taken = False
        while True:
            if self._ordered:
                while self._head in self._settled:
                    self._head += 1
                if self._head not in self._ready or (self._blocked is not None and self._head >= self._blocked):
                    break
                number = self._head
            else:
                if not self._ready:
                    break
                number = next(iter(self._ready))
            self._pending.append(self._ready.pop(number))
            self._settled.add(number)
            taken = True
        if taken and (self._hurry or self._closing or time.monotonic() >= self._next_at):
            self._lock.notify_all()  # (else the committer wakes by itself when its interval is up)

    def _commit_loop(self) -> None:
        next_at = 0.0
        while True:
            with self._lock:
                while True:
                    if not self._pending and self._closing:
                        return
                    wait = next_at - time.monotonic() if not (self._closing or self._hurry) else 0.0
                    if self._pending and wait <= 0:
                        break
                    self._lock.wait(wait if self._pending else COMMIT_INTERVAL)
                group, self._pending = self._pending, []
                self._busy = True
                next_at = self._next_at = time.monotonic() + COMMIT_INTERVAL
            try:
                if self.error is None:
                    self._commit(group)
            except BaseException as exc:  # noqa: BLE001 - the disk is full, stdout is gone: the run stops
                if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):
                    where = "the results file" if self._results is not None else "the job log"
                    exc = SkyctlError(f"cannot write {where}: {exc.strerror or exc}",
                                      hint="the chunks logged ok are complete: fix it, then run again with --resume")
                self.error = exc
                self._on_error(exc)
            finally:
                for spool, _ in group:
                    if spool is not None:
                        spool.close()
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()

    def _commit(self, group: list[tuple[Spool | None, dict[str, Any]]]) -> None:
        """Write a group of blocks, fsync, then log each (fsync'd): the log only names blocks on disk."""
        later: list[bool] = []
        pause: tuple[str, int, str] | None = None
        for at, (spool, entry) in enumerate(group):
            number = self.committed + at + 1
            if self._pause and self._pause[1] == number:
                pause = self._pause
            if self._results is not None:
                offset = self._results.tell()
                mid = pause is not None and pause[1] == number and pause[0] == "mid-block"
                if spool is not None:
                    spool.copy_to(self._results, half=mid)
                if mid:
                    self._results.flush()
                    _pause_for_test(pause[2], entry)  # type: ignore[index]
                entry["offset"], entry["length"] = offset, self._results.tell() - offset
                later.append(False)
            else:
                later.append(spool is not None and self._stdout is not None and bool(self._stdout(spool, entry)))
        if self._results is not None:
            self._results.flush()
            os.fsync(self._results.fileno())
        lines = []
        for at, (spool, entry) in enumerate(group):
            number = self.committed + 1
            if pause is not None and pause[0] == "after-block" and pause[1] == number:
                if lines:
                    self._log.write_many(lines)
                    lines = []
                _pause_for_test(pause[2], entry)
            self.values += entry.get("values", 0)
            self.committed += 1
            if not later[at]:
                lines.append(entry)
        if lines:
            self._log.write_many(lines)

    def drain(self) -> None:
        """Wait until every block taken has been committed (or the committer failed), at once."""
        with self._lock:
            self._hurry = True
            self._lock.notify_all()
            while (self._pending or self._busy) and self._committer.is_alive():
                self._lock.wait(0.5)

    def held(self) -> list[tuple[int, dict[str, Any]]]:
        """The chunks that ended ok but were not committed (a failure before them, or the gate never opened)."""
        self.drain()
        with self._lock:
            left = sorted(self._ready.items())
            self._ready.clear()
        for _, (spool, _entry) in left:
            if spool is not None:
                spool.close()
        return [(n, e) for n, (_s, e) in left]

    def close(self) -> None:
        """The committer ends once what it was given is committed; every spool is dropped."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self._committer.join()
        for spool in self._spools.values():
            spool.close()
        self._spools.clear()


def _test_pause() -> tuple[str, int, str] | None:
    """``SKYCTL_TEST_PAUSE`` as (point, block number, marker path); None when unset."""
    value = os.environ.get(PAUSE_ENV)
    if not value:
        return None
    point, number, path = value.split(":", 2)
    return point, int(number or 0), path


def _pause_for_test(marker: str, entry: dict[str, Any]) -> None:
    """Test hook: say which block was written (``marker.at``), then wait for ``marker`` to exist."""
    Path(marker + ".at").write_text(json.dumps(entry))
    while not os.path.exists(marker):
        time.sleep(0.01)


def open_results(path: Path, *, resume_end: int | None) -> BinaryIO:
    """The results file, for appending blocks: new (truncated), or (resume) cut to the end of the last logged block."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise JobLogError(f"cannot open the results file {path}: {exc.strerror}", hint="check the path") from None
    size = os.fstat(fd).st_size
    if resume_end is not None and size < resume_end:
        os.close(fd)
        raise JobLogError(f"the results file {path} is shorter ({size} bytes) than the job log says ({resume_end})",
                          hint="it was changed or replaced: start over without --resume")
    os.ftruncate(fd, resume_end or 0)  # no fsync needed: a resume after a crash cuts it again
    out = os.fdopen(fd, "r+b")
    out.seek(0, os.SEEK_END)
    return out


def status_of(error: BaseException | None, default: str) -> str:
    """The log status of an attempt that ended with ``error``: a timeout is told apart by its exit status."""
    if error is not None and isinstance(error, SkyctlError) and int(error.exit_status) == 124:
        return "timeout"
    return default


def exit_of(error: BaseException | None, status: str) -> int:
    if status == "ok":
        return int(ExitStatus.OK)
    if status == "interrupted":
        return int(ExitStatus.INTERRUPTED)
    if isinstance(error, SkyctlError):
        return int(error.exit_status)
    return int(ExitStatus.REMOTE_RAISED)


# -- one run with a job log: the Distributor's source, observer and emit ----------------


class LongRun:
    """Everything a distributed ``pipe --joblog`` adds: the log and its lock,
    the resume plan, the results file or stdout, the blocks; the Distributor
    sees it as its ``observer`` and its ``emit`` target.

    Args:
        joblog: the job log's path; ``results``: the results file's, or None (stdout).
        resume / resume_failed: ``--resume`` / ``--resume-failed``.
        header: the run's own fields for the log's first line (command, chunk, format...).
        ordered: ``--keep-order``.
        make_writer: a value writer over a text stream (renders one chunk's values into its spool).
        to_stdout: ``to_stdout(spool, entry)`` hands a committed spool's values on (without ``results``);
            True when it writes ``entry`` to the log itself, later (the API: once the caller took the values).
        warn: one line for stderr.
    """

    def __init__(self, joblog: Path, results: Path | None, *, resume: bool, resume_failed: bool,
                 header: dict[str, Any], ordered: bool, make_writer: Callable[[Any], Any],
                 to_stdout: Callable[[Spool, dict[str, Any]], Any], warn: Callable[[str], None]) -> None:
        self.log = JobLog(joblog, resume=resume)
        self._results_file: BinaryIO | None = None
        self._started: dict[int, tuple[float, str]] = {}
        self._wall = time.monotonic()
        try:
            if self.log.torn:
                warn(f"the job log {joblog} ended in a torn line (a run killed while writing it): ignored")
            plan = plan_resume(self.log.entries, rerun_failed=resume_failed) if resume else ResumePlan(None, {}, 0)
            if plan.header is not None:
                _check_same_settings(plan.header, header)
            elif plan.done:
                raise JobLogError(f"the job log {joblog} has no header line", hint="start over without --resume")
            self.done = plan.done
            if results is not None:
                self._results_file = open_results(results, resume_end=plan.results_end if resume else None)
            self.log.write({"joblog": VERSION, **header, "start": _now(), "resume": resume,
                            "resume_failed": resume_failed, "chunks_done": len(plan.done), "pid": os.getpid()},
                           sync=False)
            spool_dir = str(results.resolve().parent) if results is not None else None
            self.blocks = Blocks(self.log, results=self._results_file, stdout=to_stdout, make_writer=make_writer,
                                 ordered=ordered, spool_dir=spool_dir, gate_open=not plan.done,
                                 on_error=self._commit_failed)
        except BaseException:
            self._close_files()
            raise
        self._last_done = max(plan.done) if plan.done else -1

    def distributor(self, slots: list[Any], start: Callable[..., Any], reader: Any,
                    shape: Callable[[Any, str], Any], *, retries: int, warn: Callable[[str], None],
                    chunk: int = 0, **more: Any) -> Any:
        """The run's ``pool.Distributor``: chunks cut by ``reader``'s ``CutStream`` (or, for the API, ``reader``
        is an iterable of items, cut every ``chunk`` items), values held here; ``shape(batch, host)`` makes a
        batch what is held (the CLI: the lines to write, tagged or not)."""
        from .pool import Cut, Distributor, Result

        def emit(chunk: Any, host: str, batch: Any) -> None:
            self.emit(chunk, shape(batch, host), 1 if type(batch) is Result else len(batch))

        if hasattr(reader, "batches"):
            source = chunked_source(reader.batches(), reader._stream, done=self.done, on_chunk=self.on_chunk,
                                    cut_mark=Cut, on_bad=self.on_bad, failing=lambda: getattr(reader, "failing", False))
        else:
            source = chunked_items(reader, chunk, done=self.done, on_chunk=self.on_chunk, cut_mark=Cut)
        self._distributor = Distributor(slots, start, source, emit, chunk=1 << 62, retries=retries, warn=warn,
                                        observer=self, **more)
        return self._distributor

    @property
    def exit_status(self) -> int | None:
        return getattr(self, "_exit", None)

    def ends(self, status: int) -> int:
        """The run's exit status, once every block is committed, noted for the log's last line."""
        self.blocks.drain()
        if self.blocks.error is not None and not status:
            raise self.blocks.error
        self._exit = int(status)
        return status

    # the source's side
    def on_chunk(self, chunk: ChunkInput) -> None:
        """A chunk's input is complete: one the log has as done is settled; one without records is logged ok now."""
        if chunk.skip:
            self.blocks.settled(chunk.number)
        elif chunk.records == 0:
            entry = {**chunk.entry(), "host": None, "attempt": 0, "start": _now(), "seconds": 0.0, "values": 0,
                     "status": "ok", "exit": 0}
            self.blocks.finished(-1 - chunk.number, chunk.number, _ordered_entry(entry))
        if chunk.number >= self._last_done:
            self.blocks.open_gate()

    def _commit_failed(self, error: BaseException) -> None:
        distributor = getattr(self, "_distributor", None)
        if distributor is not None:
            distributor.abort(error)

    def on_bad(self, chunk: ChunkInput, error: BaseException) -> None:
        """A bad record ended the input in a chunk that never ran: logged ``failed`` (exit 65)."""
        entry = {**chunk.entry(), "last_line": None, "sha256": None, "host": None, "attempt": 0, "start": _now(),
                 "seconds": 0.0, "values": 0, "status": "failed", "exit": exit_of(error, "failed"),
                 "error": _error_text(error)}
        self.log.write(_ordered_entry(entry))
        self.blocks.failed(-1 - chunk.number, chunk.number)

    # the Distributor's observer
    def started(self, chunk: Any, host: str) -> None:
        self.blocks.restart(chunk.number)
        self._started[chunk.number] = (time.monotonic(), _now())

    def ended(self, chunk: Any, host: str, status: str, error: BaseException | None) -> None:
        about: ChunkInput | None = chunk.about
        began, start = self._started.pop(chunk.number, (time.monotonic(), _now()))
        status = status_of(error, status)
        spool = self.blocks.spool(chunk.number)
        entry = {**(about.entry() if about is not None else {}), "records": len(chunk.records), "host": host,
                 "attempt": chunk.runs, "start": start, "seconds": round(time.monotonic() - began, 3),
                 "values": spool.values, "status": status, "exit": exit_of(error, status)}
        if about is not None and not about.sha256:
            entry["last_line"] = entry["sha256"] = None  # cut short before its input was all read
        if error is not None and status != "ok":
            entry["error"] = _error_text(error)
        entry = _ordered_entry(entry)
        if status == "ok":
            self.blocks.finished(chunk.number, about.number if about is not None else chunk.number, entry)
            return
        self.log.write(entry)
        if status in ("lost", "timeout"):  # it runs again (a timeout whose runs are used up ends the run)
            self.blocks.restart(chunk.number)
        else:
            self.blocks.failed(chunk.number, about.number if about is not None else chunk.number)

    # emit
    def emit(self, chunk: Any, batch: Any, count: int) -> None:
        spool = self.blocks.spool(chunk.number)
        spool.writer.write_batch(batch)
        spool.values += count

    def finish(self, exit_status: int | None) -> None:
        """At the end (also after Ctrl-C, SIGTERM or an error): chunks done but not committed are logged
        ``interrupted``; a last line with the exit status; the lock is released."""
        try:
            self.blocks.drain()
            pause = _test_pause()
            if pause is not None and pause[0] == "at-end":
                _pause_for_test(pause[2], {"committed": self.blocks.committed})
            for _, entry in self.blocks.held():
                entry["status"], entry["exit"] = "interrupted", int(ExitStatus.INTERRUPTED)
                self.log.write(entry)
            self.blocks.close()
            self.log.write({"end": _now(), "seconds": round(time.monotonic() - self._wall, 3), "exit": exit_status,
                            "values": self.blocks.values, "chunks_logged_ok": self.blocks.committed}, sync=False)
        finally:
            self._close_files()

    def _close_files(self) -> None:
        if self._results_file is not None:
            try:
                self._results_file.close()
            except OSError:
                pass
            self._results_file = None
        self.log.close()


#: the order of a chunk line's fields in the log (the rest follow)
_FIELDS = ("chunk", "host", "attempt", "start", "seconds", "first_line", "last_line", "records", "values", "status",
           "exit", "sha256", "offset", "length")


def _ordered_entry(entry: dict[str, Any]) -> dict[str, Any]:
    ordered = {k: entry[k] for k in _FIELDS if k in entry}
    ordered.update((k, v) for k, v in entry.items() if k not in ordered)
    return ordered


def _error_text(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return message if len(message) <= 300 else message[:300] + "…"


#: settings that decide the chunks (and the results' order): a resume must use the logged ones
_SETTINGS = {"chunk_size": "--chunk", "format": "--format", "keep_order": "--keep-order", "results": "--results"}


def _check_same_settings(logged: dict[str, Any], now: dict[str, Any]) -> None:
    for key, flag in _SETTINGS.items():
        before, after = logged.get(key), now.get(key)
        if key == "results":
            before, after = before is not None, after is not None
        if before != after:
            if isinstance(before, bool):
                said = f"the logged run was {'with' if before else 'without'} {flag}"
                hint = f"resume {'with' if before else 'without'} {flag}, as the logged run"
            else:
                said = f"the logged run had {flag} {before}, this one {after}"
                hint = f"resume with {flag} {before}"
            raise JobLogError(f"cannot resume: {said}", hint=hint + ", or start over without --resume")


# -- run --joblog: one line per host's call ------------------------------------------------


class CallLog:
    """``run --joblog FILE``: a header line, then one line per host's call (host, start, seconds, values,
    status, exit), and a last line with the run's exit status. Locked like a pipe's job log."""

    def __init__(self, path: Path, command: list[str]) -> None:
        self.log = JobLog(path, resume=False)
        self._wall = time.monotonic()
        self._start = _now()
        self.log.write({"joblog": VERSION, "command": command, "start": self._start, "pid": os.getpid()})
        self._exit: int | None = None

    def __enter__(self) -> CallLog:
        return self

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        if error is not None:
            self._exit = int(error.exit_status) if isinstance(error, SkyctlError) else \
                int(ExitStatus.INTERRUPTED) if isinstance(error, KeyboardInterrupt) else int(ExitStatus.REMOTE_RAISED)
        try:
            self.log.write({"end": _now(), "seconds": round(time.monotonic() - self._wall, 3), "exit": self._exit})
        finally:
            self.log.close()

    def one(self, host: str, call: Callable[[Callable[[Any], None]], int]) -> int:
        """Run ``call`` (one host's call; it hands over its value writer) and log it."""
        writers: list[Any] = []
        began, start = time.monotonic(), _now()
        status: int = int(ExitStatus.REMOTE_RAISED)
        error: BaseException | None = None
        try:
            status = int(call(writers.append))
            return status
        except BaseException as exc:
            error = exc
            status = int(exc.exit_status) if isinstance(exc, SkyctlError) else \
                int(ExitStatus.INTERRUPTED) if isinstance(exc, KeyboardInterrupt) else int(ExitStatus.REMOTE_RAISED)
            raise
        finally:
            self._exit = status
            word = "ok" if status == 0 else "interrupted" if status == ExitStatus.INTERRUPTED else \
                "timeout" if status == 124 else "lost" if status in (4, 5, 6) else "failed"
            entry = {"host": host, "attempt": 1, "start": start, "seconds": round(time.monotonic() - began, 3),
                     "values": writers[0].written if writers else 0, "status": word, "exit": status}
            if error is not None:
                entry["error"] = _error_text(error)
            self.log.write(entry)

    def hosts(self, stats: Iterable[Any]) -> None:
        """A broadcast's calls, from each host's ``pool.HostStats``."""
        worst = 0
        for stat in stats:
            status = int(stat.status)
            worst = worst or status
            word = "ok" if status == 0 else "interrupted" if status == ExitStatus.INTERRUPTED else \
                "timeout" if status == 124 else "lost" if status in (4, 5, 6) else "failed"
            entry = {"host": stat.name, "attempt": 1, "start": None, "seconds": round(stat.seconds, 3),
                     "values": stat.values, "status": word, "exit": status}
            if stat.error is not None:
                entry["error"] = _error_text(stat.error)
            self.log.write(entry)
        self._exit = worst


# -- the API: pool.map(fn, items, joblog=..., resume=True) -------------------------------------


class _Values:
    """A chunk's values as the API holds them: a list (the Spool's text stream goes unused)."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def write_batch(self, batch: Any) -> None:
        from .pool import Result

        if type(batch) is Result:
            self.values.append(batch.value)
        else:
            self.values.extend(batch)


def map_logged(slots: list[Any], start: Callable[..., Any], items: Iterable[Any], joblog: Path, *, fn: Any,
               chunk: int, ordered: bool, retries: int, resume: bool, resume_failed: bool) -> Iterator[Any]:
    """``pool.map`` with a job log: each chunk's values once it has ended (in order with ``ordered``); a
    chunk is logged ``ok`` when the caller asks for the value after its last one."""
    import queue
    import warnings

    from .pool import Interrupted

    done_marker = object()
    out: queue.Queue[Any] = queue.Queue(maxsize=2)
    gone = threading.Event()

    def deliver(spool: Spool, entry: dict[str, Any]) -> bool:
        while not gone.is_set():
            try:
                out.put((spool.writer.values, entry), timeout=0.2)
                break
            except queue.Full:
                continue
        return True

    header = {"command": ["pool.map", f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', fn)}"],
              "chunk_size": chunk, "chunk_unit": "items", "format": "python", "keep_order": ordered, "results": None}
    long_run = LongRun(joblog, None, resume=resume, resume_failed=resume_failed, header=header, ordered=ordered,
                       make_writer=lambda text: _Values(), to_stdout=deliver,
                       warn=lambda message: warnings.warn(message, stacklevel=3))
    distributor = long_run.distributor(slots, start, items, lambda batch, host: batch, retries=retries,
                                       warn=lambda message: None, chunk=max(1, chunk))

    def drive() -> None:
        try:
            distributor.run()
            long_run.blocks.drain()
        finally:
            out.put(done_marker)

    threading.Thread(target=drive, name="pool-map-joblog", daemon=True).start()
    status: int | None = None
    try:
        while (got := out.get()) is not done_marker:
            values, entry = got
            yield from values
            long_run.log.write(entry)
        status = distributor.exit_status
    except GeneratorExit:  # the caller stopped early: cancel every chunk; what it did not take is not logged ok
        gone.set()
        distributor.abort(Interrupted())
        while out.get() is not done_marker:
            pass
        status = int(ExitStatus.INTERRUPTED)
        raise
    finally:
        long_run.finish(status)
    if distributor.error is not None:
        from .pools import _rebuilt

        raise _rebuilt(distributor.error)
