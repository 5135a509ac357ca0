"""The Distributor's bookkeeping of how each chunk ends: values handed on (held back and
released in input order with ``ordered``), chunks counted, failures recorded, and lost
chunks queued to run again or the run ended once their runs are used up."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable

from ..chunking import ChunkSizer
from ..errors import Cancelled, ChunkLost, ConnectionLost, Interrupted, SkyctlError, TimedOut
from .chunks import Chunk, Result, Slot
from .stats import Failure, HostStats, describe, plural


class ChunkOutcomes:
    """``Distributor``'s output and failure policy: ``_hand_on`` (ordered output), ``_chunk_done``,
    ``_chunk_failed`` (and ``keep_going``), ``_chunk_lost``/``_timed_out``/``_host_failed`` → ``_rerun``."""

    #: the Distributor's own state, which the output half uses
    slots: list[Slot]
    stats: dict[str, HostStats]
    sizer: ChunkSizer
    retries: int
    failures: list[Failure]
    chunks_failed: int
    failed_chunk: Chunk | None
    failed_host: str | None
    stop: threading.Event
    _failure: BaseException | None
    _cond: threading.Condition
    _reruns: deque[Chunk]
    _in_flight: int
    abort: Callable[[BaseException], None]

    def _start_output(self, emit: Callable[[Chunk, str, Any], None], ordered: bool, warn: Callable[[str], None],
                      chunk_failed: Callable[[Chunk, str, BaseException], None] | None) -> None:
        """Where values, warnings and ``keep_going``'s failed chunks go, before the run starts."""
        self._emit = emit
        self._ordered = ordered
        self._warn = warn
        self._on_chunk_failed = chunk_failed
        # --keep-order: the chunk whose values go out live, and what later chunks hold meanwhile
        self._head = 0
        self._held: dict[int, list[tuple[Chunk, str, Any]]] = {}
        #: chunks run to their end whose values wait for the chunks before them
        self._finished: dict[int, Chunk] = {}
        self._emit_lock = threading.Lock()

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
