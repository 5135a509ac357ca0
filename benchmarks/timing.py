"""Timing primitives: run a command, time its first stdout line, drain and count its output.

Every run has a deadline (a watchdog kills the process group it started) and
its stderr goes to a temporary file whose tail is shown when a run fails.
Clocks: ``time.perf_counter`` (monotonic). "Process start" is the moment just
before ``Popen``, so fork/exec counts for skyctl and baseline alike.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any, Sequence

__all__ = ["BenchError", "Drain", "Run", "median", "first_line", "drain", "read_line"]


class BenchError(RuntimeError):
    """A measured command failed or timed out; the message has its stderr tail."""


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Run:
    """One started command: stdout a pipe, stderr a temp file, killed at the deadline.

    ``stdin`` may be a file object, ``subprocess.DEVNULL``/``PIPE``, or a list
    of argv for an upstream producer (``seq 1 N``), started first and piped in.
    """

    def __init__(self, argv: Sequence[str], *, stdin: Any = subprocess.DEVNULL, cwd: str | os.PathLike[str] | None = None,
                 env: dict[str, str] | None = None, timeout: float = 120.0, what: str = "") -> None:
        self.what = what or " ".join(map(str, argv[:4]))
        self.argv = list(argv)
        self.err: IO[bytes] = tempfile.TemporaryFile()
        self.producer: subprocess.Popen[bytes] | None = None
        self.timed_out = False
        self.started = time.perf_counter()
        if isinstance(stdin, list):
            self.producer = subprocess.Popen(stdin, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                             start_new_session=True)
            stdin = self.producer.stdout
        self.proc = subprocess.Popen(self.argv, stdin=stdin, stdout=subprocess.PIPE, stderr=self.err, cwd=cwd, env=env,
                                     bufsize=0, start_new_session=True)
        if self.producer is not None and self.producer.stdout is not None:
            self.producer.stdout.close()  # only the consumer holds the read end now
        assert self.proc.stdout is not None
        self.stdout_fd = self.proc.stdout.fileno()
        self._timer = threading.Timer(timeout, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        self.timed_out = True
        self.kill()

    def kill(self) -> None:
        for proc in (self.producer, self.proc):
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)

    def stderr_tail(self, limit: int = 2000) -> str:
        with contextlib.suppress(OSError, ValueError):
            self.err.seek(0)
            return self.err.read().decode(errors="replace")[-limit:].strip()
        return ""

    def finish(self, *, wait: float = 30.0, check: bool = True) -> int:
        """Wait for exit (stdout must already be drained or closed); raise on failure."""
        try:
            code = self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.wait(timeout=10)
            self.timed_out = True
        finally:
            self._timer.cancel()
            if self.producer is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.producer.wait(timeout=10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        if check and (code != 0 or self.timed_out):
            why = "timed out" if self.timed_out else f"exit {code}"
            raise BenchError(f"{self.what}: {why}\n{self.stderr_tail()}")
        return code

    def close(self) -> None:
        self.kill()
        self._timer.cancel()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=10)
        with contextlib.suppress(Exception):
            self.err.close()
        if self.proc.stdout is not None:
            with contextlib.suppress(Exception):
                self.proc.stdout.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_line(fd: int, pending: bytearray) -> bytes:
    """One line from ``fd`` (without buffering past what the kernel has); b"" at EOF."""
    while True:
        cut = pending.find(b"\n")
        if cut >= 0:
            line = bytes(pending[: cut + 1])
            del pending[: cut + 1]
            return line
        chunk = os.read(fd, 65536)
        if not chunk:
            line = bytes(pending)
            pending.clear()
            return line
        pending += chunk


def first_line(argv: Sequence[str], *, expect: bytes | None = b"1", **kw: Any) -> float:
    """Seconds from process start until the first stdout line has been read."""
    with Run(argv, **kw) as run:
        pending = bytearray()
        line = read_line(run.stdout_fd, pending)
        elapsed = time.perf_counter() - run.started
        while os.read(run.stdout_fd, 65536):
            pass
        run.finish()
        if expect is not None and line.strip() != expect:
            raise BenchError(f"{run.what}: first line {line[:80]!r}, expected {expect!r}\n{run.stderr_tail()}")
        return elapsed


@dataclass
class Drain:
    """What draining one command's stdout saw."""

    lines: int
    #: seconds from process start to the first stdout bytes
    first: float
    #: seconds from process start to the last stdout bytes
    last: float
    #: seconds from process start to exit
    total: float
    #: lines that arrived in the first read (excluded from the streaming rate)
    first_chunk_lines: int
    #: (seconds from process start, lines so far) after every read
    marks: list[tuple[float, int]] = field(default_factory=list)

    @property
    def stream_rate(self) -> float:
        """Lines per second between the first and the last output bytes (startup excluded)."""
        span = self.last - self.first
        return (self.lines - self.first_chunk_lines) / span if span > 0 else float("nan")

    @property
    def middle_rate(self) -> float:
        """Lines per second from the read that passed 10% of the lines to the one
        that passed 90%: the steady rate, without how the stream ramps up or ends."""
        low = next((t, n) for t, n in self.marks if n >= self.lines * 0.1)
        high = next((t, n) for t, n in self.marks if n >= self.lines * 0.9)
        span = high[0] - low[0]
        return (high[1] - low[1]) / span if span > 0 else float("nan")

    @property
    def overall_rate(self) -> float:
        """Lines per second from process start to exit."""
        return self.lines / self.total if self.total > 0 else float("nan")


def drain(argv: Sequence[str], *, expect_lines: int | None = None, **kw: Any) -> Drain:
    """Run ``argv``, read all of its stdout (1 MiB reads), count the lines."""
    with Run(argv, **kw) as run:
        fd = run.stdout_fd
        lines = 0
        first = last = None
        first_chunk_lines = 0
        marks: list[tuple[float, int]] = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            now = time.perf_counter()
            n = chunk.count(b"\n")
            if first is None:
                first, first_chunk_lines = now, n
            last = now
            lines += n
            marks.append((now - run.started, lines))
        run.finish()
        total = time.perf_counter() - run.started
        if first is None or last is None:
            raise BenchError(f"{run.what}: no output\n{run.stderr_tail()}")
        if expect_lines is not None and lines != expect_lines:
            raise BenchError(f"{run.what}: {lines} lines, expected {expect_lines}\n{run.stderr_tail()}")
        return Drain(lines, first - run.started, last - run.started, total, first_chunk_lines, marks)
