"""Functions for the many-hosts tests (``tests/test_groups.py``): stdlib only, they travel by value."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator

from gates import wait_for  # a sibling module: this folder is on sys.path for a file target and the tests


def double_with_gate(records: Iterator[int], gate_at: int, workdir: str) -> Iterator[int]:
    """Each record doubled. At record ``gate_at`` the worker writes its pid to
    ``workdir/blocked-<pid>`` and waits for ``workdir/gate``: the test kills it there."""
    work = Path(workdir)
    for x in records:
        if x == gate_at:
            (work / f"blocked-{os.getpid()}").write_text(os.environ.get("SKYCTL_TEST_HOST", "?"))
            wait_for(work / "gate")
        yield x * 2


def double(records: Iterator[int]) -> Iterator[int]:
    for x in records:
        yield x * 2


def slow_here(records: Iterator[int], delay: float = 0.05) -> Iterator[str]:
    """Slow on hosts whose env sets ``SKYCTL_TEST_SLOW``: the tag of the host that took each record."""
    slow = bool(os.environ.get("SKYCTL_TEST_SLOW"))
    for x in records:
        if slow:
            time.sleep(delay)
        yield f"{os.environ.get('SKYCTL_TEST_HOST', '?')} {x}"


def fails_at(records: Iterator[int], bad: int, workdir: str) -> Iterator[int]:
    """Raises at record ``bad``; every call's ``finally`` leaves a marker."""
    try:
        for x in records:
            if x == bad:
                raise ValueError(f"record {x} is bad")
            yield x
    finally:
        Path(workdir, f"finally-{os.getpid()}").write_text("ran")


def forever(workdir: str) -> Iterator[str]:
    """Yields once, then waits; its ``finally`` leaves a marker named after the host."""
    host = os.environ.get("SKYCTL_TEST_HOST", "?")
    try:
        yield f"started {host}"
        while True:
            time.sleep(0.05)
    finally:
        Path(workdir, f"finally-{host}").write_text("ran")


def where() -> str:
    return os.environ.get("SKYCTL_TEST_HOST", "?")


def chunk_sum(records: Iterator[int]) -> int:
    return sum(records)
