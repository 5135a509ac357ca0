"""A call on one host (``run``, ``pipe`` without a group): its values written as they arrive."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from ..errors import ExitStatus, RemoteError, SkyctlError
from ..render import Stderr, ValueWriter
from .state import time_limits, track
from .stdout import silence_stdout, when_stdout_reader_leaves


def make_host(host: str | None, config: Path | None, no_reuse: bool, stderr: Stderr) -> Any:
    """The ``Host`` for this call. For the built-in ``local`` host its worker
    starts at once, in the background: its start-up then overlaps importing
    the target. A config error is not raised here but by ``stream_call``,
    after the target's own errors, as before."""
    from ..api import Host
    from ..session import Hooks

    remote = Host(host, config, hooks=Hooks(log=stderr.log, status=stderr.phase), reuse=False if no_reuse else None,
                  **time_limits)
    try:
        remote.start_worker_early()
    except SkyctlError:
        pass
    return remote


def stream_call(fn: Any, kwargs: dict[str, Any], target: Any, output: str, stderr: Stderr,
                stream_param: str | None = None, fraction: Callable[[], float | None] | None = None,
                written: Any = None) -> int:
    """Run one call on ``target`` (a ``Host``) and write its values as they arrive; returns the exit status.
    ``written(writer)`` is given the value writer (``run --joblog`` counts its values)."""
    from ..api import start_call
    from ..many import HostStats

    env = stderr.env
    writer = ValueWriter(env.stdout, output, guard=stderr.guard_for(env.stdout))
    if written is not None:
        written(writer)
    stream = None
    stat: HostStats | None = None
    try:
        target.profile  # config errors before anything else
        stat = HostStats(target.label)
        track("single", lambda: [stat])
        stream = start_call(target, fn, (), kwargs, stream=stream_param, render=output)
        stat.connected = True
        call = stream
        stderr.watch(lambda: (call.items_in, writer.written), records=stream_param is not None, fraction=fraction)
        when_stdout_reader_leaves(env.stdout, lambda: call.interrupt(BrokenPipeError()))
        for batch in stream.batches(keep_lines=writer.takes_lines):
            writer.write_batch(batch)
        if stream.result is not None:
            writer.write_one(stream.result)
        return ExitStatus.OK
    except BrokenPipeError:  # the reader of stdout went away: a quiet, successful end
        silence_stdout()
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
