"""``run --joblog FILE``: one line per host's call.

Why apart: a ``run`` has no chunks, input or results file; it shares only the job
log's file, lock and line format (``log.py``) with the pipe's ``LongRun``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import ExitStatus, SkyctlError
from .log import VERSION, JobLog, error_text, now


class CallLog:
    """``run --joblog FILE``: a header line, then one line per host's call (host, start, seconds, values,
    status, exit), and a last line with the run's exit status. Locked like a pipe's job log."""

    def __init__(self, path: Path, command: list[str]) -> None:
        self.log = JobLog(path, resume=False)
        self._wall = time.monotonic()
        self._start = now()
        self.log.write({"joblog": VERSION, "command": command, "start": self._start, "pid": os.getpid()})
        self._exit: int | None = None

    def __enter__(self) -> CallLog:
        return self

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        if error is not None:
            self._exit = int(error.exit_status) if isinstance(error, SkyctlError) else \
                int(ExitStatus.INTERRUPTED) if isinstance(error, KeyboardInterrupt) else int(ExitStatus.REMOTE_RAISED)
        try:
            self.log.write({"end": now(), "seconds": round(time.monotonic() - self._wall, 3), "exit": self._exit})
        finally:
            self.log.close()

    def one(self, host: str, call: Callable[[Callable[[Any], None]], int]) -> int:
        """Run ``call`` (one host's call; it hands over its value writer) and log it."""
        writers: list[Any] = []
        began, start = time.monotonic(), now()
        status: int = int(ExitStatus.REMOTE_RAISED)
        error: BaseException | None = None
        try:
            status = int(call(writers.append))
            return status
        except BaseException as exc:
            error = exc
            status = int(exc.exit_status) if isinstance(exc, SkyctlError) else \
                int(ExitStatus.INTERRUPTED) if isinstance(exc, KeyboardInterrupt) else int(ExitStatus.REMOTE_RAISED)
            raise
        finally:
            self._exit = status
            word = "ok" if status == 0 else "interrupted" if status == ExitStatus.INTERRUPTED else \
                "timeout" if status == 124 else "lost" if status in (4, 5, 6) else "failed"
            entry = {"host": host, "attempt": 1, "start": start, "seconds": round(time.monotonic() - began, 3),
                     "values": writers[0].written if writers else 0, "status": word, "exit": status}
            if error is not None:
                entry["error"] = error_text(error)
            self.log.write(entry)

    def hosts(self, stats: Iterable[Any]) -> None:
        """A broadcast's calls, from each host's ``many.stats.HostStats``."""
        worst = 0
        for stat in stats:
            status = int(stat.status)
            worst = worst or status
            word = "ok" if status == 0 else "interrupted" if status == ExitStatus.INTERRUPTED else \
                "timeout" if status == 124 else "lost" if status in (4, 5, 6) else "failed"
            entry = {"host": stat.name, "attempt": 1, "start": None, "seconds": round(stat.seconds, 3),
                     "values": stat.values, "status": word, "exit": status}
            if stat.error is not None:
                entry["error"] = error_text(stat.error)
            self.log.write(entry)
        self._exit = worst
