"""The job log file: JSON Lines, locked (``flock``) for the run, each chunk line fsync'd; and what a line says
(its fields' order, a status and exit status from an error, the error's text).

Why apart: the pipe's ``LongRun``, ``run --joblog``'s ``CallLog`` and the resume
planner all read or write these lines; the file's format and its lock live in one place.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import ExitStatus, SkyctlError, UsageError


#: the job log's format version (its header's ``"joblog"`` field)
VERSION = 1
#: chunk statuses; ``--resume`` skips chunks logged ``ok`` or ``FAILED_STATUSES``; ``--resume-failed`` runs the latter
STATUSES = ("ok", "failed", "lost", "timeout", "interrupted")
FAILED_STATUSES = ("failed", "timeout")


class JobLogError(UsageError):
    """A job log (or its results file) that cannot be used as asked: exit 2."""


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"


class JobLog:
    """The job log file, locked (``flock``) for the whole run; one JSON line per entry, each fsync'd."""

    def __init__(self, path: Path, *, resume: bool) -> None:
        import fcntl

        self.path = path
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise JobLogError(f"cannot open the job log {path}: {exc.strerror}", hint="check the path") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise JobLogError(f"the job log {path} is in use by another skyctl run",
                              hint="wait for it to end, or use another --joblog FILE") from None
        self._lock = threading.Lock()
        self.torn = False
        self.entries: list[dict[str, Any]] = []
        if resume:
            self.entries = self._read()
        else:
            os.ftruncate(self._fd, 0)

    def _read(self) -> list[dict[str, Any]]:
        """The entries so far; a torn last line (a crash mid-write) is cut off the file."""
        with open(self._fd, "rb", closefd=False) as f:
            f.seek(0)
            data = f.read()
        entries: list[dict[str, Any]] = []
        at = 0
        number = 0
        while at < len(data):
            end = data.find(b"\n", at)
            line = data[at:] if end < 0 else data[at:end]
            number += 1
            try:
                entry = json.loads(line) if end >= 0 else None
            except ValueError:
                entry = None
            if not isinstance(entry, dict):
                if data.find(b"\n", end + 1) >= 0 and end >= 0:
                    raise JobLogError(f"the job log {self.path} is damaged at line {number}",
                                      hint="start over without --resume, or restore the file")
                os.ftruncate(self._fd, at)  # torn: the last line, half written
                self.torn = True
                break
            entries.append(entry)
            at = end + 1
        return entries

    def write(self, entry: dict[str, Any], sync: bool = True) -> None:
        self.write_many([entry], sync)

    def write_many(self, entries: list[dict[str, Any]], sync: bool = True) -> None:
        """Entries as lines, one write and (``sync``) one fsync; a run's first and last lines need none:
        a resume depends only on the chunk lines, and each of those is fsync'd."""
        data = b"".join((json.dumps(entry, separators=(", ", ": ")) + "\n").encode() for entry in entries)
        with self._lock:
            while data:
                data = data[os.write(self._fd, data):]
            if sync:
                os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)  # releases the lock
                self._fd = -1


#: the order of a chunk line's fields in the log (the rest follow)
_FIELDS = ("chunk", "host", "attempt", "start", "seconds", "first_line", "last_line", "records", "values", "status",
           "exit", "sha256", "offset", "length")


def ordered_entry(entry: dict[str, Any]) -> dict[str, Any]:
    ordered = {k: entry[k] for k in _FIELDS if k in entry}
    ordered.update((k, v) for k, v in entry.items() if k not in ordered)
    return ordered


def error_text(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return message if len(message) <= 300 else message[:300] + "…"


def status_of(error: BaseException | None, default: str) -> str:
    """The log status of an attempt that ended with ``error``: a timeout is told apart by its exit status."""
    if error is not None and isinstance(error, SkyctlError) and int(error.exit_status) == 124:
        return "timeout"
    return default


def exit_of(error: BaseException | None, status: str) -> int:
    if status == "ok":
        return int(ExitStatus.OK)
    if status == "interrupted":
        return int(ExitStatus.INTERRUPTED)
    if isinstance(error, SkyctlError):
        return int(error.exit_status)
    return int(ExitStatus.REMOTE_RAISED)
