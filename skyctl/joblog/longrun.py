"""``LongRun``: one distributed ``pipe --joblog`` (or ``pool.map(joblog=...)``) run, wiring the job log,
the resume plan, the cutter and the results writer to the Distributor.

Why apart: ``many.Distributor`` only calls an observer at each chunk attempt's start and
end and follows the ``many.Cut`` marks of its source; this is that observer, and the only
module here that knows the Distributor.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable

from ..errors import ExitStatus
from .cutter import ChunkInput, chunked_items, chunked_source
from .log import VERSION, JobLog, JobLogError, error_text, exit_of, now, ordered_entry, status_of
from .resume import ResumePlan, check_same_settings, plan_resume
from .results import Blocks, Spool, open_results, pause_for_test, pause_point


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
                check_same_settings(plan.header, header)
            elif plan.done:
                raise JobLogError(f"the job log {joblog} has no header line", hint="start over without --resume")
            self.done = plan.done
            if results is not None:
                self._results_file = open_results(results, resume_end=plan.results_end if resume else None)
            self.log.write({"joblog": VERSION, **header, "start": now(), "resume": resume,
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
        """The run's ``many.Distributor``: chunks cut by ``reader``'s ``CutStream`` (or, for the API, ``reader``
        is an iterable of items, cut every ``chunk`` items), values held here; ``shape(batch, host)`` makes a
        batch what is held (the CLI: the lines to write, tagged or not)."""
        from ..many.chunks import Cut, Result
        from ..many.distributor import Distributor

        def emit(chunk: Any, host: str, batch: Any) -> None:
            self.emit(chunk, shape(batch, host), 1 if type(batch) is Result else len(batch))

        if hasattr(reader, "batches"):
            source = chunked_source(reader.batches(), reader.stream, done=self.done, on_chunk=self.on_chunk,
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
            entry = {**chunk.entry(), "host": None, "attempt": 0, "start": now(), "seconds": 0.0, "values": 0,
                     "status": "ok", "exit": 0}
            self.blocks.finished(-1 - chunk.number, chunk.number, ordered_entry(entry))
        if chunk.number >= self._last_done:
            self.blocks.open_gate()

    def _commit_failed(self, error: BaseException) -> None:
        distributor = getattr(self, "_distributor", None)
        if distributor is not None:
            distributor.abort(error)

    def on_bad(self, chunk: ChunkInput, error: BaseException) -> None:
        """A bad record ended the input in a chunk that never ran: logged ``failed`` (exit 65)."""
        entry = {**chunk.entry(), "last_line": None, "sha256": None, "host": None, "attempt": 0, "start": now(),
                 "seconds": 0.0, "values": 0, "status": "failed", "exit": exit_of(error, "failed"),
                 "error": error_text(error)}
        self.log.write(ordered_entry(entry))
        self.blocks.failed(-1 - chunk.number, chunk.number)

    # the Distributor's observer
    def started(self, chunk: Any, host: str) -> None:
        self.blocks.restart(chunk.number)
        self._started[chunk.number] = (time.monotonic(), now())

    def ended(self, chunk: Any, host: str, status: str, error: BaseException | None) -> None:
        about: ChunkInput | None = chunk.about
        began, start = self._started.pop(chunk.number, (time.monotonic(), now()))
        status = status_of(error, status)
        spool = self.blocks.spool(chunk.number)
        entry = {**(about.entry() if about is not None else {}), "records": chunk.size, "host": host,
                 "attempt": chunk.runs, "start": start, "seconds": round(time.monotonic() - began, 3),
                 "values": spool.values, "status": status, "exit": exit_of(error, status)}
        if about is not None and not about.sha256:
            entry["last_line"] = entry["sha256"] = None  # cut short before its input was all read
        if error is not None and status != "ok":
            entry["error"] = error_text(error)
        entry = ordered_entry(entry)
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
            pause = pause_point()
            if pause is not None and pause[0] == "at-end":
                pause_for_test(pause[2], {"committed": self.blocks.committed})
            for _, entry in self.blocks.held():
                entry["status"], entry["exit"] = "interrupted", int(ExitStatus.INTERRUPTED)
                self.log.write(entry)
            self.blocks.close()
            self.log.write({"end": now(), "seconds": round(time.monotonic() - self._wall, 3), "exit": exit_status,
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
