"""Functions for the failure-policy and report tests (``tests/test_report.py``): stdlib only."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator


def host_or_raise(bad: str) -> Iterator[str]:
    """Yields its host's name twice; on host ``bad`` raises instead, with control characters
    (an ESC, a NUL, a form feed) in the message: remote text the JUnit file must still hold."""
    host = os.environ.get("SKYCTL_TEST_HOST", "?")
    if host == bad:
        raise RuntimeError(f"{host} is bad \x1b[31mred\x00nul\x0cff <&>")
    yield host
    yield host


def double_until_stopped(records: Iterator[int], workdir: str) -> Iterator[int]:
    """Each record doubled; once the records end, writes ``workdir/running-<pid>`` and waits
    (its ``finally`` writes ``workdir/finally-<pid>``): the test sends Ctrl-C then."""
    work = Path(workdir)
    try:
        for x in records:
            yield x * 2
        (work / f"running-{os.getpid()}").write_text("yes")
        while True:
            time.sleep(0.05)
    finally:
        (work / f"finally-{os.getpid()}").write_text("ran")


def yield_then_wait(workdir: str) -> Iterator[int]:
    """Yields 1 and 2, writes ``workdir/running-<pid>``, then waits to be interrupted."""
    work = Path(workdir)
    try:
        yield 1
        yield 2
        (work / f"running-{os.getpid()}").write_text("yes")
        while True:
            time.sleep(0.05)
    finally:
        (work / f"finally-{os.getpid()}").write_text("ran")
