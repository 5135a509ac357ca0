"""Many hosts at once: a broadcast call, and a stream distributed in chunks.

- ``broadcast``: the same call on every host of a group, concurrently; each
  host's values are handed on as they arrive, tagged with the host.
- ``Distributor``: records cut into chunks of ``chunk`` records, each chunk
  one call on one worker (a ``Slot``), pulled by whichever worker is free; a
  chunk's records are kept until it is done so that when its host dies it
  runs again elsewhere (at most ``retries`` times), the worker dropping the
  values already written (``skip``): every value is handed on exactly once,
  assuming a chunk yields the same values each time it runs.

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
                     SkyctlError)
from .flow import LineBatch

#: failures of a host (or one worker on it), not of the function: its chunks run again elsewhere
HOST_FAILURES = (ConnectError, ConnectionLost, RemoteEnvironmentError)


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

    @property
    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    @property
    def status(self) -> int:
        if self.error is None:
            return ExitStatus.OK
        if isinstance(self.error, SkyctlError):
            return int(self.error.exit_status)
        if isinstance(self.error, (KeyboardInterrupt, Interrupted)):
            return ExitStatus.INTERRUPTED
        return ExitStatus.REMOTE_RAISED


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

    def cancel_all(reason: BaseException) -> None:
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
                raise Interrupted()
            stream = start(host)
            stat.connected = True
            with lock:
                streams[host.label] = stream
            if cancelled.is_set():
                stream.interrupt(Interrupted())
            for batch in stream.batches():
                stat.values += len(batch)
                emit(host.label, batch)
            if stream.result is not None:
                stat.values += 1
                emit(host.label, Result(stream.result))
        except BaseException as exc:  # noqa: BLE001 - every way a host ends is reported, none escapes the thread
            stat.error = exc
            if isinstance(exc, (Interrupted, KeyboardInterrupt)) and stream is not None:
                stream.close()  # the remote generator's finally runs
            if fail_fast and not isinstance(exc, (Interrupted, KeyboardInterrupt)):
                cancel_all(Interrupted())
        finally:
            stat.ended = time.monotonic()
            try:
                host.close()
            except BaseException:  # noqa: BLE001
                pass

    threads = [threading.Thread(target=one, args=(i, h), name=f"host-{h.label}", daemon=True) for i, h in enumerate(hosts)]
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
    """In a Distributor's source: the chunk being filled ends here; ``about``
    (when not None) describes the chunk whose records come next, and becomes
    its ``Chunk.about``. A source with cuts decides the chunk boundaries."""

    about: Any = None


class Chunk:
    """Up to ``size`` consecutive records, filled as they are read; one call per run."""

    def __init__(self, number: int, about: Any = None) -> None:
        self.number = number
        #: what the source's ``Cut`` said of this chunk (a job log's ``ChunkInput``)
        self.about = about
        self.records: list[Any] = []
        self.closed = False
        #: the input broke after these records (a bad record)
        self.failure: BaseException | None = None
        self.cond = threading.Condition()
        #: runs started, and values handed on so far (a re-run skips those)
        self.runs = 0
        self.written = 0
        self.result_written = False
        self.done = False

    def append(self, records: list[Any], full: bool) -> None:
        with self.cond:
            self.records.extend(records)
            self.closed = self.closed or full
            self.cond.notify_all()

    def close(self, failure: BaseException | None = None) -> None:
        with self.cond:
            self.closed = True
            self.failure = failure
            self.cond.notify_all()

    def feed(self, stop: threading.Event) -> ChunkFeed:
        return ChunkFeed(self, stop)


class ChunkFeed:
    """A chunk's records as one call's stream parameter: from the first, as they are read."""

    def __init__(self, chunk: Chunk, stop: threading.Event) -> None:
        self._chunk = chunk
        self._stop = stop
        #: every record of the chunk was handed out (not cut short by ``stop``)
        self.complete = False

    def batches(self) -> Iterator[list[Any]]:
        chunk, at = self._chunk, 0
        while True:
            with chunk.cond:
                while at == len(chunk.records) and not chunk.closed and not self._stop.is_set():
                    chunk.cond.wait(0.5)
                new = chunk.records[at:]
                closed = chunk.closed
            at += len(new)
            if new:
                yield new
            if self._stop.is_set():
                return
            if closed and at == len(chunk.records):
                if chunk.failure is not None:
                    raise chunk.failure
                self.complete = True
                return

    def __iter__(self) -> Iterator[Any]:
        for batch in self.batches():
            yield from batch


@dataclass
class Slot:
    """One worker process on one host: an ``api.Host`` kept open for many calls."""

    host: Any
    name: str
    index: int
    stream: Any = None


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
        source: batches of records (lists, or ``LineBatch``es), as they are read.
        emit: ``emit(chunk, host, batch)`` for values, ``emit(chunk, host, Result(v))``
            for a return value; returns once they are handed on (the caller counts them).
        chunk: records per chunk; ``retries``: re-runs of a chunk whose host failed.
        ordered: ``emit`` each chunk's values only after every value of the chunks before it.
        warn: one line for stderr.
        observer: told of each chunk attempt: ``started(chunk, host)``, and
            ``ended(chunk, host, status, error)`` with status ``ok``, ``failed``,
            ``lost`` or ``interrupted`` (a job log). With an observer, which
            holds a chunk's values until it ends, a re-run starts from zero.
    """

    def __init__(self, slots: list[Slot], start: Callable[[Slot, ChunkFeed, int], Any],
                 source: Iterable[Any], emit: Callable[[Chunk, str, Any], None], *, chunk: int = 1000,
                 retries: int = 3, ordered: bool = False, warn: Callable[[str], None] = lambda m: None,
                 observer: Any = None) -> None:
        keep_chunk_buffers_off_the_heap()
        self.slots = slots
        self._start = start
        self._source = source
        self._emit = emit
        self.chunk_size = max(1, chunk)
        self.retries = retries
        self._ordered = ordered
        self._warn = warn
        self._observer = observer
        self._about: Any = None
        self.stats: dict[str, HostStats] = {}
        for slot in slots:
            self.stats.setdefault(slot.name, HostStats(slot.name))
        self._cond = threading.Condition()
        self._queue: deque[Chunk] = deque()
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
        # --keep-order: the chunk whose values go out live, and what later chunks hold meanwhile
        self._head = 0
        self._held: dict[int, list[tuple[Chunk, str, Any]]] = {}
        self._finished: set[int] = set()
        self._emit_lock = threading.Lock()

    # -- the run ---------------------------------------------------------------
    def run(self) -> None:
        """Until every chunk is done, a fatal error, or Ctrl-C (re-raised after every call is cancelled)."""
        reader = threading.Thread(target=self._read, name="chunk-reader", daemon=True)
        workers = [threading.Thread(target=self._work, args=(slot,), name=f"slot-{slot.name}-{slot.index}", daemon=True)
                   for slot in self.slots]
        reader.start()
        for i, thread in enumerate(workers):
            thread.start()
        try:
            for thread in workers:
                while thread.is_alive():
                    thread.join(0.2)
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
        if self.bad_record is not None:
            return ExitStatus.BAD_RECORD
        return ExitStatus.OK

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

    # -- reading ---------------------------------------------------------------
    def _read(self) -> None:
        try:
            for batch in self._source:
                if type(batch) is Cut:
                    if self._current is not None:
                        self._current.close()
                        self._current = None
                    self._about = batch.about
                    continue
                records = batch.items() if type(batch) is LineBatch else batch
                at = 0
                while at < len(records):
                    chunk = self._current or self._new_chunk()
                    if chunk is None:
                        return
                    room = self.chunk_size - len(chunk.records)
                    part = records[at:at + room] if at or room < len(records) else records
                    full = len(chunk.records) + len(part) >= self.chunk_size
                    chunk.append(part, full)
                    if full:
                        self._current = None
                    at += len(part)
            if self._current is not None:
                self._current.close()
        except BadRecord as exc:
            self.bad_record = exc
            if self._current is not None:
                self._current.close(exc)
        except BaseException as exc:  # noqa: BLE001 - stdin failed
            if self._current is not None:
                self._current.close()
            self.abort(exc)
        finally:
            self._current = None
            with self._cond:
                self._reading_done = True
                self._cond.notify_all()

    def _new_chunk(self) -> Chunk | None:
        """A new chunk, queued at once (its call starts with its first record), once
        fewer than two per live worker are in flight; None when stopping."""
        with self._cond:
            while not self.stop.is_set() and self._in_flight >= 2 * max(1, self._live):
                self._cond.wait()
            if self.stop.is_set():
                return None
            chunk = Chunk(self._chunks, self._about)
            self._chunks += 1
            self._in_flight += 1
            self._queue.append(chunk)
            self._cond.notify_all()
        self._current = chunk
        return chunk

    # -- the workers -----------------------------------------------------------
    def _take(self, slot: Slot) -> Chunk | None:
        with self._cond:
            while True:
                if self.stop.is_set() or self.stats[slot.name].dead:
                    return None
                if self._reruns:
                    return self._reruns.popleft()
                if self._queue:
                    return self._queue.popleft()
                if self._reading_done and self._in_flight == 0:
                    return None
                self._cond.wait()

    def _work(self, slot: Slot) -> None:
        stat = self.stats[slot.name]
        try:
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
                left = self._live
                self._cond.notify_all()
            if not left and not self.stop.is_set() and not self._all_done():
                self.abort(self._no_workers_left())
            try:
                slot.host.close()
            except BaseException:  # noqa: BLE001
                pass
            stat.ended = time.monotonic()

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
            if self._observer is not None:
                chunk.written, chunk.result_written = 0, False
                self._observer.started(chunk, slot.name)
            feed = chunk.feed(self.stop)
            stream = self._start(slot, feed, chunk.written)
            stat.connected = True
            slot.stream = stream
            if self.stop.is_set():
                stream.interrupt(Interrupted())
            if rerun:
                stat.reruns += 1
            for batch in stream.batches():
                self._hand_on(chunk, slot.name, batch)
            if stream.result is not None and not chunk.result_written:
                chunk.result_written = True
                self._hand_on(chunk, slot.name, Result(stream.result))
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
            return False
        except BaseException as exc:  # noqa: BLE001 - the function raised (RemoteError, or a refused value)
            self._observe(chunk, slot, "failed", exc)
            stat.error = exc
            self.abort(exc)
            if stream is not None:
                stream.close()
            return False
        finally:
            slot.stream = None
        # a call that ended because stopping cut its input short is not a whole chunk
        self._observe(chunk, slot, "ok" if feed.complete or not self.stop.is_set() else "interrupted", None)
        self._chunk_done(slot, chunk)
        return True

    def _observe(self, chunk: Chunk, slot: Slot, status: str, error: BaseException | None) -> None:
        """Tell the observer how the chunk's attempt ended; an observer that fails (its file) stops the run."""
        if self._observer is None:
            return
        try:
            self._observer.ended(chunk, slot.name, status, error)
        except Exception as exc:  # noqa: BLE001 - e.g. the job log's disk is full
            self.abort(exc)

    def _hand_on(self, chunk: Chunk, host: str, batch: Any) -> None:
        with self._emit_lock:
            if not self._ordered or chunk.number == self._head:
                self._emit_now(chunk, host, batch)
            else:
                self._held.setdefault(chunk.number, []).append((chunk, host, batch))

    def _emit_now(self, chunk: Chunk, host: str, batch: Any) -> None:
        """Hand ``batch`` on and count it as written (``_emit_lock`` held)."""
        count = 1 if type(batch) is Result else len(batch)
        try:
            self._emit(chunk, host, batch)
        except Exception as exc:  # the output is gone (a closed pipe): everything stops
            self.abort(exc)
            raise Interrupted() from exc
        chunk.written += count
        self.stats[host].values += count

    def _chunk_done(self, slot: Slot, chunk: Chunk) -> None:
        stat = self.stats[slot.name]
        stat.chunks += 1
        stat.records += len(chunk.records)
        chunk.done = True
        if self._ordered:
            with self._emit_lock:
                self._finished.add(chunk.number)
                while self._head in self._finished:
                    self._head += 1
                    for held, host, batch in self._held.pop(self._head, []):
                        self._emit_now(held, host, batch)
        chunk.records = []  # no re-run can need them now
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def _chunk_lost(self, slot: Slot, chunk: Chunk, exc: ChunkLost) -> None:
        """The chunk's call was lost on a host that stays usable (a Ray task whose worker died): queue it again."""
        if chunk.runs > self.retries:
            self.stats[slot.name].error = exc
        reason = getattr(exc, "reason", None) or exc.message
        self._rerun(slot, chunk, exc, f"{slot.name}: chunk {chunk.number + 1}: {reason}; it runs again", "the cluster")

    def _host_failed(self, slot: Slot, chunk: Chunk, exc: BaseException) -> None:
        stat = self.stats[slot.name]
        if stat.error is None:
            stat.error = exc
        first = not stat.dead
        stat.dead = True
        where = "its unfinished chunk" if first else "another of its chunks"
        self._rerun(slot, chunk, exc, f"{slot.name}: {describe(exc)}; {where} (chunk {chunk.number + 1}) runs again "
                    "on another worker", "the hosts")

    def _rerun(self, slot: Slot, chunk: Chunk, exc: BaseException, warning: str, check: str) -> None:
        """Queue a lost chunk to run again (``warning`` says so), or end everything once its runs are used up."""
        if self._ordered:  # what it held back was never written: it comes again from the re-run
            with self._emit_lock:
                self._held.pop(chunk.number, None)
        if chunk.runs > self.retries:
            self.abort(ConnectionLost(f"chunk {chunk.number + 1} failed on every try ({chunk.runs} runs); "
                                      f"last on {slot.name}: {describe(exc)}",
                                      hint=f"values written so far are complete; raise --retries or check {check}"))
            return
        self._warn(warning + (", skipping the values already written" if chunk.written else ""))
        with self._cond:
            self._reruns.append(chunk)
            self._cond.notify_all()
