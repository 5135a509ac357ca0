"""A stream distributed in chunks over many workers.

The ``Distributor``: records cut into chunks, each chunk one call on one
worker (a ``Slot``), pulled by whichever worker is free and sized for its
host when it is taken (``skyctl.chunking``: ``--chunk auto`` or a fixed
size); a chunk's records are kept until it is done so that when its host
dies it runs again elsewhere (at most ``retries`` times), the worker
dropping the values already written (``skip``): every value is handed on
exactly once, assuming a chunk yields the same values each time it runs.
Each slot pipelines (``Slot.partner``): while its chunk runs, the next chunk is
cut and its call started on the same worker, where it waits with its records
until the current call ends (no gap between chunks).
Its reading half is ``reading.ChunkReading``, its output and failure
bookkeeping ``outcomes.ChunkOutcomes``.

Nothing here writes: values go to the ``emit`` callbacks the caller gives
(the CLI writes rendered lines, the API yields values), warnings to ``warn``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Iterable

from ..chunking import DEFAULT as DEFAULT_CHUNK
from ..chunking import ChunkSizer, pipelining, sizer_for
from ..errors import (BadRecord, Cancelled, ChunkLost, ConnectError, ConnectionLost, ExitStatus, RemoteEnvironmentError,
                      Interrupted, SkyctlError, TimedOut)
from .chunks import Chunk, ChunkFeed, Result, Slot, keep_chunk_buffers_off_the_heap
from .outcomes import ChunkOutcomes
from .reading import ChunkReading
from .stats import Failure, HostStats, Totals, describe

#: failures of a host (or one worker on it), not of the function: its chunks run again elsewhere
HOST_FAILURES = (ConnectError, ConnectionLost, RemoteEnvironmentError)

#: seconds a chunk may send nothing, once the run waits for it alone, before a warning names it
#: (``SKYCTL_STALL_WARNING`` in the CLI)
STALL_WARNING = 30.0


class Distributor(ChunkReading, ChunkOutcomes):
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
        pipeline: each slot whose host ``pipelines`` (its worker takes a second call while one
            runs: not a Ray host's driver) gets a second lane, a thread of its own on the same
            worker: while one lane's chunk runs, the other cuts the next chunk and starts its call,
            whose records stream ahead and wait on the worker; it runs the moment the first ends.
            One function runs per slot at a time; no chunk waits for a round trip and a call's
            set-up. None: unless ``SKYCTL_PIPELINE=0`` (``chunking.pipelining``).
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
                 observer: Any = None, pipeline: bool | None = None) -> None:
        keep_chunk_buffers_off_the_heap()
        slots = list(slots)
        if pipeline if pipeline is not None else pipelining():
            for slot in list(slots):
                if getattr(slot.host, "pipelines", False):  # a second lane on the same worker
                    slot.partner = Slot(slot.host, slot.name, slot.index, partner=slot, lane=1)
                    slots.append(slot.partner)
        self.slots = slots
        self._start = start
        #: decides each chunk's records when a worker takes it (``skyctl.chunking``)
        self.sizer = sizer_for(chunk)
        self.retries = retries
        self.stall_warning = stall_warning
        self.keep_going = keep_going
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
        #: per worker (its ``Host``), the end of the chunk attempt taken last on it (``_take``)
        self._worker_tail: dict[int, threading.Event] = {}
        self._start_reading(source, lines)
        self._start_output(emit, ordered, warn, chunk_failed)
        self._reruns: deque[Chunk] = deque()
        self._in_flight = 0
        #: set on a fatal error or a cancel: everything winds down
        self.stop = threading.Event()
        self.error: BaseException | None = None
        #: a bad record ended the input (exit 65 once the chunks before it are done)
        self.bad_record: BaseException | None = None
        self._live = len(slots)
        #: live workers (a slot's second lane is not one of its own)
        self._workers = sum(1 for slot in slots if slot.lane == 0)

    # -- the run ---------------------------------------------------------------
    def run(self) -> None:
        """Until every chunk is done, a fatal error, or Ctrl-C (re-raised after every call is cancelled)."""
        reader = threading.Thread(target=self._read, name="skyctl-chunk-reader", daemon=True)
        workers = [threading.Thread(target=self._work, args=(slot,), name=f"skyctl-slot-{slot.name}-{slot.index}{slot.suffix}",
                                    daemon=True) for slot in self.slots]
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

    # -- the workers -----------------------------------------------------------
    def _take(self, slot: Slot) -> Chunk | None:
        """The next chunk for ``slot`` (a re-run first), or None when the run is over for it. A lane
        takes one while its partner's chunk runs only once that chunk has all its records and its
        call has started: the calls reach the worker in the order of their chunks, and a re-run
        does not wait behind a chunk still read from stdin when another slot could run it."""
        with self._cond:
            while True:
                if self.stop.is_set() or self.stats[slot.name].dead:
                    return None
                partner = slot.partner
                if partner is not None and partner.chunk is not None and (
                        not partner.chunk.closed or partner.stream is None):
                    self._cond.wait(0.5)  # woken when it closes or its call starts
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
                    slot.chunk = chunk
                    # this attempt's end, and the end of the attempt taken before it on the same worker
                    # (the other lane's, or this one's): its values are written after that one's
                    chunk.handed = threading.Event()
                    slot.after = self._worker_tail.get(id(slot.host))
                    self._worker_tail[id(slot.host)] = chunk.handed
                    return chunk
                if self._reading_done and self._in_flight == 0:
                    return None
                self._cond.wait()

    def _work(self, slot: Slot) -> None:
        stat = self.stats[slot.name]
        last = True
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
                if slot.lane == 0:
                    self._workers -= 1
                slot.done = True
                last = slot.partner is None or slot.partner.done  # the worker is shared by the lanes
                left = self._live
                self._cond.notify_all()
            if not left and not self.stop.is_set() and not self._all_done():
                self.abort(self._no_workers_left())
            if last:
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
        """Run one chunk on ``slot``; False when the slot is done for (its host failed, or a fatal error).
        Its values are handed on only once the attempt taken before it on the same worker has ended
        (``slot.after``): the worker sent that chunk's values first, so they are written first."""
        handed = chunk.handed  # this attempt's (``_take``), for the chunk behind it on the worker
        try:
            return self._attempt(slot, chunk)
        finally:
            handed.set()

    def _attempt(self, slot: Slot, chunk: Chunk) -> bool:
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
            feed = chunk.feed(self.stop)
            ahead = slot.after  # set already unless the other lane's chunk is still being handed on
            stream = self._start(slot, feed, chunk.written)
            stat.connected = True
            with self._cond:
                slot.stream = stream
                self._cond.notify_all()  # the other lane may start the next chunk's call now
            if self.stop.is_set() or chunk.cancelled:
                stream.interrupt(Cancelled() if chunk.cancelled else Interrupted())
            if rerun:
                stat.reruns += 1
            for batch in stream.batches():
                if ahead is not None:  # the chunk ahead has ended on the worker (its values came first)
                    ahead.wait()  # and is handed on in a moment by its own lane
                    ahead = None
                self._hand_on(chunk, slot.name, batch)
            if not rerun:  # a call queued behind another runs from when that one ended (its host's rate)
                chunk.started = max(chunk.started or 0.0, getattr(stream, "started_at", 0.0))
            if stream.result is not None and not chunk.result_written:
                if ahead is not None:
                    ahead.wait()
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
            if stream is None or getattr(stream, "queued", False):
                chunk.runs -= 1  # it never ran there (or waited behind the call before it)
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
                self._cond.notify_all()
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
            chunk, stream = slot.chunk, slot.stream
            if getattr(stream, "queued", False):  # waiting for its turn behind the other lane's chunk
                continue
            since = max(chunk.progress, getattr(stream, "started_at", 0.0)) if chunk is not None else now
            if chunk is None or chunk.stall_reported or chunk.cancelled or now - since < self.stall_warning:
                continue
            chunk.stall_reported = True
            self._warn(f"{slot.name}: no value from {chunk.where} for {now - since:.0f} s, and no other "
                       "chunk is left to run: the run waits for it (a stalled host or a slow record?)")
