"""``pipe`` on a group (or with ``-j``, or on a ray host): chunks of stdin over every worker, a summary
line per host and the totals; with ``--joblog``, the long run that logs and resumes the chunks."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import ExitStatus, RemoteError, SkyctlError, UsageError
from ..render import Stderr, ValueWriter, error_lines
from ..trust import escape_controls
from .group import as_output, host_for, report_hosts
from .state import Terminated, terminated, track
from .stdout import silence_stdout, when_stdout_reader_leaves


def distribute(fn: Any, kwargs: dict[str, Any], name: str, reader: Any, group: Any, config: Path | None,
               no_reuse: bool, output: str, stderr: Stderr, *, jobs: int | None, chunk: Any, keep_order: bool,
               tag: bool, retries: int, quiet: bool, fraction: Callable[[], float | None] | None = None,
               keep_going: bool = False, strict: bool = False, long_run: Any = None) -> int:
    """Run the distributed pipe; returns its exit status (a fatal error, e.g. a bad record, is raised).

    ``chunk``: a ``skyctl.chunking`` sizer (or, with ``long_run``, the job log's lines per chunk).
    ``long_run`` (``--joblog``): a ``joblog.LongRun`` cuts the chunks, logs them and holds each one's values
    until it ends."""
    from ..api import start_call
    from ..many import Distributor, Slot, describe, exit_status_of, plural, slots_for

    env = stderr.env
    writer = ValueWriter(env.stdout, output, guard=stderr.guard_for(env.stdout))
    slots = [Slot(host_for(p, config, no_reuse, stderr), p.name, i) for p in group.profiles
             for i in range(slots_for(p, jobs, group.workers))]

    def emit(chunk: Any, host: str, batch: Any) -> None:
        writer.write_batch(as_output(batch, host, output, tag))

    def start(slot: Slot, feed: Any, skip: int) -> Any:
        return start_call(slot.host, fn, (), {**kwargs, name: feed}, stream=name, render=output, skip=skip,
                          queue=True)

    def chunk_failed(chunk: Any, host: str, error: BaseException) -> None:  # --keep-going: reported now, the run goes on
        if isinstance(error, RemoteError):
            stderr.remote_text_for(host, error.traceback_text)
        stderr.warn(f"{host}: {chunk.where} failed ({escape_controls(describe(error))}); "
                    "the other chunks go on (--keep-going)")

    more = dict(warn=stderr.warn, lines=lambda: reader.lines_span, stall_warning=stall_warning(),
                keep_going=keep_going, chunk_failed=chunk_failed)
    if long_run is None:
        distributor = Distributor(slots, start, reader.batches(), emit, chunk=chunk, retries=retries,
                                  ordered=keep_order, **more)
    else:
        distributor = long_run.distributor(slots, start, reader, lambda b, h: as_output(b, h, output, tag),
                                           retries=retries, **more)
    track("distributed", distributor.stats.values, totals=distributor.totals, failures=lambda: distributor.failures,
          stopped=distributor.stop.is_set)
    stderr.phase(f"running on {len(slots)} workers")
    stderr.watch(lambda: (sum(s.records for s in distributor.stats.values()), writer.written),
                 lambda: ", ".join(f"{s.name} {s.chunks}{'✗' if s.dead else ''}" for s in distributor.stats.values()) + " chunks",
                 records=True, chunks=lambda: sum(s.chunks for s in list(distributor.stats.values())), fraction=fraction)
    when_stdout_reader_leaves(env.stdout, lambda: distributor.abort(BrokenPipeError()))
    try:
        distributor.run()
    except KeyboardInterrupt:
        stderr.stop()
        return ExitStatus.INTERRUPTED
    if isinstance(distributor.error, BrokenPipeError):
        silence_stdout()
        return ExitStatus.OK
    error = distributor.error
    status = distributor.exit_status
    failed = distributor.failed_chunk
    first = distributor.first_failure
    strict_status = exit_status_of(first.error) if strict and first is not None else status

    def where(stat: Any) -> str | None:
        if failed is not None and stat.name == distributor.failed_host and stat.error is not None:
            return f"in {failed.where}"
        own = [f for f in distributor.failures if f.host == stat.name and f.chunk is not None and not f.host_failure]
        if keep_going and own:
            return f"first in {own[0].chunk.where}"  # type: ignore[union-attr]
        return None

    report_hosts(stderr, distributor.stats.values(), show=bool(status or strict_status) or not quiet,
                 parts=lambda s: [plural(s.chunks, "chunk"), plural(s.records, "record") + " in",
                                  plural(s.values, "value") + " out", plural(s.reruns, "re-run"), f"{s.seconds:.2f} s"],
                 where=where, totals=totals_line(distributor.totals(), keep_going) if len(distributor.stats) > 1 else None)
    fatal = error if isinstance(error, SkyctlError) and not isinstance(error, RemoteError) else None
    if error is None and distributor.bad_record is not None:
        fatal = distributor.bad_record
    if first is not None and strict_status != status:
        stderr.write(error_lines(SkyctlError(
            f"--strict: {first.host} failed first ({describe(first.error)}); exit {strict_status}",
            hint=None if status else "the run recovered and its output is complete; without --strict it exits 0"),
            stderr.env.colour))
        status = strict_status
        if fatal is not None:
            fatal.exit_status = strict_status  # type: ignore[misc] # main exits with this one's status
    if fatal is not None:
        raise fatal
    return status


def totals_line(totals: Any, failed: bool = False) -> str:
    """The distributed summary's last line: the per-host counts summed, what was cancelled, and
    (``failed``: ``--keep-going``) the chunks whose function raised."""
    from ..many import plural

    line = (f"total: {plural(totals.chunks, 'chunk')}, {plural(totals.records, 'record')} in, "
            f"{plural(totals.values, 'value')} out, {plural(totals.reruns, 're-run')}")
    if failed and totals.failed_chunks:
        line += f"; failed: {plural(totals.failed_chunks, 'chunk')} (the function raised)"
    if totals.cancelled_chunks:
        line += (f"; cancelled: {plural(totals.cancelled_chunks, 'chunk')}, "
                 f"{plural(totals.cancelled_records, 'record')} (not run to their end)")
    return line


def stall_warning() -> float | None:
    """Seconds before a chunk the run waits for alone is named in a warning: ``SKYCTL_STALL_WARNING``
    (0 or less: never), else ``many.STALL_WARNING``."""
    from ..many import STALL_WARNING

    text = os.environ.get("SKYCTL_STALL_WARNING", "").strip()
    try:
        seconds = float(text) if text else STALL_WARNING
    except ValueError:
        raise UsageError(f"SKYCTL_STALL_WARNING={text!r} is not a number of seconds",
                         hint="set it to e.g. 30, or unset it") from None
    return seconds if seconds > 0 else None


@contextlib.contextmanager
def long_run(joblog: Path, results: Path | None, resume: bool, resume_failed: bool, header: dict[str, Any],
             output: str, keep_order: bool, stderr: Stderr) -> Iterator[Any]:
    """A ``pipe --joblog`` run's ``joblog.LongRun`` (the log locked, FILE opened); Ctrl-C and SIGTERM (``cli.main``
    raises ``Terminated`` for it) log the chunks in flight ``interrupted``; at the end, the log's last line and the
    lock released."""
    from ..joblog import LongRun
    from ..remote.flow import Rendered

    stdout = ValueWriter(stderr.env.stdout, output, guard=stderr.guard_for(stderr.env.stdout))

    def to_stdout(spool: Any, entry: dict[str, Any]) -> None:
        spool.file.seek(0)
        while data := spool.file.read(1 << 20):
            stdout.write_batch(Rendered(data, data.count(b"\n")))

    run = LongRun(joblog, results, resume=resume, resume_failed=resume_failed, header=header, ordered=keep_order,
                  make_writer=lambda text: ValueWriter(text, output), to_stdout=to_stdout, warn=stderr.warn)
    status: int | None = None
    try:
        yield run
        status = run.exit_status
    except SkyctlError as err:
        status = int(err.exit_status)
        raise
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (``Terminated``): the chunks in flight were logged
        status = 128 + signal.SIGTERM if isinstance(exc, Terminated) else int(ExitStatus.INTERRUPTED)
        raise
    finally:
        if terminated() and status == ExitStatus.INTERRUPTED:  # SIGTERM ended it, caught as Ctrl-C below
            status = 128 + signal.SIGTERM
        run.finish(status)
