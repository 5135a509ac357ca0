"""The pieces a distributed run is made of: chunks of records and their feeds,
the worker slots that run them, the ``Cut`` and ``Result`` marks, and the
allocator setting that keeps a long run's chunk buffers off the heap."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

from ..hosttypes import host_type
from ..remote.flow import LineBatch


def slots_for(profile: Any, jobs: int | None, workers: int) -> int:
    """How many slots (worker processes) a host gets: ``-j``, else its type's answer (the group's
    ``workers``; a ray host's own ``workers:``, chunk tasks in flight)."""
    return jobs or host_type(profile).slots(profile, workers)


@dataclass
class Result:
    """A call's return value, handed to ``emit`` after its yielded values."""

    value: Any


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
        #: set once its current attempt has been handled to its end (the attempt taken after it on the
        #: same worker writes its values after: ``Slot.after``)
        self.handed = threading.Event()

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

    def feed(self, stop: threading.Event) -> ChunkFeed:
        return ChunkFeed(self, stop)


class ChunkFeed:
    """A chunk's records as one call's stream parameter: from the first, as they are read (also
    while the call waits on its worker behind the one before it: they wait there with it)."""

    def __init__(self, chunk: Chunk, stop: threading.Event) -> None:
        self._chunk = chunk
        self._stop = stop
        #: every record of the chunk was handed out (not cut short by ``stop``)
        self.complete = False

    def batches(self) -> Iterator[Any]:
        """The chunk's parts (lists, or ``LineBatch``es) as they come."""
        chunk, at = self._chunk, 0
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
                if chunk.failure is not None:
                    raise chunk.failure
                self.complete = True
                return

    def __iter__(self) -> Iterator[Any]:
        for batch in self.batches():
            yield from (batch.items() if type(batch) is LineBatch else batch)


@dataclass
class Slot:
    """One lane of one worker process on one host (an ``api.Host`` kept open for many calls): a
    thread that runs a chunk at a time. A worker that pipelines has two lanes (``partner``)."""

    host: Any
    name: str
    index: int
    stream: Any = None
    #: the chunk it is running (or whose call waits on the worker behind the partner's)
    chunk: Chunk | None = None
    #: pipelining: the other lane on the same worker (``Distributor(pipeline=)``); while one's chunk
    #: runs, the other starts the next chunk's call, which waits there with its records
    partner: Slot | None = None
    #: 0, or 1 for a worker's second lane: not a worker of its own (read-ahead, end-of-input shares)
    lane: int = 0
    #: its thread has ended (the last lane of a worker closes it)
    done: bool = False
    #: pipelining: the end of the chunk attempt taken before its current one on the same worker
    #: (its values are written after that one's: ``Distributor._run_chunk``)
    after: Any = None

    @property
    def suffix(self) -> str:
        """What its thread's name adds to its worker's: ``-next`` for a second lane."""
        return "-next" if self.lane else ""


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
