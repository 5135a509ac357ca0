"""The ``skyctl`` command: parse, call the core, render. Nothing else.

``main()`` is the only place where exceptions become an exit status and a
one-line message (with ``--verbose`` or ``SKYCTL_DEBUG=1`` it re-raises).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import typer

from . import __version__
from .errors import BadRecord, ExitStatus, RemoteError, SkyctlError, UsageError
from .render import Env, Stderr, ValueWriter, error_lines
from .trust import escape_controls

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Ship a Python function to a machine over SSH and stream with it.",
)


class Output(str, Enum):
    text = "text"
    json = "json"


class Format(str, Enum):
    lines = "lines"
    csv = "csv"
    tsv = "tsv"
    jsonl = "jsonl"


class OnBadLine(str, Enum):
    fail = "fail"
    skip = "skip"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"skyctl {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """Ship a Python function to a machine over SSH and stream with it."""


TargetArg = typer.Argument(..., metavar="TARGET", help="path/to/file.py:NAME or package.module:NAME")
ArgOpt = typer.Option([], "--arg", "-a", metavar="NAME=VALUE", help="An argument, coerced by the parameter's annotation.")
HostOpt = typer.Option(None, "--host", "-H", help="Host profile, group, a,b list, or user@host[:port] (default: $SKYCTL_HOST, else the config's default).")
ConfigOpt = typer.Option(None, "--config", "-c", help="Config file (default: $SKYCTL_CONFIG, ./skyward.yaml, ~/.config/skyctl/skyward.yaml).")
OutputOpt = typer.Option(Output.text, "--output", "-o", help="How values are written to stdout.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No status line.")
NoReuseOpt = typer.Option(False, "--no-reuse", help="Do not keep or use a kept SSH connection.")
ProgressOpt = typer.Option(None, "--progress", min=0.01, metavar="[=SECONDS]",
                           help="Without a live status line (a log, CI): a progress line on stderr every SECONDS "
                                "(--progress alone: 30; give a value as --progress=5).")
KeepGoingOpt = typer.Option(False, "--keep-going", help="Group pipe: a chunk whose function raises is reported and the "
                            "others go on; exit 1 at the end. (A broadcast always runs every host to its end.)")
StrictOpt = typer.Option(False, "--strict", help="Any host failure, even one the run recovered from, makes the exit "
                         "status that of the first failure (after all output is written).")
ReportOpt = typer.Option(None, "--report", metavar="FILE", help="Write a JSON report of the run and each host at the "
                         "end (also after a failure or Ctrl-C); - is stderr.")
JunitOpt = typer.Option(None, "--junit", metavar="FILE", help="Write JUnit XML at the end: one test case per host.")
TimeoutOpt = typer.Option(None, "--timeout", metavar="DURATION", help="End a call running longer (90, 30s, 5m, 2h; per "
                          "host of a group, per chunk attempt of a pipe, which then runs again): exit 124. "
                          "Default: $SKYCTL_TIMEOUT, else the profile's timeout:.")
IdleTimeoutOpt = typer.Option(None, "--idle-timeout", metavar="DURATION", help="End a call that sends no value and "
                              "takes no record for DURATION (a stalled worker or function): exit 124. Off by default.")

#: ``--timeout``/``--idle-timeout`` of this command, given to every ``Host`` it makes
_time_limits: dict[str, Any] = {}


def _set_time_limits(timeout: str | None, idle_timeout: str | None) -> None:
    """Check the flags now (exit 2 for a bad duration); every host of the command gets them."""
    from .api import duration_limit

    _time_limits.update(timeout=duration_limit(timeout, "--timeout"), idle_timeout=duration_limit(idle_timeout, "--idle-timeout"),
                        limit_names=("--timeout", "--idle-timeout"))
    for name in ("SKYCTL_TIMEOUT", "SKYCTL_IDLE_TIMEOUT"):  # checked now too, not at the first chunk's call
        duration_limit(os.environ.get(name, "").strip() or None, name)

#: the command line as given (for the report), and the current command's account (``--report``/``--junit``),
#: written by ``main`` once the exit status is known
_argv: list[str] = []
_account: Any = None


def _open_account(command: str, report: str | None, junit: str | None) -> None:
    """Start this command's account if ``--report`` or ``--junit`` asks for one (their paths checked now)."""
    global _account
    if report is not None or junit is not None:
        from .report import RunAccount

        _account = RunAccount(command, ["skyctl", *_argv], report, junit)


def _track(mode: str, hosts: Any, **more: Any) -> None:
    """Hand the live per-host counters to the account, if there is one."""
    if _account is not None:
        _account.track(mode, hosts, **more)
JoblogOpt = typer.Option(None, "--joblog", metavar="FILE", help="Log each chunk (run: each host's call) as a JSON line in FILE; see --resume.")


@app.command()
def run(
    target: str = TargetArg,
    arg: List[str] = ArgOpt,
    host: Optional[str] = HostOpt,
    config: Optional[Path] = ConfigOpt,
    output: Output = OutputOpt,
    quiet: bool = QuietOpt,
    no_reuse: bool = NoReuseOpt,
    no_tag: bool = typer.Option(False, "--no-tag", help="Group: no HOST<TAB> before each value."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Group: cancel the other hosts at the first failure."),
    progress: Optional[float] = ProgressOpt,
    keep_going: bool = KeepGoingOpt,
    strict: bool = StrictOpt,
    report: Optional[str] = ReportOpt,
    junit: Optional[str] = JunitOpt,
    joblog: Optional[Path] = JoblogOpt,
    timeout: Optional[str] = TimeoutOpt,
    idle_timeout: Optional[str] = IdleTimeoutOpt,
) -> int:
    """Run TARGET on a host, or on every host of a group; print each value the moment it is produced."""
    from .coerce import bind_arguments
    from .target import load_target

    _open_account("run", report, junit)
    _set_time_limits(timeout, idle_timeout)
    if keep_going and fail_fast:
        raise UsageError("--keep-going and --fail-fast contradict each other",
                         hint="a broadcast runs every host to its end by default; --fail-fast stops at the first failure")
    stderr = Stderr(Env(), quiet, progress)
    group = _group(host, config)
    calls = None
    if joblog is not None:
        from .joblog import CallLog

        calls = CallLog(joblog, ["skyctl", *sys.argv[1:]])
    with calls if calls is not None else contextlib.nullcontext():
        if group is not None:
            loaded = load_target(target)
            kwargs = bind_arguments(loaded.function, arg)
            return _broadcast(loaded.function, kwargs, group, config, no_reuse, output.value, stderr,
                              tag=not no_tag, fail_fast=fail_fast, quiet=quiet, calls=calls)
        with _host(host, config, no_reuse, stderr) as remote:
            loaded = load_target(target)
            kwargs = bind_arguments(loaded.function, arg)
            if calls is not None:
                return calls.one(remote.label, lambda written: _stream_call(loaded.function, kwargs, remote,
                                                                             output.value, stderr, written=written))
            return _stream_call(loaded.function, kwargs, remote, output.value, stderr)


@app.command()
def pipe(
    target: str = TargetArg,
    arg: List[str] = ArgOpt,
    param: Optional[str] = typer.Option(None, "--param", help="The Iterator[T] parameter fed from stdin (when there are several)."),
    format: Format = typer.Option(Format.lines, "--format", help="How stdin is split into records."),
    column: Optional[str] = typer.Option(None, "--column", help="csv/tsv: the column read for int/float/str records."),
    no_header: bool = typer.Option(False, "--no-header", help="csv/tsv: the first row is data, not a header."),
    on_bad_line: OnBadLine = typer.Option(OnBadLine.fail, "--on-bad-line", help="fail: stop with exit 65; skip: warn and go on."),
    host: Optional[str] = HostOpt,
    config: Optional[Path] = ConfigOpt,
    output: Output = OutputOpt,
    quiet: bool = QuietOpt,
    no_reuse: bool = NoReuseOpt,
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, help="Worker processes on each host (makes one host a group of one)."),
    chunk: Optional[str] = typer.Option(None, "--chunk", metavar="auto|N",
                                        help="Group: records per chunk, each one call on one worker; auto (the "
                                             "default): sized per host to about half a second of work. With "
                                             "--joblog: N stdin lines (default 1000)."),
    keep_order: bool = typer.Option(False, "--keep-order", help="Group: print each chunk's values after the chunk before it."),
    tag: bool = typer.Option(False, "--tag", help="Group: HOST<TAB> before each value."),
    retries: int = typer.Option(3, "--retries", min=0, help="Group: re-runs of a chunk whose host failed."),
    progress: Optional[float] = ProgressOpt,
    total: Optional[int] = typer.Option(None, "--total", min=1, metavar="N",
                                        help="The number of stdin records, for a percent and ETA (known anyway when stdin is a file)."),
    keep_going: bool = KeepGoingOpt,
    strict: bool = StrictOpt,
    report: Optional[str] = ReportOpt,
    junit: Optional[str] = JunitOpt,
    joblog: Optional[Path] = JoblogOpt,
    results: Optional[Path] = typer.Option(None, "--results", metavar="FILE", help="With --joblog: values go to FILE, a whole chunk at a time (fsync'd before the chunk is logged)."),
    resume: bool = typer.Option(False, "--resume", help="With --joblog: skip the chunks the job log has as done (their input checked)."),
    resume_failed: bool = typer.Option(False, "--resume-failed", help="As --resume, and run the chunks logged failed or timeout again."),
    timeout: Optional[str] = TimeoutOpt,
    idle_timeout: Optional[str] = IdleTimeoutOpt,
) -> int:
    """Stream stdin records into TARGET's Iterator[T] parameter; print what it yields.

    On a group (or with -j) the records are cut into chunks spread over the workers."""
    import contextlib

    from .coerce import bind_arguments, stream_parameters
    from .records import RecordReader
    from .target import load_target

    _open_account("pipe", report, junit)
    _set_time_limits(timeout, idle_timeout)
    env = Env()
    stderr = Stderr(env, quiet, progress)
    if joblog is None and (results is not None or resume or resume_failed):
        flag = "--results" if results is not None else "--resume-failed" if resume_failed else "--resume"
        raise UsageError(f"{flag} needs --joblog FILE", hint="add --joblog FILE (the same one on every resume)")
    group = _group(host, config, jobs, distribute=True)
    if joblog is not None and group is None:  # one host with a job log: in chunks, on its one kept worker
        group, jobs = _group(host, config, 1, distribute=True), 1
    with contextlib.nullcontext() if group is not None else _host(host, config, no_reuse, stderr) as remote:
        loaded = load_target(target)
        fn = loaded.function
        name = _stream_param(fn, stream_parameters(fn), param)
        kwargs = bind_arguments(fn, arg, stream_param=name)
        if name in kwargs:
            raise UsageError(f"'{name}' is fed from stdin by pipe; do not also pass it with --arg")
        stdin: Any = env.stdin.buffer
        if joblog is not None:
            from .joblog import CutStream

            lines = _joblog_chunk(chunk)
            stdin = CutStream(stdin, lines)  # chunks of --chunk stdin lines, hashed as read
        sizer = _chunk_sizer(chunk) if joblog is None else None
        reader = RecordReader(stdin, stream_parameters(fn)[name], fmt=format.value, column=column,
                              header=not no_header, param=name, on_bad_line=on_bad_line.value, warn=stderr.warn)
        fraction = _input_fraction(env.stdin, reader, total)
        try:
            if joblog is not None:
                header = {"command": ["skyctl", *sys.argv[1:]], "chunk_size": lines, "chunk_unit": "lines",
                          "format": format.value, "keep_order": keep_order,
                          "results": str(results) if results is not None else None}
                with _long_run(joblog, results, resume or resume_failed, resume_failed, header, output.value,
                               keep_order, stderr) as long_run:
                    return long_run.ends(_distribute(fn, kwargs, name, reader, group, config, no_reuse, output.value,
                                                     stderr, jobs=jobs, chunk=lines, keep_order=keep_order, tag=tag,
                                                     retries=retries, quiet=quiet, fraction=fraction,
                                                     keep_going=keep_going, strict=strict, long_run=long_run))
            if group is not None:
                return _distribute(fn, kwargs, name, reader, group, config, no_reuse, output.value, stderr,
                                   jobs=jobs, chunk=sizer, keep_order=keep_order, tag=tag, retries=retries, quiet=quiet,
                                   fraction=fraction, keep_going=keep_going, strict=strict)
            return _stream_call(fn, {**kwargs, name: reader}, remote, output.value, stderr, stream_param=name,
                                fraction=fraction)
        finally:
            summary = reader.summary()
            if summary:
                stderr.warn(summary)


def _pipelining() -> bool:
    from .chunking import pipelining

    return pipelining()


def _chunk_sizer(text: str | None) -> Any:
    """``--chunk``: ``auto`` (also when not given) or a number of records, as a ``skyctl.chunking`` sizer."""
    from .chunking import DEFAULT, sizer_for

    try:
        return sizer_for(DEFAULT if text is None else text)
    except ValueError as exc:
        raise UsageError(str(exc), hint="use --chunk auto (the default) or --chunk N with N >= 1, and SKYCTL_CHUNK_SECONDS > 0") from None


def _joblog_chunk(text: str | None) -> int:
    """``--chunk`` with ``--joblog``: N stdin lines (1000 when not given; the job log's header records it)."""
    from .chunking import joblog_chunk

    try:
        return joblog_chunk(text)
    except ValueError as exc:
        raise UsageError(str(exc), hint="pass --chunk N (stdin lines per chunk; 1000 when --chunk is not given), "
                                        "the same N on every --resume") from None


def _input_fraction(stdin: Any, reader: Any, total: int | None) -> Callable[[], float | None] | None:
    """The share of stdin done, for the percent and ETA: records read of ``--total``,
    else bytes read of a regular file's size; None when the total is not known."""
    from .render import file_fraction

    if total is not None:
        return lambda: min(reader.read / total, 1.0)
    return file_fraction(getattr(stdin, "buffer", stdin))


def _stream_param(fn: Any, params: dict[str, Any], chosen: str | None) -> str:
    name = getattr(fn, "__name__", "the function")
    if chosen is not None:
        if chosen not in params:
            from .errors import did_you_mean

            raise UsageError(
                f"--param {chosen}: {name}() has no Iterator[T] parameter named '{chosen}'",
                hint=did_you_mean(chosen, list(params)) or (f"its stream parameters: {', '.join(params)}" if params else None),
            )
        return chosen
    if not params:
        raise UsageError(
            f"{name}() has no parameter annotated Iterator[T] to feed stdin into",
            hint="annotate one, e.g. def f(data: Iterator[float]); or use 'skyctl run'",
        )
    if len(params) > 1:
        raise UsageError(
            f"{name}() has several Iterator[T] parameters: {', '.join(params)}",
            hint="choose the one fed from stdin with --param NAME",
        )
    return next(iter(params))


def _group(host: str | None, config: Path | None, jobs: int | None = None, distribute: bool = False) -> Any:
    """The ``config.Target`` when ``--host`` names a group (or ``a,b``), or ``-j`` is given, or (``distribute``:
    ``pipe``) a ray host, whose chunks are Ray tasks; else None.

    A config error is left for the single-host path to report (after the target's own errors)."""
    from .config import load_config

    try:
        target = load_config(config).resolve(host)
    except SkyctlError:
        if jobs is not None:
            raise
        return None
    if distribute and any(p.type == "ray" for p in target.profiles):
        return target
    return target if target.is_group or jobs is not None else None


def _host_for(profile: Any, config: Path | None, no_reuse: bool, stderr: Stderr) -> Any:
    from .api import Host
    from .session import Hooks

    return Host(profile.name, config, hooks=Hooks(log=stderr.log_for(profile.name)), reuse=False if no_reuse else None,
                **_time_limits)


def _broadcast(fn: Any, kwargs: dict[str, Any], group: Any, config: Path | None, no_reuse: bool, output: str,
               stderr: Stderr, *, tag: bool, fail_fast: bool, quiet: bool, calls: Any = None) -> int:
    """``run`` on a group: the call on every host at once, values tagged by host; a summary line per host."""
    import threading

    from .many import HostStats, broadcast, plural

    env = stderr.env
    writer = ValueWriter(env.stdout, output, guard=stderr.guard_for(env.stdout))
    lock = threading.Lock()
    hosts = [_host_for(p, config, no_reuse, stderr) for p in group.profiles]
    reader_gone = threading.Event()
    _when_stdout_reader_leaves(env.stdout, reader_gone.set)

    def emit(name: str, batch: Any) -> None:
        batch = _as_output(batch, name, output, tag)
        with lock:
            writer.write_batch(batch)

    def start(host: Any) -> Any:
        return host.start(fn, (), kwargs, render=output)

    stderr.phase(f"running on {len(hosts)} hosts")
    live: dict[str, Any] = {p.name: HostStats(p.name) for p in group.profiles}
    _track("broadcast", live.values)
    stderr.watch(lambda: (0, writer.written),
                 lambda: ", ".join(f"{n} {s.values}{'✗' if s.error else ''}" for n, s in live.items()) + " values")
    try:
        stats = broadcast(hosts, start, emit, fail_fast=fail_fast, stop=reader_gone, stats=live)
    except KeyboardInterrupt:
        stderr.stop()
        return ExitStatus.INTERRUPTED
    finally:
        if calls is not None:  # --joblog: a line per host's call
            calls.hosts(live.values())
    if reader_gone.is_set():
        _silence_stdout()
        return ExitStatus.OK
    failed = [s for s in stats.values() if s.status]  # a host cancelled by --fail-fast did not fail
    _report_hosts(stderr, stats.values(), show=bool(failed) or not quiet,
                  parts=lambda s: [plural(s.values, "value"), f"{s.seconds:.2f} s"])
    return failed[0].status if failed else ExitStatus.OK


def _as_output(batch: Any, host: str, output: str, tag: bool) -> Any:
    """A batch of one host's values (or its return value) as the lines to write, tagged ``HOST<TAB>`` if asked."""
    from .remote.flow import Rendered
    from .many import Result
    from .render import tagged

    if type(batch) is Result:  # rendered by the worker; a value the client decoded itself is one of a batch
        batch = batch.value if type(batch.value) is Rendered else [batch.value]
    return tagged(batch, host, output) if tag else batch


def _report_hosts(stderr: Stderr, stats: Any, *, show: bool, parts: Any, where: Any = None,
                  totals: str | None = None) -> None:
    """After a many-host call: each remote traceback under ``[HOST]``, then (``show``) one summary line
    per host (``where(stat)``: what to add to its outcome, e.g. the chunk that failed) and ``totals``."""
    from .many import describe, plural
    from .render import summary_line

    stderr.stop()
    for stat in stats:
        if isinstance(stat.error, RemoteError):
            stderr.remote_text_for(stat.name, stat.error.traceback_text)
    if show:
        for stat in stats:
            outcome = ("cancelled (--fail-fast)" if stat.cancelled
                       else f"exit 1, {plural(stat.failed, 'chunk')} raised" if stat.error is None and stat.failed
                       else escape_controls(describe(stat.error)))
            extra = where(stat) if where is not None else None
            stderr.write(summary_line(stat.name, outcome + (f"; {extra}" if extra else ""), parts(stat)) + "\n")
        if totals:
            stderr.write(totals + "\n")


def _distribute(fn: Any, kwargs: dict[str, Any], name: str, reader: Any, group: Any, config: Path | None,
                no_reuse: bool, output: str, stderr: Stderr, *, jobs: int | None, chunk: Any, keep_order: bool,
                tag: bool, retries: int, quiet: bool, fraction: Callable[[], float | None] | None = None,
                keep_going: bool = False, strict: bool = False, long_run: Any = None) -> int:
    """``pipe`` on a group (or with ``-j``): chunks of stdin over every worker; a summary line per host.

    ``chunk``: a ``skyctl.chunking`` sizer (or, with ``long_run``, the job log's lines per chunk).
    ``long_run`` (``--joblog``): a ``joblog.LongRun`` cuts the chunks, logs them and holds each one's values
    until it ends."""
    from .many import Distributor, Slot, describe, exit_status_of, plural, slots_for

    env = stderr.env
    writer = ValueWriter(env.stdout, output, guard=stderr.guard_for(env.stdout))
    slots = [Slot(_host_for(p, config, no_reuse, stderr), p.name, i) for p in group.profiles
             for i in range(slots_for(p, jobs, group.workers))]

    def emit(chunk: Any, host: str, batch: Any) -> None:
        writer.write_batch(_as_output(batch, host, output, tag))

    def start(slot: Slot, feed: Any, skip: int) -> Any:
        return slot.host.start(fn, (), {**kwargs, name: feed}, stream=name, render=output, skip=skip)

    def twin(slot: Slot) -> Any:
        """The slot's second worker process (pipelining); none for a ray host (its chunks are Ray tasks).
        With a job log too: each chunk is still one cut range of stdin lines (``pool.Cut``)."""
        profile = slot.host.profile
        if profile.type == "ray" or not _pipelining():
            return None
        return _host_for(profile, config, no_reuse, stderr)

    def chunk_failed(chunk: Any, host: str, error: BaseException) -> None:  # --keep-going: reported now, the run goes on
        if isinstance(error, RemoteError):
            stderr.remote_text_for(host, error.traceback_text)
        stderr.warn(f"{host}: {chunk.where} failed ({escape_controls(describe(error))}); "
                    "the other chunks go on (--keep-going)")

    more = dict(warn=stderr.warn, lines=lambda: reader.lines_span, stall_warning=_stall_warning(),
                keep_going=keep_going, chunk_failed=chunk_failed, twin=twin)
    if long_run is None:
        distributor = Distributor(slots, start, reader.batches(), emit, chunk=chunk, retries=retries,
                                  ordered=keep_order, **more)
    else:
        distributor = long_run.distributor(slots, start, reader, lambda b, h: _as_output(b, h, output, tag),
                                           retries=retries, **more)
    _track("distributed", distributor.stats.values, totals=distributor.totals, failures=lambda: distributor.failures,
           stopped=distributor.stop.is_set)
    stderr.phase(f"running on {len(slots)} workers")
    stderr.watch(lambda: (sum(s.records for s in distributor.stats.values()), writer.written),
                 lambda: ", ".join(f"{s.name} {s.chunks}{'✗' if s.dead else ''}" for s in distributor.stats.values()) + " chunks",
                 records=True, chunks=lambda: sum(s.chunks for s in list(distributor.stats.values())), fraction=fraction)
    _when_stdout_reader_leaves(env.stdout, lambda: distributor.abort(BrokenPipeError()))
    try:
        distributor.run()
    except KeyboardInterrupt:
        stderr.stop()
        return ExitStatus.INTERRUPTED
    if isinstance(distributor.error, BrokenPipeError):
        _silence_stdout()
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

    _report_hosts(stderr, distributor.stats.values(), show=bool(status or strict_status) or not quiet,
                  parts=lambda s: [plural(s.chunks, "chunk"), plural(s.records, "record") + " in",
                                   plural(s.values, "value") + " out", plural(s.reruns, "re-run"), f"{s.seconds:.2f} s"],
                  where=where, totals=_totals_line(distributor.totals(), keep_going) if len(distributor.stats) > 1 else None)
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


def _totals_line(totals: Any, failed: bool = False) -> str:
    """The distributed summary's last line: the per-host counts summed, what was cancelled, and
    (``failed``: ``--keep-going``) the chunks whose function raised."""
    from .many import plural

    line = (f"total: {plural(totals.chunks, 'chunk')}, {plural(totals.records, 'record')} in, "
            f"{plural(totals.values, 'value')} out, {plural(totals.reruns, 're-run')}")
    if failed and totals.failed_chunks:
        line += f"; failed: {plural(totals.failed_chunks, 'chunk')} (the function raised)"
    if totals.cancelled_chunks:
        line += (f"; cancelled: {plural(totals.cancelled_chunks, 'chunk')}, "
                 f"{plural(totals.cancelled_records, 'record')} (not run to their end)")
    return line


def _stall_warning() -> float | None:
    """Seconds before a chunk the run waits for alone is named in a warning: ``SKYCTL_STALL_WARNING``
    (0 or less: never), else ``pool.STALL_WARNING``."""
    from .many import STALL_WARNING

    text = os.environ.get("SKYCTL_STALL_WARNING", "").strip()
    try:
        seconds = float(text) if text else STALL_WARNING
    except ValueError:
        raise UsageError(f"SKYCTL_STALL_WARNING={text!r} is not a number of seconds",
                         hint="set it to e.g. 30, or unset it") from None
    return seconds if seconds > 0 else None


@contextlib.contextmanager
def _long_run(joblog: Path, results: Path | None, resume: bool, resume_failed: bool, header: dict[str, Any],
              output: str, keep_order: bool, stderr: Stderr) -> Iterator[Any]:
    """A ``pipe --joblog`` run's ``joblog.LongRun`` (the log locked, FILE opened); Ctrl-C and SIGTERM (``main``
    raises ``Terminated`` for it) log the chunks in flight ``interrupted``; at the end, the log's last line and the
    lock released."""
    from .remote.flow import Rendered
    from .joblog import LongRun

    stdout = ValueWriter(stderr.env.stdout, output, guard=stderr.guard_for(stderr.env.stdout))

    def to_stdout(spool: Any, entry: dict[str, Any]) -> None:
        spool.file.seek(0)
        while data := spool.file.read(1 << 20):
            stdout.write_batch(Rendered(data, data.count(b"\n")))

    long_run = LongRun(joblog, results, resume=resume, resume_failed=resume_failed, header=header, ordered=keep_order,
                       make_writer=lambda text: ValueWriter(text, output), to_stdout=to_stdout, warn=stderr.warn)
    status: int | None = None
    try:
        yield long_run
        status = long_run.exit_status
    except SkyctlError as err:
        status = int(err.exit_status)
        raise
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (``Terminated``): the chunks in flight were logged
        status = 128 + signal.SIGTERM if isinstance(exc, Terminated) else int(ExitStatus.INTERRUPTED)
        raise
    finally:
        if _terminated and status == ExitStatus.INTERRUPTED:  # SIGTERM ended it, caught as Ctrl-C below
            status = 128 + signal.SIGTERM
        long_run.finish(status)


def _host(host: str | None, config: Path | None, no_reuse: bool, stderr: Stderr) -> Any:
    """The ``Host`` for this call. For the built-in ``local`` host its worker
    starts at once, in the background: its start-up then overlaps importing
    the target. A config error is not raised here but by ``_stream_call``,
    after the target's own errors, as before."""
    from .api import Host
    from .session import Hooks

    remote = Host(host, config, hooks=Hooks(log=stderr.log, status=stderr.phase), reuse=False if no_reuse else None,
                  **_time_limits)
    try:
        remote.start_worker_early()
    except SkyctlError:
        pass
    return remote


def _stream_call(fn: Any, kwargs: dict[str, Any], target: Any, output: str, stderr: Stderr,
                 stream_param: str | None = None, fraction: Callable[[], float | None] | None = None,
                 written: Any = None) -> int:
    """Run one call on ``target`` (a ``Host``) and write its values as they arrive; returns the exit status.
    ``written(writer)`` is given the value writer (``run --joblog`` counts its values)."""
    from .many import HostStats

    env = stderr.env
    writer = ValueWriter(env.stdout, output, guard=stderr.guard_for(env.stdout))
    if written is not None:
        written(writer)
    stream = None
    stat: HostStats | None = None
    try:
        target.profile  # config errors before anything else
        stat = HostStats(target.label)
        _track("single", lambda: [stat])
        stream = target.start(fn, (), kwargs, stream=stream_param, render=output)
        stat.connected = True
        call = stream
        stderr.watch(lambda: (call.items_in, writer.written), records=stream_param is not None, fraction=fraction)
        _when_stdout_reader_leaves(env.stdout, lambda: call.interrupt(BrokenPipeError()))
        for batch in stream.batches(keep_lines=writer.takes_lines):
            writer.write_batch(batch)
        if stream.result is not None:
            writer.write_one(stream.result)
        return ExitStatus.OK
    except BrokenPipeError:  # the reader of stdout went away: a quiet, successful end
        _silence_stdout()
        if stream is not None:
            stream.close()
        return ExitStatus.OK
    except KeyboardInterrupt as exc:
        _ended_by(exc, stderr, stat)
        if stream is not None:
            stream.close()
        return ExitStatus.INTERRUPTED
    except RemoteError as err:
        _ended_by(err, stderr, stat)
        stderr.remote_text(err.traceback_text if err.traceback_text.endswith("\n") else err.traceback_text + "\n")
        return ExitStatus.REMOTE_RAISED
    except BaseException as exc:
        if stat is not None:  # for the report: how the host ended (main reports the error itself)
            stat.error = exc
        raise
    finally:
        stderr.stop()
        if stat is not None:
            stat.values, stat.records, stat.ended = writer.written, stream.items_in if stream else 0, time.monotonic()
        target.close()


def _ended_by(error: BaseException, stderr: Stderr, stat: Any) -> None:
    """A one-host call ended by ``error``: the status line goes, the report's host entry learns why."""
    stderr.stop()
    if stat is not None:
        stat.error = error


def _when_stdout_reader_leaves(stdout: Any, callback: Any) -> None:
    """Call ``callback`` as soon as the reader of a stdout pipe goes away.

    So ``skyctl run slow:gen | head -1`` ends when head does, not when the
    next value happens to be written.
    """
    import select
    import stat
    import threading

    try:
        fd = stdout.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return
    except (AttributeError, OSError, ValueError):
        return

    def watch() -> None:
        poller = select.poll()
        poller.register(fd, 0)  # POLLERR/POLLHUP are always reported
        while True:
            for _, events in poller.poll():
                if events & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                    callback()
                    return

    threading.Thread(target=watch, name="skyctl-stdout-watch", daemon=True).start()


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


@app.command()
def hosts(
    config: Optional[Path] = ConfigOpt,
    names: bool = typer.Option(False, "--names", help="Only the host and group names, one per line (for shell completion)."),
) -> int:
    """List the host profiles (name, type, address, python) and the groups."""
    from .config import load_config

    cfg = load_config(config)
    if names:
        for name in [*cfg.hosts, *cfg.groups]:
            typer.echo(name)
        return ExitStatus.OK
    rows = [("NAME", "TYPE", "ADDRESS", "PYTHON")]
    for name, profile in cfg.hosts.items():
        mark = " (default)" if name == cfg.default else ""
        python = profile.effective_python
        if profile.type == "ray":  # the driver's: the via host's
            via = cfg.hosts.get(profile.via or "")
            python = f"{via.effective_python} (on {profile.via})" if via is not None else ""
        rows.append((name + mark, profile.type, profile.address, python))
    for name, group in cfg.groups.items():
        mark = " (default)" if name == cfg.default else ""
        workers = f" × {group.workers} workers" if group.workers > 1 else ""
        rows.append((name + mark, "group", ", ".join(group.hosts) + workers, ""))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        typer.echo(("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[3]).rstrip())
    where = str(cfg.path) if cfg.path else "built-in (no skyward.yaml found)"
    typer.echo(f"config: {where}", err=True)
    return ExitStatus.OK


@app.command()
def check(
    host: List[str] = typer.Argument(None, metavar="[HOST]...", help="Hosts to check (default: the default host)."),
    config: Optional[Path] = ConfigOpt,
    no_reuse: bool = NoReuseOpt,
) -> int:
    """Connect to and bootstrap each host (every member of a group, concurrently);
    report its python and latency. Non-zero if any fails."""
    import threading

    from .api import Host
    from .config import load_config

    cfg = load_config(config)
    names: list[str] = []
    for name in (list(host) if host else [None]):
        for profile in cfg.resolve(name).profiles:  # every name valid before connecting anywhere
            if profile.name not in names:
                names.append(profile.name)
    lines: dict[str, list[str]] = {}
    statuses: dict[str, int] = {}

    def one(index: int, name: str) -> None:
        time.sleep(min(index, 50) * 0.005)  # not every login in the same millisecond (sshd MaxStartups)
        started = time.monotonic()
        target = Host(name, config, reuse=False if no_reuse else None)
        try:
            info = target.check()
        except SkyctlError as err:
            lines[name] = [f"{name}: FAILED ({err.exit_status.value}) {escape_controls(err.message)}"]
            if err.hint:
                lines[name].append(f"  hint: {escape_controls(err.hint)}")
            statuses[name] = err.exit_status
            return
        finally:
            target.close()
        ms = (time.monotonic() - started) * 1000
        bundle = ", bundle sent" if info["sent_bundle"] else ""
        lines[name] = [f"{name}: ok  python {info['python']}  ready in {ms:.0f} ms  round trip {info['rtt_ms']:.1f} ms{bundle}"]
        ray = info.get("ray")
        if isinstance(ray, dict):
            lines[name].append(escape_controls(f"  ray {ray.get('ray')} at {ray.get('address')}: {ray.get('nodes')} nodes, "
                                               f"{ray.get('cpus', 0):g} CPUs, {ray.get('gpus', 0):g} GPUs"))

    threads = [threading.Thread(target=one, args=(i, n), name=f"skyctl-check-{n}", daemon=True) for i, n in enumerate(names)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in names:  # in the order named
        for line in lines.get(name, [f"{name}: FAILED (1) the check did not finish"]):
            typer.echo(line)
    failed = [statuses[n] for n in names if statuses.get(n)]
    return failed[0] if failed else ExitStatus.OK


@app.command()
def init() -> int:
    """Write a commented ./skyward.yaml (never overwrites one)."""
    from .config import write_init

    path = Path("skyward.yaml")
    try:
        write_init(path)
    except FileExistsError:
        raise UsageError("skyward.yaml already exists here; left it untouched", hint="edit it, or run 'skyctl init' in another directory") from None
    typer.echo(f"wrote {path}: edit the commented ssh host, then try 'skyctl check HOST'", err=True)
    return ExitStatus.OK


class Shell(str, Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


@app.command()
def completion(shell: Shell = typer.Argument(..., help="bash, zsh or fish.")) -> int:
    """Print a shell completion script: eval "$(skyctl completion bash)" (zsh alike; fish: skyctl completion fish | source)."""
    from .completion import command_spec, script

    typer.echo(script(shell.value, command_spec(typer.main.get_command(app))), nl=False)
    return ExitStatus.OK


def _parser_exceptions() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(exit, abort, parse-error) classes: typer >= 0.20 vendors click, older typer uses click's."""
    exits: list[type] = [typer.Exit]
    aborts: list[type] = [typer.Abort]
    errors: list[type] = [c for c in (getattr(typer, "TyperException", None),) if c is not None]
    # only when typer uses it (then typer has imported it): importing the standalone
    # click next to a typer that vendors its own costs start-up time for nothing
    click = sys.modules.get("click")
    if click is not None:
        exits.append(click.exceptions.Exit)
        aborts.append(click.exceptions.Abort)
        errors.append(click.ClickException)
    return tuple(exits), tuple(aborts), tuple(errors)


_EXIT, _ABORT, _PARSE_ERRORS = _parser_exceptions()


def _progress_alone(args: Any) -> list[str]:
    """``--progress`` without ``=SECONDS`` means the default interval. An option whose value
    is optional cannot take it as a separate word (``--progress 5 mod:f`` would read the
    target as the value), so it is ``--progress=5``, as GNU tools do (``--color[=WHEN]``)."""
    from .render import DEFAULT_PROGRESS_SECONDS

    out: list[str] = []
    for arg in args:
        if arg == "--progress" and "--" not in out:
            arg = f"--progress={DEFAULT_PROGRESS_SECONDS:g}"
        out.append(arg)
    return out


def _write_account(status: int, error: BaseException | None, env: Env) -> None:
    """``--report`` / ``--junit``, once the status this process exits with is known."""
    if _account is None:
        return
    try:
        _account.write(int(status), error, env.stderr, lambda m: env.stderr.write(f"warning: {m}\n"))
    except KeyboardInterrupt:  # a second Ctrl-C while writing: the run's status stands
        pass


class Terminated(KeyboardInterrupt):
    """SIGTERM: raised where Ctrl-C would be, so the same clean-up runs (the call
    is cancelled, the remote closed); the exit status is then 143, not 130."""


_terminated: list[bool] = []


def _on_sigterm(signum: int, frame: Any) -> None:
    if not _terminated:
        _terminated.append(True)
        raise Terminated()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the command, map every failure to its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in args or bool(os.environ.get("SKYCTL_DEBUG"))
    args = _progress_alone(a for a in args if a != "--verbose")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C cancels, even when started in the background
    signal.signal(signal.SIGTERM, _on_sigterm)  # as Ctrl-C: the remote is closed, not left to notice EOF
    env = Env()
    global _account
    _argv[:] = args
    _account = None
    error: BaseException | None = None
    try:
        code = typer.main.get_command(app).main(args=args, prog_name="skyctl", standalone_mode=False)
        status = int(code) if isinstance(code, int) else 0
    except _EXIT as exc:
        status = exc.exit_code  # type: ignore[attr-defined]
    except _ABORT:
        status = ExitStatus.INTERRUPTED
    except _PARSE_ERRORS as exc:
        if verbose:
            raise
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            env.stderr.write(ctx.get_help() + "\n")
        else:
            command = ctx.command_path if ctx is not None else "skyctl"
            err = UsageError(exc.format_message(), hint=f"see '{command} --help'")  # type: ignore[attr-defined]
            env.stderr.write(error_lines(err, env.colour))
        status = ExitStatus.USAGE
    except SkyctlError as err:
        if verbose:
            raise
        if err.details:  # a remote traceback: its control characters escaped on a terminal
            details = escape_controls(err.details) if env.stderr_is_terminal else err.details
            env.stderr.write(details if details.endswith("\n") else details + "\n")
        env.stderr.write(error_lines(err, env.colour))
        status = err.exit_status
        error = err
    except KeyboardInterrupt as exc:
        status = ExitStatus.INTERRUPTED
        error = exc
    except BrokenPipeError:
        _silence_stdout()
        status = ExitStatus.OK
    except Exception as exc:  # a skyctl bug: its traceback follows, but the report is still written
        _write_account(ExitStatus.REMOTE_RAISED, exc, env)
        raise
    if _terminated:
        status = 128 + signal.SIGTERM
    _write_account(status, error, env)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, OSError, ValueError):
            _silence_stdout()
    if argv is not None:
        sys.exit(int(status))
    # A feeder thread may still sit in a blocking read of stdin (`yes | skyctl pipe
    # f:take3`); a normal interpreter shutdown would then wait on, or die over,
    # that stream's lock. Everything is flushed and the worker closed: leave now.
    os._exit(int(status))


__all__ = ["app", "main", "BadRecord"]
