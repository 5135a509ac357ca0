"""Remote functions for the Python API tests (``tests/test_api.py``), marked the way a user would.

They run on the host (the ``local`` child process or the ssh "remote"), so
their bodies use the stdlib only; ``skyctl`` is needed only on the client.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator

import skyctl


@skyctl.function
def fibonacci(n: int) -> Iterator[int]:
    a, b = 0, 1
    for _ in range(n):
        yield a
        a, b = b, a + b
    return n


@skyctl.function
def add(a: int, b: int = 10) -> int:
    return a + b


@skyctl.function
def worker_pid() -> int:
    return os.getpid()


@skyctl.function
def nothing() -> None:
    return None


@skyctl.function
def endless(finally_marker: str) -> Iterator[int]:
    try:
        i = 0
        while True:
            yield i
            i += 1
            time.sleep(0.01)
    finally:
        Path(finally_marker).write_text("finally ran")


@skyctl.function
def echo(data: Iterator[int], scale: int = 1) -> Iterator[int]:
    for x in data:
        yield x * scale


@skyctl.function
def total(data: Iterator[int]) -> int:
    return sum(data)


def _explode(n: int) -> None:
    raise ValueError(f"remote failure after {n}")


@skyctl.function
def fails_after(n: int) -> Iterator[int]:
    for i in range(n):
        yield i
    _explode(n)


@skyctl.function
def plain_fails() -> int:
    return {}["missing-key"]


class CustomError(Exception):
    """A user-defined exception: rebuilt locally as this very class."""


class Unrebuildable(Exception):
    """Pickles fine remotely, but ``Unrebuildable(*exc.args)`` fails locally."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(f"{code}: {why}")


@skyctl.function
def raises(kind: str) -> int:
    if kind == "custom":
        raise CustomError("custom failure")
    raise Unrebuildable(7, "cannot come back")


@skyctl.function
def hold_after_first(chunks: Iterator[bytes], release: str) -> Iterator[int]:
    """Take one chunk and report its size; take the rest only once ``release`` exists, and count them."""
    it = iter(chunks)
    yield len(next(it))
    while not os.path.exists(release):
        time.sleep(0.05)
    yield 1 + sum(1 for _ in it)


@skyctl.function
def yields_a_lock() -> Iterator[object]:
    """A value that cannot be pickled, after one that can."""
    import threading

    yield 1
    yield threading.Lock()
    yield 3


@skyctl.function
def fast_then_a_lock(n: int = 5000) -> Iterator[object]:
    """Fast values, then one that cannot be pickled as the last: the end must not look complete."""
    import threading

    yield from range(n)
    yield threading.Lock()
