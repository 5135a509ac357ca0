"""The ``skyctl`` command: parse, call the core, render. Nothing else.

``main()`` is the only place where exceptions become an exit status and a
one-line message (with ``--verbose`` or ``SKYCTL_DEBUG=1`` it re-raises).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Any, List, Optional

import typer

from . import __version__
from .commands.state import begin, on_sigterm, open_account, set_time_limits, terminated, write_account
from .commands.stdout import silence_stdout
from .errors import BadRecord, ExitStatus, SkyctlError, UsageError
from .render import Env, Stderr, error_lines
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
NoReuseOpt = typer.Option(False, "--no-reuse", help="Do not keep or use a kept SSH connection (nor a spare Ray driver).")
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
    from .commands.broadcast import broadcast
    from .commands.group import resolve_group
    from .commands.one import make_host, stream_call
    from .target import load_target

    open_account("run", report, junit)
    set_time_limits(timeout, idle_timeout)
    if keep_going and fail_fast:
        raise UsageError("--keep-going and --fail-fast contradict each other",
                         hint="a broadcast runs every host to its end by default; --fail-fast stops at the first failure")
    stderr = Stderr(Env(), quiet, progress)
    group = resolve_group(host, config)
    calls = None
    if joblog is not None:
        from .joblog import CallLog

        calls = CallLog(joblog, ["skyctl", *sys.argv[1:]])
    with calls if calls is not None else contextlib.nullcontext():
        if group is not None:
            loaded = load_target(target)
            kwargs = bind_arguments(loaded.function, arg)
            return broadcast(loaded.function, kwargs, group, config, no_reuse, output.value, stderr,
                             tag=not no_tag, fail_fast=fail_fast, quiet=quiet, calls=calls)
        with make_host(host, config, no_reuse, stderr) as remote:
            loaded = load_target(target)
            kwargs = bind_arguments(loaded.function, arg)
            if calls is not None:
                return calls.one(remote.label, lambda written: stream_call(loaded.function, kwargs, remote,
                                                                            output.value, stderr, written=written))
            return stream_call(loaded.function, kwargs, remote, output.value, stderr)


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
    from .coerce import bind_arguments, stream_parameters
    from .commands.distribute import distribute, long_run
    from .commands.group import resolve_group
    from .commands.one import make_host, stream_call
    from .commands.pipe_input import chunk_sizer, input_fraction, joblog_chunk, stream_param
    from .records import RecordReader
    from .target import load_target

    open_account("pipe", report, junit)
    set_time_limits(timeout, idle_timeout)
    env = Env()
    stderr = Stderr(env, quiet, progress)
    if joblog is None and (results is not None or resume or resume_failed):
        flag = "--results" if results is not None else "--resume-failed" if resume_failed else "--resume"
        raise UsageError(f"{flag} needs --joblog FILE", hint="add --joblog FILE (the same one on every resume)")
    group = resolve_group(host, config, jobs, distribute=True)
    if joblog is not None and group is None:  # one host with a job log: in chunks, on its one kept worker
        group, jobs = resolve_group(host, config, 1, distribute=True), 1
    with contextlib.nullcontext() if group is not None else make_host(host, config, no_reuse, stderr) as remote:
        loaded = load_target(target)
        fn = loaded.function
        name = stream_param(fn, stream_parameters(fn), param)
        kwargs = bind_arguments(fn, arg, stream_param=name)
        if name in kwargs:
            raise UsageError(f"'{name}' is fed from stdin by pipe; do not also pass it with --arg")
        stdin: Any = env.stdin.buffer
        if joblog is not None:
            from .joblog import CutStream

            lines = joblog_chunk(chunk)
            stdin = CutStream(stdin, lines)  # chunks of --chunk stdin lines, hashed as read
        sizer = chunk_sizer(chunk) if joblog is None else None
        reader = RecordReader(stdin, stream_parameters(fn)[name], fmt=format.value, column=column,
                              header=not no_header, param=name, on_bad_line=on_bad_line.value, warn=stderr.warn)
        fraction = input_fraction(env.stdin, reader, total)
        try:
            if joblog is not None:
                header = {"command": ["skyctl", *sys.argv[1:]], "chunk_size": lines, "chunk_unit": "lines",
                          "format": format.value, "keep_order": keep_order,
                          "results": str(results) if results is not None else None}
                with long_run(joblog, results, resume or resume_failed, resume_failed, header, output.value,
                              keep_order, stderr) as logged_run:
                    return logged_run.ends(distribute(fn, kwargs, name, reader, group, config, no_reuse, output.value,
                                                      stderr, jobs=jobs, chunk=lines, keep_order=keep_order, tag=tag,
                                                      retries=retries, quiet=quiet, fraction=fraction,
                                                      keep_going=keep_going, strict=strict, long_run=logged_run))
            if group is not None:
                return distribute(fn, kwargs, name, reader, group, config, no_reuse, output.value, stderr,
                                  jobs=jobs, chunk=sizer, keep_order=keep_order, tag=tag, retries=retries, quiet=quiet,
                                  fraction=fraction, keep_going=keep_going, strict=strict)
            return stream_call(fn, {**kwargs, name: reader}, remote, output.value, stderr, stream_param=name,
                               fraction=fraction)
        finally:
            summary = reader.summary()
            if summary:
                stderr.warn(summary)


@app.command()
def hosts(
    config: Optional[Path] = ConfigOpt,
    names: bool = typer.Option(False, "--names", help="Only the host and group names, one per line (for shell completion)."),
) -> int:
    """List the host profiles (name, type, address, python) and the groups."""
    from .commands.listing import list_hosts

    return list_hosts(config, names)


@app.command()
def check(
    host: List[str] = typer.Argument(None, metavar="[HOST]...", help="Hosts to check (default: the default host)."),
    config: Optional[Path] = ConfigOpt,
    no_reuse: bool = NoReuseOpt,
) -> int:
    """Connect to and bootstrap each host (every member of a group, concurrently);
    report its python and latency. Non-zero if any fails."""
    from .commands.check import check_hosts

    return check_hosts(host, config, no_reuse)


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


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the command, map every failure to its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in args or bool(os.environ.get("SKYCTL_DEBUG"))
    args = _progress_alone(a for a in args if a != "--verbose")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C cancels, even when started in the background
    signal.signal(signal.SIGTERM, on_sigterm)  # as Ctrl-C: the remote is closed, not left to notice EOF
    env = Env()
    begin(args)
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
        silence_stdout()
        status = ExitStatus.OK
    except Exception as exc:  # a skyctl bug: its traceback follows, but the report is still written
        write_account(ExitStatus.REMOTE_RAISED, exc, env)
        raise
    if terminated():
        status = 128 + signal.SIGTERM
    write_account(status, error, env)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, OSError, ValueError):
            silence_stdout()
    if argv is not None:
        sys.exit(int(status))
    # A feeder thread may still sit in a blocking read of stdin (`yes | skyctl pipe
    # f:take3`); a normal interpreter shutdown would then wait on, or die over,
    # that stream's lock. Everything is flushed and the worker closed: leave now.
    os._exit(int(status))


__all__ = ["app", "main", "BadRecord"]
