"""Target functions for the end-to-end ``skyctl run`` tests.

Run remotely, so stdlib only. Paths for marker files come in as arguments;
the test host and the ssh "remote" are the same machine, so the test sees them.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Iterator


def _wait_for(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def first_then_wait(release: Path, timeout: float = 60.0) -> Iterator[str]:
    """Yield one value, then block until ``release`` exists (or ``timeout``)."""
    yield "first"
    _wait_for(release, timeout)
    yield "second"


def raises_after(n: int = 3) -> Iterator[int]:
    """Yield 0..n-1, then fail."""
    for i in range(n):
        yield i
    fail_here(n)


def yields_a_lock() -> Iterator[object]:
    """A value that cannot be pickled, after one that can."""
    import threading

    yield 1
    yield threading.Lock()
    yield 3


def fast_then_a_lock(n: int = 5000) -> Iterator[object]:
    """Fast values (long runs), then one that cannot be pickled as the last: the end must not look complete."""
    import threading

    yield from range(n)
    yield threading.Lock()


def fail_here(n: int) -> None:
    raise ValueError(f"boom after {n} values")


def chatty() -> Iterator[str]:
    """Write to stdout and stderr in every way a user might, around one value."""
    print("print-to-stdout")
    print("print-to-stderr", file=sys.stderr)
    sys.stdout.write("partial-")
    sys.stdout.flush()
    os.write(1, b"fd1-write\n")
    os.write(2, b"fd2-write\n")
    yield "the-value"
    print("after-the-value")
    sys.stderr.write("last-words-without-newline")


def endless(finally_marker: Path, pid_file: Path | None = None) -> Iterator[int]:
    """Count up forever; records its pid, and writes ``finally_marker`` when closed."""
    if pid_file is not None:
        _write_atomic(pid_file, str(os.getpid()))
    try:
        i = 0
        while True:
            yield i
            i += 1
    finally:
        finally_marker.write_text("finally ran")


def slow_endless(finally_marker: Path, pid_file: Path | None = None) -> Iterator[int]:
    """Like ``endless`` but one value every 50 ms (a generator mostly asleep)."""
    if pid_file is not None:
        _write_atomic(pid_file, str(os.getpid()))
    try:
        i = 0
        while True:
            yield i
            i += 1
            time.sleep(0.05)
    finally:
        finally_marker.write_text("finally ran")


def counting(progress: Path, every: int = 500) -> Iterator[int]:
    """Count up forever, writing how many values were handed over to ``progress``."""
    i = 0
    while True:
        yield i
        i += 1
        if i % every == 0:
            _write_atomic(progress, str(i))


class Opaque:
    """Not JSON-serializable: rendered by repr()."""

    def __repr__(self) -> str:
        return "Opaque<1>"


def samples() -> Iterator[object]:
    """One value of each kind the renderers treat differently; returns a summary."""
    yield "plain text"
    yield 42
    yield 2.5
    yield True
    yield {"name": "café", "n": [1, 2]}
    yield [1, "ü", None]
    yield (1, 2)
    yield Opaque()
    yield None
    return "done"


def returns(value):  # unannotated: the JSON-or-string rule
    """A plain function: its return value prints once."""
    return value


def returns_none(x: int = 1) -> None:
    """A plain function returning None: nothing printed."""
    return None


def gen_returns_none() -> Iterator[int]:
    yield 1
