"""Many hosts at once: a broadcast call, and a stream distributed in chunks.

- ``broadcast``: the same call on every host of a group, concurrently; each
  host's values are handed on as they arrive, tagged with the host.
- ``Distributor``: records cut into chunks, each chunk one call on one
  worker (a ``Slot``), pulled by whichever worker is free and sized for its
  host when it is taken (``skyctl.chunking``: ``--chunk auto`` or a fixed
  size); a chunk's records are kept until it is done so that when its host
  dies it runs again elsewhere (at most ``retries`` times), the worker
  dropping the values already written (``skip``): every value is handed on
  exactly once, assuming a chunk yields the same values each time it runs.
  With ``twin``, each slot has a second worker process that starts the next
  chunk's call while the current chunk runs (no gap between chunks).

Nothing here writes: values go to the ``emit`` callbacks the caller gives
(the CLI writes rendered lines, the API yields values), warnings to ``warn``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

from .errors import (BadRecord, ChunkLost, ConnectError, ConnectionLost, ExitStatus, RemoteEnvironmentError, RemoteError,
                     SkyctlError, TimedOut)
from .chunking import DEFAULT as DEFAULT_CHUNK
from .chunking import ChunkSizer, sizer_for
from .remote.flow import LineBatch

#: failures of a host (or one worker on it), not of the function: its chunks run again elsewhere
HOST_FAILURES = (ConnectError, ConnectionLost, RemoteEnvironmentError)

#: pipelining: the second worker process of a host's slots is started once the host has finished this
#: many chunks and the run has lasted this many seconds, with stdin still open: a worker's start costs
#: about what a few dozen gaps between chunks do, so only a run that goes on pays for it
TWIN_AFTER_CHUNKS = 4
TWIN_AFTER_SECONDS = 2.0

#: seconds a chunk may send nothing, once the run waits for it alone, before a warning names it
#: (``SKYCTL_STALL_WARNING`` in the CLI)
STALL_WARNING = 30.0


def slots_for(profile: Any, jobs: int | None, workers: int) -> int:
    """How many slots (worker processes) a host gets: ``-j``, else a ray host's own ``workers:``
    (chunk tasks in flight), else the group's ``workers``."""
    if jobs:
        return jobs
    if getattr(profile, "type", None) == "ray":
        return int(getattr(profile, "workers", 1))
    return workers


class GroupError(SkyctlError):
    """A call on several hosts failed on some: ``results`` holds, per host in
    group order, its value or the exception it ended with."""

    def __init__(self, message: str, results: dict[str, Any], hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.results = results
        first = next((r for r in results.values() if isinstance(r, SkyctlError)), None)
        self.exit_status = first.exit_status if first is not None else ExitStatus.REMOTE_RAISED


class Interrupted(Exception):
    """Raised in a host's thread to make it cancel its call (Ctrl-C, ``--fail-fast``, a fatal error elsewhere)."""


class Cancelled(Interrupted):
    """A call cancelled because of a failure elsewhere (``--fail-fast``, or a chunk after a failed one
    with ``--keep-order``): the host did not fail, and its exit status is not the run's."""


@dataclass
class HostStats:
    """What one host did, for the per-host summary."""

    name: str
    chunks: int = 0
    records: int = 0
    values: int = 0
    reruns: int = 0
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    #: how the host ended: None while running or when it ended well
    error: BaseException | None = None
    connected: bool = False
    #: the host is not given more chunks (it died)
    dead: bool = False
    #: broadcast: the call was cancelled because another host failed (``--fail-fast``); not a failure
    cancelled: bool = False
    #: chunks whose function raised on this host (counted in ``chunks`` too); with ``--keep-going``
    #: the host goes on, ``error`` stays None and these make its status 1
    failed: int = 0

    @property
    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    @property
    def status(self) -> int:
        if self.error is None:
            return ExitStatus.REMOTE_RAISED if self.failed else ExitStatus.OK
        return exit_status_of(self.error)


def exit_status_of(error: BaseException) -> int:
    """The exit status a failure gives the run (a host's, a chunk's or the run's own)."""
    if isinstance(error, SkyctlError):
        return int(error.exit_status)
    if isinstance(error, (KeyboardInterrupt, Interrupted)):
        return ExitStatus.INTERRUPTED
    return ExitStatus.REMOTE_RAISED


@dataclass
class Failure:
    """Something that went wrong in a distributed run, in the order it happened: a chunk whose
    function raised (``chunk`` set, ``host_failure`` False), or a host or chunk attempt that failed
    and was worked around (a host that never connected, died, or lost a chunk's task). ``--strict``
    takes the first; the report lists the chunks."""

    host: str
    error: BaseException
    chunk: Chunk | None = None
    host_failure: bool = False


def describe(error: BaseException | None) -> str:
    """``exit N, what`` for a summary line."""
    if error is None:
        return "ok"
    if isinstance(error, RemoteError):
        return f"exit 1, raised {error.message}"
    if isinstance(error, (KeyboardInterrupt, Interrupted)):
        return "exit 130, interrupted"
    status = int(error.exit_status) if isinstance(error, SkyctlError) else 1
    what = {4: "could not connect: ", 5: "remote environment: ", 6: "connection lost: "}.get(status, "")
    message = error.message if isinstance(error, SkyctlError) else str(error)
    return f"exit {status}, {what}{message}"


# -- broadcast -------------------------------------------------------------------


def broadcast(hosts: Sequence[Any], start: Callable[[Any], Any], emit: Callable[[str, Any], None], *,
              fail_fast: bool = False, stats: dict[str, HostStats] | None = None,
              stop: threading.Event | None = None) -> dict[str, HostStats]:
    """Run ``start(host)`` (which starts one call, a ``CallStream``) on every
    host at once; ``emit(name, batch)`` for each batch of values as it
    arrives, and ``emit(name, Result(value))`` for a return value.

    ``hosts`` are ``api.Host``s. Returns each host's ``HostStats`` (in the
    order given); Ctrl-C (``KeyboardInterrupt`` in the calling thread) or
    ``stop`` being set cancels every call (their ``finally`` runs) and then
    re-raises / returns.
    """
    stats = stats if stats is not None else {}
    for host in hosts:
        stats.setdefault(host.label, HostStats(host.label))
    streams: dict[str, Any] = {}
    lock = threading.Lock()
    cancelled = threading.Event()
    #: what a host cancelled after ``cancel_all`` ends with: the first reason's type
    reasons: list[type[Interrupted]] = []

    def cancel_all(reason: Interrupted) -> None:
        if not cancelled.is_set():
            reasons.append(type(reason))
        cancelled.set()
        with lock:
            for stream in streams.values():
                stream.interrupt(reason)

    def one(index: int, host: Any) -> None:
        stat = stats[host.label]
        stream = None
        try:
            time.sleep(min(index, 50) * 0.005)  # not every login in the same millisecond (sshd MaxStartups)
            if cancelled.is_set():
                raise (reasons[0] if reasons else Interrupted)()
            stream = start(host)
            stat.connected = True
            with lock:
                streams[host.label] = stream
            if cancelled.is_set():
                stream.interrupt((reasons[0] if reasons else Interrupted)())
            for batch in stream.batches():
                emit(host.label, batch)
                stat.values += len(batch)  # once written: a batch ``emit`` refused is not counted
            if stream.result is not None:
                emit(host.label, Result(stream.result))
                stat.values += 1
        except BaseException as exc:  # noqa: BLE001 - every way a host ends is reported, none escapes the thread
            if isinstance(exc, Cancelled):  # --fail-fast after another host failed: this one did not
                stat.cancelled = True
            else:
                stat.error = exc
            if isinstance(exc, (Interrupted, KeyboardInterrupt)) and stream is not None:
                stream.close()  # the remote generator's finally runs
            if fail_fast and not isinstance(exc, (Interrupted, KeyboardInterrupt)):
                cancel_all(Cancelled())
        finally:
            stat.ended = time.monotonic()
            try:
                host.close()
            except BaseException:  # noqa: BLE001
                pass

    threads = [threading.Thread(target=one, args=(i, h), name=f"skyctl-host-{h.label}", daemon=True) for i, h in enumerate(hosts)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
                if stop is not None and stop.is_set() and not cancelled.is_set():
                    cancel_all(Interrupted())
    except KeyboardInterrupt:
        cancel_all(Interrupted())
        for thread in threads:
            thread.join(30)
        raise
    return {h.label: stats[h.label] for h in hosts}


@dataclass
class Result:
    """A call's return value, handed to ``emit`` after its yielded values."""

    value: Any


# -- distribution ----------------------------------------------------------------


@dataclass
class Cut:
    """In a Distributor's source: the chunk being filled ends here, even below
    its sizer's size (no chunk takes records across a cut); ``about`` describes
    the chunk whose records come next, and becomes its ``Chunk.about``. With a
    sizer that never fills a chunk (``1 << 62``), the cuts alone decide the
    chunks: a job log's line ranges."""

    about: Any = None


class Chunk:
    """Up to ``limit`` consecutive records, filled as they are read; one call per run.

    The records are kept as the batches they were read in (a ``LineBatch`` stays
    one bytes object), in ``parts``; ``size`` counts them. A ``Cut`` in the
    source ends it below ``limit``."""

    def __init__(self, number: int, limit: int = 0, about: Any = None) -> None:
        self.number = number
        #: the records it may hold (its sizer's answer when it was cut)
        self.limit = limit
        #: what the source's ``Cut`` said of this chunk (a job log's ``ChunkInput``)
        self.about = about
        self.parts: list[Any] = []
        self.size = 0
        self.closed = False
        #: the input broke after these records (a bad record)
        self.failure: BaseException | None = None
        self.cond = threading.Condition()
        #: runs started, and values handed on so far (a re-run skips those)
        self.runs = 0
        self.written = 0
        self.result_written = False
        self.done = False
        #: physical stdin lines holding its records (None when the source has no line numbers)
        self.first_line: int | None = None
        self.last_line: int | None = None
        #: records, kept once ``parts`` is let go; the host its run ended on (the summary's counts)
        self.count = 0
        self.ended_on: str | None = None
        #: it will not be run to its end: a failure elsewhere cancelled it
        self.cancelled = False
        #: when its current run last handed on a value (or started), and whether a stall was reported
        self.progress = time.monotonic()
        self.stall_reported = False
        #: when its first run started, and sent its first value back (its host's rate and latency, for the sizer)
        self.started: float | None = None
        self.first_value: float | None = None

    @property
    def records(self) -> list[Any]:
        """Its records, one list (for tests and messages; the feed sends ``parts`` as they are)."""
        return [r for part in self.parts for r in (part.items() if type(part) is LineBatch else part)]

    @property
    def where(self) -> str:
        """``chunk 3 (stdin lines 2001–3000)``, for messages (1-based, as users count)."""
        if self.first_line is None or self.last_line is None:
            return f"chunk {self.number + 1}"
        return f"chunk {self.number + 1} (stdin lines {self.first_line}–{self.last_line})"

    def add(self, part: Any, count: int) -> None:
        """Append ``count`` records (``cond`` held); full at ``limit``."""
        self.parts.append(part)
        self.size += count
        if self.size >= self.limit:
            self.closed = True
        self.cond.notify_all()

    def close(self, failure: BaseException | None = None) -> None:
        with self.cond:
            self.closed = True
            self.failure = failure or self.failure
            self.cond.notify_all()

    def release(self) -> None:
        """Let go of its records: no run can need them now."""
        with self.cond:
            self.parts = []

    def feed(self, stop: threading.Event, hold: threading.Event | None = None,
             on_fed: Callable[[], None] | None = None) -> ChunkFeed:
        return ChunkFeed(self, stop, hold, on_fed)


class ChunkFeed:
    """A chunk's records as one call's stream parameter: from the first, as they are read.

    ``hold``: the records wait until it is set (the run before it on the same slot has ended: the call
    is set up meanwhile); ``on_fed``: called once every record has been handed over."""

    def __init__(self, chunk: Chunk, stop: threading.Event, hold: threading.Event | None = None,
                 on_fed: Callable[[], None] | None = None) -> None:
        self._chunk = chunk
        self._stop = stop
        self._hold = hold
        self._on_fed = on_fed
        #: every record of the chunk was handed out (not cut short by ``stop``)
        self.complete = False

    def batches(self) -> Iterator[Any]:
        """The chunk's parts (lists, or ``LineBatch``es) as they come."""
        chunk, at = self._chunk, 0
        if self._hold is not None:
            while not self._hold.wait(0.05):
                if self._stop.is_set() or chunk.cancelled:  # the call is being cancelled: never a normal end
                    raise Cancelled() if chunk.cancelled else Interrupted()
            chunk.progress = time.monotonic()  # it waited for its turn, not for a stalled host
            if chunk.runs == 1:  # its host's rate counts from here, not from the wait
                chunk.started = chunk.progress
        while True:
            with chunk.cond:
                while at == len(chunk.parts) and not chunk.closed and not self._stop.is_set():
                    chunk.cond.wait(0.5)
                new = chunk.parts[at:]
                closed = chunk.closed
            at += len(new)
            yield from new
            if self._stop.is_set():
                return
            if closed and at == len(chunk.parts):
                if self._on_fed is not None:
                    self._on_fed()
                if chunk.failure is not None:
                    raise chunk.failure
                self.complete = True
                return

    def __iter__(self) -> Iterator[Any]:
        for batch in self.batches():
            yield from (batch.items() if type(batch) is LineBatch else batch)


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


@dataclass
class Slot:
    """One worker process on one host: an ``api.Host`` kept open for many calls."""

    host: Any
    name: str
    index: int
    stream: Any = None
    #: the chunk it is running
    chunk: Chunk | None = None
    #: pipelining: the other worker process of the same slot (``Distributor(twin=)``); while one runs
    #: a chunk, the other starts the next chunk's call, whose records wait for the first's end
    partner: Slot | None = None
    #: a second process made for pipelining: not a worker of its own (read-ahead, end-of-input shares)
    is_twin: bool = False
    #: every record of the running chunk has been handed to its call (the partner may start the next)
    fed: bool = False
    #: set when the running chunk's run ends (a partner's chunk waiting on it then gets its records)
    ended: threading.Event = field(default_factory=threading.Event)
    #: the partner's run this chunk's records wait for (None: none)
    hold: threading.Event | None = None


#: glibc's ``M_MMAP_THRESHOLD`` (malloc.h), and its default value
_M_MMAP_THRESHOLD, _MMAP_THRESHOLD = -3, 128 * 1024
#: whether the threshold was fixed; None until tried (once per process)
_heap_kept_flat: bool | None = None


def keep_chunk_buffers_off_the_heap() -> bool:
    """Fix glibc's mmap threshold at its default, so that a chunk's ~1 MB
    buffers are mappings of their own, returned to the OS when freed.

    glibc raises the threshold to the size of each mapped block freed (up to
    32 MiB); after the first chunks, their buffers come from the heap, which
    does not shrink, and a long distributed pipe's peak RSS creeps up (1 GB
    over 4 hosts: 46–50 MiB against 42–44 with the threshold fixed). Once per
    process; False where there is no glibc ``mallopt`` (nothing changes there).
    """
    global _heap_kept_flat
    if _heap_kept_flat is None:
        _heap_kept_flat = sys.platform.startswith("linux") and _mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    return _heap_kept_flat


def _mallopt(param: int, value: int) -> bool:
    try:
        import ctypes

        return bool(ctypes.CDLL(None).mallopt(param, value))
    except (OSError, AttributeError, ImportError):  # no libc to load, or one without mallopt
        return False


class Distributor:
    """Runs ``start(slot, feed, skip)`` for each chunk of ``source``'s records on whichever slot is free.

    Args:
        slots: the workers (several per host with ``-j``).
        start: starts one call on a slot's host with a chunk's feed as the
            stream parameter and ``skip`` values dropped; returns its ``CallStream``.
        source: batches of records (lists, or ``LineBatch``es), as they are read, and ``Cut`` marks
            (a chunk boundary).
        emit: ``emit(chunk, host, batch)`` for values, ``emit(chunk, host, Result(v))``
            for a return value; returns once they are handed on (the caller counts them).
        chunk: records per chunk: ``"auto"`` (sized per host, ``skyctl.chunking.AutoChunks``), a
            number, or a ``ChunkSizer``; ``retries``: re-runs of a chunk whose host failed.
        ordered: ``emit`` each chunk's values only after every value of the chunks before it.
        warn: one line for stderr.
        lines: the first and last physical stdin line of the batch ``source`` gave last (None: unknown),
            for the line ranges of chunks in messages.
        stall_warning: seconds without a value from a chunk, while no other chunk is left to run,
            after which ``warn`` names its host and chunk (once per run); None: never.
        twin: pipelining: ``twin(slot)`` gives a second host (worker process) for ``slot``, or None.
            The twin connects in the background once the run has gone on (``twin_after``: chunks
            its host has finished, seconds); from then on the two take the slot's chunks in
            turn: one starts its call (the function set up, the records cut) while the other's
            chunk runs, and its records follow the moment that chunk ends. One function runs per
            slot at a time; no chunk waits for a round trip and a call set-up.
        keep_going: a chunk whose function raises ends there (its values up to the failure stay,
            in its place with ``ordered``), ``chunk_failed(chunk, host, error)`` is called, and the
            other chunks go on; the exit status is then 1.

    What a failing function leaves: without ``ordered`` the other chunks are
    cancelled at once (values they wrote stay; they did not complete). With
    ``ordered`` the output is what one host would write: every chunk before the
    failing one runs to its end (re-runs included), then the failing chunk's
    values up to the failure; the chunks after it are cancelled, nothing of
    theirs is written. With ``keep_going`` nothing is cancelled: a failed chunk counts as ended.
        observer: told of each chunk attempt: ``started(chunk, host)``, and
            ``ended(chunk, host, status, error)`` with status ``ok``, ``failed``,
            ``lost``, ``timeout`` or ``interrupted`` (a job log). With an observer, which
            holds a chunk's values until it ends, a re-run starts from zero.
    """

    def __init__(self, slots: list[Slot], start: Callable[[Slot, ChunkFeed, int], Any],
                 source: Iterable[Any], emit: Callable[[Chunk, str, Any], None], *,
                 chunk: int | str | ChunkSizer = DEFAULT_CHUNK,
                 retries: int = 3, ordered: bool = False, warn: Callable[[str], None] = lambda m: None,
                 lines: Callable[[], tuple[int, int] | None] | None = None,
                 stall_warning: float | None = STALL_WARNING, keep_going: bool = False,
                 chunk_failed: Callable[[Chunk, str, BaseException], None] | None = None,
                 observer: Any = None, twin: Callable[[Slot], Any] | None = None,
                 twin_after: tuple[int, float] = (TWIN_AFTER_CHUNKS, TWIN_AFTER_SECONDS)) -> None:
        keep_chunk_buffers_off_the_heap()
        slots = list(slots)
        if twin is not None:  # pipelining: a second worker process per slot (see ``Slot.partner``)
            for slot in list(slots):
                host = twin(slot)
                if host is not None:
                    other = Slot(host, slot.name, slot.index, partner=slot, is_twin=True)
                    slot.partner = other
                    slots.append(other)
        self.slots = slots
        self.twin_after = twin_after
        self._started = time.monotonic()
        self._start = start
        self._source = source
        self._emit = emit
        #: decides each chunk's records when a worker takes it (``skyctl.chunking``)
        self.sizer = sizer_for(chunk)
        self.retries = retries
        self._ordered = ordered
        self._warn = warn
        self._lines = lines
        self.stall_warning = stall_warning
        self.keep_going = keep_going
        self._on_chunk_failed = chunk_failed
        #: what went wrong, in order (chunks that raised, hosts and attempts that failed)
        self.failures: list[Failure] = []
        #: chunks that raised and were gone past (``keep_going``)
        self.chunks_failed = 0
        #: records read from the source into chunks (those of cancelled chunks included)
        self.records_read = 0
        #: the chunk whose function raised (the first in input order with ``ordered``), and its host
        self.failed_chunk: Chunk | None = None
        self.failed_host: str | None = None
        self._failure: BaseException | None = None
        self._observer = observer
        self.stats: dict[str, HostStats] = {}
        for slot in slots:
            self.stats.setdefault(slot.name, HostStats(slot.name))
        self._cond = threading.Condition()
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
        self._reruns: deque[Chunk] = deque()
        self._in_flight = 0
        self._reading_done = False
        self._current: Chunk | None = None
        self._chunks = 0
        #: set on a fatal error or a cancel: everything winds down
        self.stop = threading.Event()
        self.error: BaseException | None = None
        #: a bad record ended the input (exit 65 once the chunks before it are done)
        self.bad_record: BaseException | None = None
        self._live = len(slots)
        #: live slots that are workers of their own (not pipelining twins)
        self._workers = sum(1 for slot in slots if not slot.is_twin)
        # --keep-order: the chunk whose values go out live, and what later chunks hold meanwhile
        self._head = 0
        self._held: dict[int, list[tuple[Chunk, str, Any]]] = {}
        #: chunks run to their end whose values wait for the chunks before them
        self._finished: dict[int, Chunk] = {}
        self._emit_lock = threading.Lock()

    # -- the run ---------------------------------------------------------------
    def run(self) -> None:
        """Until every chunk is done, a fatal error, or Ctrl-C (re-raised after every call is cancelled)."""
        reader = threading.Thread(target=self._read, name="skyctl-chunk-reader", daemon=True)
        workers = [threading.Thread(target=self._work, args=(slot,), name=f"skyctl-slot-{slot.name}-{slot.index}", daemon=True)
                   for slot in self.slots]
        reader.start()
        for i, thread in enumerate(workers):
            thread.start()
        try:
            for thread in workers:
                while thread.is_alive():
                    thread.join(0.2)
                    self._check_stalls()
        except KeyboardInterrupt:
            self.abort(KeyboardInterrupt())
            for thread in workers:
                thread.join(30)
            raise
        finally:
            now = time.monotonic()
            for stat in self.stats.values():
                stat.ended = stat.ended or now

    @property
    def exit_status(self) -> int:
        if self.error is not None:
            return int(self.error.exit_status) if isinstance(self.error, SkyctlError) else ExitStatus.REMOTE_RAISED
        if self.chunks_failed:
            return ExitStatus.REMOTE_RAISED
        if self.bad_record is not None:
            return ExitStatus.BAD_RECORD
        return ExitStatus.OK

    @property
    def first_failure(self) -> Failure | None:
        """The first thing that went wrong, recovered from or not (``--strict``)."""
        return self.failures[0] if self.failures else None

    def abort(self, error: BaseException) -> None:
        """A fatal error: the first one counts; every running call is cancelled."""
        with self._cond:
            if self.error is None:
                self.error = error
            self.stop.set()
            self._cond.notify_all()
        for slot in self.slots:
            stream = slot.stream
            if stream is not None:
                stream.interrupt(Interrupted())

    def totals(self) -> Totals:
        """The whole run's counts: the per-host ones summed, and what was read but never run to its end."""
        stats = self.stats.values()
        chunks, records = sum(s.chunks for s in stats), sum(s.records for s in stats)
        return Totals(chunks=chunks, records=records, values=sum(s.values for s in stats),
                      reruns=sum(s.reruns for s in stats), cancelled_chunks=max(0, self._chunks - chunks),
                      cancelled_records=max(0, self.records_read - records), failed_chunks=sum(s.failed for s in stats))

    # -- reading ---------------------------------------------------------------
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
            if not self.stats[slot.name].dead and not slot.is_twin:
                size = self._last_size.get(slot.name)
                total += size if size is not None else self.sizer.size(slot.name, self._chunks, live=self._workers)
            chunk, hold = slot.chunk, slot.hold
            if chunk is not None and hold is not None and not hold.is_set():
                total -= chunk.size  # a chunk waiting for its turn is read ahead too
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

    # -- the workers -----------------------------------------------------------
    def _take(self, slot: Slot) -> Chunk | None:
        with self._cond:
            while True:
                if self.stop.is_set() or self.stats[slot.name].dead:
                    return None
                partner = slot.partner
                if partner is not None and partner.chunk is not None and not partner.fed:
                    self._cond.wait(0.1)  # the partner's chunk still takes records: not yet this slot's turn
                    continue
                chunk = None
                if self._reruns:
                    chunk = self._reruns.popleft()
                    if self._after_failure(chunk):
                        self._drop(chunk)
                        continue
                elif self._pending_records and not self._stopping():
                    chunk = self._cut(slot)
                if chunk is not None:
                    slot.chunk, slot.fed, slot.ended = chunk, False, threading.Event()
                    slot.hold = partner.ended if partner is not None and partner.chunk is not None else None
                    return chunk
                if self._reading_done and self._in_flight == 0:
                    return None
                self._cond.wait(0.1 if partner is not None else None)

    def _after_failure(self, chunk: Chunk) -> bool:
        """Whether ``chunk`` comes after the chunk that failed (``ordered``): it is not needed."""
        failed = self.failed_chunk
        return failed is not None and chunk.number > failed.number

    def _drop(self, chunk: Chunk) -> None:
        """A chunk that will not run to its end (``_cond`` held): cancelled, its held values let go."""
        chunk.cancelled = True
        chunk.release()
        self._held.pop(chunk.number, None)
        self._in_flight -= 1
        self._cond.notify_all()

    def _work(self, slot: Slot) -> None:
        stat = self.stats[slot.name]
        try:
            if slot.is_twin and not self._connect_twin(slot):
                return
            while True:
                chunk = self._take(slot)
                if chunk is None:
                    return
                try:
                    if not self._run_chunk(slot, chunk):
                        return
                except Interrupted:  # the output failed while held values were handed on
                    return
        finally:
            with self._cond:
                self._live -= 1
                if not slot.is_twin:
                    self._workers -= 1
                left = self._live
                self._cond.notify_all()
            if not left and not self.stop.is_set() and not self._all_done():
                self.abort(self._no_workers_left())
            try:
                slot.host.close()
            except BaseException:  # noqa: BLE001
                pass
            stat.ended = time.monotonic()

    def _connect_twin(self, slot: Slot) -> bool:
        """Start a pipelining twin's worker before it takes a chunk (its partner works meanwhile), once
        it pays (``TWIN_AFTER_CHUNKS``, ``TWIN_AFTER_SECONDS``; a short run, or the end of a long one,
        is not worth a worker's start). False when it is not started, or cannot be: the slot then
        runs without it (a host failure shows on the partner)."""
        chunks, seconds = self.twin_after
        with self._cond:
            while self.stats[slot.name].chunks < chunks or time.monotonic() - self._started < seconds:
                if self.stop.is_set() or self.stats[slot.name].dead or self._reading_done:
                    return False
                self._cond.wait(0.25)
            if self._reading_done:
                return False
        connect = getattr(slot.host, "connect", None)
        if not callable(connect):
            return True
        try:
            connect()
        except BaseException:  # noqa: BLE001 - the partner's own calls report what is wrong with the host
            return False
        return not self.stop.is_set()

    def _all_done(self) -> bool:
        with self._cond:
            return self._reading_done and self._in_flight == 0

    def _no_workers_left(self) -> SkyctlError:
        errors = [s.error for s in self.stats.values() if s.error is not None]
        last = errors[-1] if errors else None
        if not any(s.connected for s in self.stats.values()):
            return ConnectError(f"no host could be reached ({describe(last)})" if last else "no host could be reached",
                                hint="check the hosts with 'skyctl check GROUP'")
        if errors and len(errors) == len(self.stats) and all(isinstance(e, (ConnectError, RemoteEnvironmentError))
                                                             for e in errors):
            if len({type(e).exit_status for e in errors}) == 1:  # every host failed alike (a ray host's driver
                return errors[-1]  # could not reach its cluster, or has no ray): that failure, with its hint
        return ConnectionLost("every worker is gone with chunks left to run", hint="values written so far are complete; "
                              "see the per-host summary for why each host ended")

    def _run_chunk(self, slot: Slot, chunk: Chunk) -> bool:
        """Run one chunk on ``slot``; False when the slot is done for (its host failed, or a fatal error)."""
        stat = self.stats[slot.name]
        stream = None
        try:
            with chunk.cond:
                chunk.runs += 1
                rerun = chunk.runs > 1
            chunk.progress, chunk.stall_reported = time.monotonic(), False
            if not rerun:
                chunk.started = chunk.progress
            if self._observer is not None:
                chunk.written, chunk.result_written = 0, False
                self._observer.started(chunk, slot.name)
            feed = chunk.feed(self.stop, slot.hold, lambda: self._fed(slot))
            stream = self._start(slot, feed, chunk.written)
            stat.connected = True
            slot.stream = stream
            if self.stop.is_set() or chunk.cancelled:
                stream.interrupt(Cancelled() if chunk.cancelled else Interrupted())
            if rerun:
                stat.reruns += 1
            for batch in stream.batches():
                self._hand_on(chunk, slot.name, batch)
            if stream.result is not None and not chunk.result_written:
                chunk.result_written = True
                self._hand_on(chunk, slot.name, Result(stream.result))
        except TimedOut as exc:  # this attempt ran past its limit: a failure of the attempt; it runs again
            exc.in_chunk(chunk.where)
            self._observe(chunk, slot, "timeout", exc)
            self._timed_out(slot, chunk, exc)
            return not self.stop.is_set()
        except ChunkLost as exc:  # the chunk's Ray task died, not the host: run it again, keep the slot
            self._observe(chunk, slot, "lost", exc)
            self._chunk_lost(slot, chunk, exc)
            return not self.stop.is_set()
        except HOST_FAILURES as exc:
            self._observe(chunk, slot, "lost", exc)
            if stream is None:
                chunk.runs -= 1  # it never ran there
            self._host_failed(slot, chunk, exc)
            return False
        except BadRecord as exc:  # the chunk reached the bad record: it ends there, as on one host
            self.bad_record = self.bad_record or exc
            self._observe(chunk, slot, "failed", exc)
            self._chunk_done(slot, chunk)
            return True
        except (Interrupted, KeyboardInterrupt) as exc:
            self._observe(chunk, slot, "interrupted", exc)
            if stream is not None:
                stream.close()
            if chunk.cancelled and not self.stop.is_set():  # after a failed chunk (ordered): the slot goes on
                with self._cond:
                    self._drop(chunk)
                return True
            return False
        except BaseException as exc:  # noqa: BLE001 - the function raised (RemoteError, or a refused value)
            self._observe(chunk, slot, "failed", exc)
            going_on = self.keep_going and stream is not None  # a call that never started is no chunk's failure
            if stream is not None and not self._ordered and not going_on:
                self.abort(exc)  # the other chunks are cancelled at once
            if stream is not None:
                stream.close()
            if going_on:
                self._chunk_failed_going_on(slot, chunk, exc)
                return not self.stop.is_set()
            self._chunk_failed(slot, chunk, exc)
            return not self.stop.is_set()
        finally:
            with self._cond:
                slot.stream = None
                slot.chunk = None
                slot.ended.set()  # a partner's chunk waiting on this run gets its records
                self._cond.notify_all()
        # a call that ended because stopping cut its input short is not a whole chunk
        self._observe(chunk, slot, "ok" if feed.complete or not self.stop.is_set() else "interrupted", None)
        self._chunk_done(slot, chunk)
        return True

    def _fed(self, slot: Slot) -> None:
        """Every record of ``slot``'s chunk is in its call: its partner may start the next chunk."""
        with self._cond:
            slot.fed = True
            self._cond.notify_all()

    def _observe(self, chunk: Chunk, slot: Slot, status: str, error: BaseException | None) -> None:
        """Tell the observer how the chunk's attempt ended; an observer that fails (its file) stops the run."""
        if self._observer is None:
            return
        try:
            self._observer.ended(chunk, slot.name, status, error)
        except Exception as exc:  # noqa: BLE001 - e.g. the job log's disk is full
            self.abort(exc)

    def _hand_on(self, chunk: Chunk, host: str, batch: Any) -> None:
        chunk.progress = time.monotonic()
        if chunk.first_value is None and chunk.runs == 1:
            chunk.first_value = chunk.progress
        with self._emit_lock:
            if not self._ordered or chunk.number == self._head:
                self._emit_now(chunk, host, batch)
            elif not chunk.cancelled:
                self._held.setdefault(chunk.number, []).append((chunk, host, batch))

    def _emit_now(self, chunk: Chunk, host: str, batch: Any) -> None:
        """Hand ``batch`` on and count it as written (``_emit_lock`` held)."""
        count = 1 if type(batch) is Result else len(batch)
        try:
            self._emit(chunk, host, batch)
        except Exception as exc:  # the output is gone (a closed pipe), or the host sent what cannot be written: everything stops
            if isinstance(exc, SkyctlError):  # the host's fault (a forged host tag): its summary line says so
                self.stats[host].error = self.stats[host].error or exc
            self.abort(exc)
            raise Interrupted() from exc
        chunk.written += count
        self.stats[host].values += count

    def _ended(self, chunk: Chunk, host: str, count: bool = True) -> None:
        """``chunk`` ran to its end on ``host`` (or failed there): its records count for that host."""
        chunk.done = True
        chunk.count = chunk.size
        chunk.ended_on = host
        if count:
            stat = self.stats[host]
            stat.chunks += 1
            stat.records += chunk.count
        chunk.release()  # no re-run can need them now

    def _uncount(self, chunk: Chunk) -> None:
        """A chunk counted as ended whose values will not be written (after a failed one): cancelled."""
        if chunk.ended_on is not None and not chunk.cancelled:
            stat = self.stats[chunk.ended_on]
            stat.chunks -= 1
            stat.records -= chunk.count
        chunk.cancelled = True

    def _chunk_done(self, slot: Slot, chunk: Chunk, timed: bool = True) -> None:
        """``chunk`` ended on ``slot`` (``timed``: run to its end, so its time says its host's rate)."""
        if timed and chunk.runs == 1 and chunk.started is not None and chunk.failure is None:
            latency = chunk.first_value - chunk.started if chunk.first_value is not None else 0.0
            with self._cond:  # its host's rate, for the next chunks' sizes
                self.sizer.finished(slot.name, chunk.size, time.monotonic() - chunk.started, latency)
        if self._ordered:
            with self._emit_lock:
                if self._after_failure(chunk):  # its values will never be written
                    self._ended(chunk, slot.name, count=False)
                    chunk.cancelled = True
                    self._held.pop(chunk.number, None)
                else:
                    self._ended(chunk, slot.name)
                    self._finished[chunk.number] = chunk
                    self._advance_head()
        else:
            self._ended(chunk, slot.name)
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def _advance_head(self) -> None:
        """``ordered`` (``_emit_lock`` held): write the held values of the chunks now next in line; once
        the failed chunk is next, its values up to the failure are written and the run ends."""
        while self._head in self._finished:
            del self._finished[self._head]
            self._head += 1
            for held, host, batch in self._held.pop(self._head, []):
                self._emit_now(held, host, batch)
        failed = self.failed_chunk
        if failed is not None and self._head == failed.number:
            for held, host, batch in self._held.pop(self._head, []):
                self._emit_now(held, host, batch)
            self.abort(self._failure or Interrupted())

    def _chunk_failed(self, slot: Slot, chunk: Chunk, exc: BaseException) -> None:
        """The function raised in ``chunk``: it ends there, and nothing after it is run (see the class docstring)."""
        stat = self.stats[slot.name]
        if not self._ordered:
            stat.error = stat.error or exc
            stat.failed += 1
            self.failures.append(Failure(slot.name, exc, chunk))
            if self.failed_chunk is None:
                self.failed_chunk, self.failed_host = chunk, slot.name
            self._ended(chunk, slot.name)
            self.abort(exc)
            with self._cond:
                self._in_flight -= 1
            return
        with self._emit_lock:
            if self._after_failure(chunk):  # a chunk before it failed first: this one is not needed
                self._ended(chunk, slot.name, count=False)
                chunk.cancelled = True
                self._held.pop(chunk.number, None)
            else:
                previous, previous_host = self.failed_chunk, self.failed_host
                if previous is not None:  # it came after this one: as if it never failed
                    self._uncount(previous)
                    for superseded in [f for f in self.failures if f.chunk is previous]:
                        self.failures.remove(superseded)  # in place: other threads append
                    if previous_host is not None:
                        self.stats[previous_host].failed -= 1
                        if self.stats[previous_host].error is self._failure:
                            self.stats[previous_host].error = None
                stat.error = exc
                stat.failed += 1
                self.failures.append(Failure(slot.name, exc, chunk))
                self._ended(chunk, slot.name)
                with self._cond:
                    self.failed_chunk, self.failed_host, self._failure = chunk, slot.name, exc
                for number, later in list(self._finished.items()):
                    if number > chunk.number:
                        self._uncount(later)
                        del self._finished[number]
                for number in [n for n in self._held if n > chunk.number]:
                    del self._held[number]
                for other in self.slots:  # the chunks after it that are running: cancelled
                    running, stream = other.chunk, other.stream
                    if running is not None and running.number > chunk.number:
                        running.cancelled = True  # checked after its call starts, if it has not yet
                        if stream is not None:
                            stream.interrupt(Cancelled())
                self._advance_head()
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def _chunk_failed_going_on(self, slot: Slot, chunk: Chunk, exc: BaseException) -> None:
        """``keep_going``: the function raised in ``chunk``; it ends there, as if done, and the run goes on."""
        self.stats[slot.name].failed += 1
        with self._cond:
            self.chunks_failed += 1
            self.failures.append(Failure(slot.name, exc, chunk))
        if self._on_chunk_failed is not None:
            self._on_chunk_failed(chunk, slot.name, exc)
        self._chunk_done(slot, chunk, timed=False)  # with ``ordered``, its values up to the failure go out in its place

    def _check_stalls(self) -> None:
        """Warn (once per run) about a chunk that has sent no value for ``stall_warning`` seconds while no
        other chunk is left to run: the run now waits for it alone, and the user should know which host."""
        if self.stall_warning is None or self.stop.is_set():
            return
        with self._cond:
            if not self._reading_done or self._pending_records or self._reruns:
                return
        now = time.monotonic()
        for slot in self.slots:
            chunk, hold = slot.chunk, slot.hold
            if hold is not None and not hold.is_set():  # waiting for its turn after the partner's chunk
                continue
            if chunk is None or chunk.stall_reported or chunk.cancelled or now - chunk.progress < self.stall_warning:
                continue
            chunk.stall_reported = True
            self._warn(f"{slot.name}: no value from {chunk.where} for {now - chunk.progress:.0f} s, and no other "
                       "chunk is left to run: the run waits for it (a stalled host or a slow record?)")

    def _chunk_lost(self, slot: Slot, chunk: Chunk, exc: ChunkLost) -> None:
        """The chunk's call was lost on a host that stays usable (a Ray task whose worker died): queue it again."""
        if chunk.runs > self.retries:
            self.stats[slot.name].error = exc
        self.failures.append(Failure(slot.name, exc, chunk, host_failure=True))
        reason = getattr(exc, "reason", None) or exc.message
        self._rerun(slot, chunk, exc, f"{slot.name}: {chunk.where}: {reason}; it runs again", "the cluster")

    def _timed_out(self, slot: Slot, chunk: Chunk, exc: TimedOut) -> None:
        """A chunk attempt ran past its time limit (the worker ended it, or the connection was ended):
        a host failure for ``--strict``; the chunk runs again (the slot stays: a new worker is started
        if the old one was dropped) until its runs are used up, then the run ends with exit 124."""
        self.failures.append(Failure(slot.name, exc, chunk, host_failure=True))
        if chunk.runs > self.retries and not self._after_failure(chunk):
            self.stats[slot.name].error = exc
            exc.hint = (f"it timed out on each of its {plural(chunk.runs, 'run')}; raise --timeout (or --retries); "
                        "values written so far are complete")
            self.abort(exc)
            return
        self._rerun(slot, chunk, exc, f"{exc.message}; it runs again", "the hosts")

    def _host_failed(self, slot: Slot, chunk: Chunk, exc: BaseException) -> None:
        stat = self.stats[slot.name]
        if stat.error is None:
            stat.error = exc
        self.failures.append(Failure(slot.name, exc, chunk, host_failure=True))
        first = not stat.dead
        stat.dead = True
        where = "its unfinished chunk" if first else "another of its chunks"
        self._rerun(slot, chunk, exc, f"{slot.name}: {describe(exc)}; {where} ({chunk.where}) runs again "
                    "on another worker", "the hosts")

    def _rerun(self, slot: Slot, chunk: Chunk, exc: BaseException, warning: str, check: str) -> None:
        """Queue a lost chunk to run again (``warning`` says so), or end everything once its runs are used up."""
        if self._ordered:  # what it held back was never written: it comes again from the re-run
            with self._emit_lock:
                self._held.pop(chunk.number, None)
        if self._after_failure(chunk):  # not needed any more: cancelled, not re-run
            with self._cond:
                self._drop(chunk)
            return
        if chunk.runs > self.retries:
            self.abort(ConnectionLost(f"{chunk.where} failed on every try ({plural(chunk.runs, 'run')}); "
                                      f"last on {slot.name}: {describe(exc)}",
                                      hint=f"values written so far are complete; raise --retries or check {check}"))
            return
        self._warn(warning + (", skipping the values already written" if chunk.written else ""))
        with self._cond:
            self._reruns.append(chunk)
            self._cond.notify_all()


@dataclass
class Totals:
    """A distributed run's counts: the per-host counts summed, plus the chunks cut from
    the input that did not run to their end (cancelled after a failure, or by Ctrl-C)."""

    chunks: int
    records: int
    values: int
    reruns: int
    cancelled_chunks: int
    cancelled_records: int
    #: chunks whose function raised (counted in ``chunks``)
    failed_chunks: int = 0


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 chunk``, ``2 chunks``, ``0 re-runs``."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


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
