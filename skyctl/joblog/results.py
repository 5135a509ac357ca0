"""The results writer: each chunk's values spooled (memory, then a temp file beside the results file) until
the chunk ends ``ok``, then committed as one block: appended, flushed and fsync'd, and only then logged
with the block's offset and length; commits made in groups by one thread.

Why apart: this is the exactly-once guarantee (the log never names a block that is not on
disk), kept away from the cutting of the input and the Distributor's callbacks.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable

from ..errors import SkyctlError
from .log import JobLog, JobLogError


#: a chunk's values are held in memory up to this many bytes, then in a temp file
SPOOL_MEMORY = 1 << 20
#: seconds between group commits at most: each costs two fsyncs, and on a VM an fsync can stall more than
#: its own thread (a distributed pipe of 1 M short lines ran ~20% slower with one group per chunk end)
COMMIT_INTERVAL = 0.1
#: test-only, ``POINT:N:PATH``: at POINT of the Nth block committed by this run (``after-block``: its bytes
#: fsync'd, its log line not written; ``mid-block``: half of its bytes written; ``at-end``: after the last
#: chunk, N unused) write ``PATH.at`` and wait until PATH exists, so a test can kill the client right there
PAUSE_ENV = "SKYCTL_TEST_PAUSE"


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
        self._ordered = ordered
        #: a chunk attempt's new spool: its values rendered by ``make_writer``, spilled to ``spool_dir``
        self._new_spool: Callable[[], Spool] = lambda: Spool(make_writer, spool_dir)
        self._on_error = on_error
        self._lock = threading.Condition(threading.RLock())
        self._spools: dict[int, Spool] = {}
        self._ready: dict[int, tuple[Spool | None, dict[str, Any]]] = {}
        self._settled: set[int] = set()
        self._blocked: int | None = None  # the first chunk that failed (ordered: nothing after it is committed)
        self._head = 0
        self._gate = gate_open
        self._pause = pause_point()
        #: blocks taken for the committer, in commit order; ``_busy`` while it writes a group
        self._pending: list[tuple[Spool | None, dict[str, Any]]] = []
        self._busy = False
        self._closing = False
        self._hurry = False  # drain(): commit what is pending without waiting for COMMIT_INTERVAL
        self._next_at = 0.0  # when the committer may commit again
        self.error: BaseException | None = None
        self.values = 0
        self.committed = 0
        self._committer = threading.Thread(target=self._commit_loop, name="skyctl-joblog-commit", daemon=True)
        self._committer.start()

    def spool(self, number: int) -> Spool:
        """The current attempt's spool of chunk ``number`` (the Distributor's chunk number)."""
        spool = self._spools.get(number)
        if spool is None:
            spool = self._spools[number] = self._new_spool()
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
                    pause_for_test(pause[2], entry)  # type: ignore[index]
                entry["offset"], entry["length"] = offset, self._results.tell() - offset
                later.append(False)
            else:
                later.append(spool is not None and self._stdout is not None and bool(self._stdout(spool, entry)))
        if self._results is not None:
            self._results.flush()
            os.fsync(self._results.fileno())
        lines: list[dict[str, Any]] = []
        for at, (spool, entry) in enumerate(group):
            number = self.committed + 1
            if pause is not None and pause[0] == "after-block" and pause[1] == number:
                if lines:
                    self._log.write_many(lines)
                    lines = []
                pause_for_test(pause[2], entry)
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


def pause_point() -> tuple[str, int, str] | None:
    """``SKYCTL_TEST_PAUSE`` as (point, block number, marker path); None when unset."""
    value = os.environ.get(PAUSE_ENV)
    if not value:
        return None
    point, number, path = value.split(":", 2)
    return point, int(number or 0), path


def pause_for_test(marker: str, entry: dict[str, Any]) -> None:
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
