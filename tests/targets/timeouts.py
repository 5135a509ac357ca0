"""Functions that run past a time limit (``--timeout``, ``--idle-timeout``; issue 20).

Each one says where it is through marker files in ``work`` (the test's directory,
shared with the ssh hosts: the test sshd runs on this machine), so the tests wait
for events, not for time.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Iterator

from gates import next_call_has_records  # a sibling module: shipped with this one (see gates.py)


def values_then_hang(work: str) -> Iterator[int]:
    """Starts a child (``sleep 600``, its pid in ``work/child``), yields 1, 2, 3, then waits for ever;
    its ``finally`` writes ``work/finally``."""
    child = subprocess.Popen(["sleep", "600"])
    Path(work, "child").write_text(str(child.pid))
    try:
        yield 1
        yield 2
        yield 3
        time.sleep(600)
        yield 4
    finally:
        Path(work, "finally").write_text("ran")


def host_lines(work: str, hangs: str) -> Iterator[str]:
    """Three lines naming the host (``SKYCTL_TEST_HOST``); on host ``hangs``, then waits for ever."""
    host = os.environ.get("SKYCTL_TEST_HOST", "?")
    for i in range(3):
        yield f"{host} {i}"
    if host == hangs:
        try:
            time.sleep(600)
        finally:
            Path(work, f"finally-{host}").write_text("ran")


def upper(records: Iterator[str], work: str, hang: str, once: bool = True) -> Iterator[str]:
    """Each record upper-cased; at the record ``hang`` it waits for ever: the first time only
    (``once``: a marker ``work/hung`` says it did), or every time."""
    for record in records:
        if record == hang:
            marker = Path(work, "hung")
            if not once or not marker.exists():
                marker.write_text(os.environ.get("SKYCTL_TEST_HOST", "?"))
                time.sleep(600)
        yield record.upper()


def busy_until_stopped(work: str) -> Iterator[int]:
    """Writes the worker's pid to ``work/pid`` and yields a value every 50 ms for ever: the call
    makes progress until the test stops the worker (SIGSTOP)."""
    Path(work, "pid").write_text(str(os.getpid()))
    i = 0
    while True:
        i += 1
        yield i
        time.sleep(0.05)


def sleeps(seconds: float = 600) -> int:
    """A plain function stuck in a C call."""
    time.sleep(seconds)
    return 1


def stubborn(work: str) -> Iterator[int]:
    """Swallows the interrupt and waits again: the worker gives it up after its grace."""
    yield 1
    Path(work, "waiting").write_text("yes")
    while True:
        try:
            time.sleep(600)
        except BaseException:
            Path(work, "interrupted").write_text("yes")


def holds_the_gil(work: str) -> Iterator[int]:
    """One C call that never lets go of the GIL (a regex that backtracks for ever): the worker's own
    threads cannot run, so the client's deadline ends it."""
    import re

    yield 1
    Path(work, "pid").write_text(str(os.getpid()))
    re.match(r"(a+)+$", "a" * 64 + "b")
    yield 2


def upper_then_hold_the_gil(records: Iterator[str], work: str, hang: str) -> Iterator[str]:
    """Each record upper-cased; at the record ``hang`` (the first time: a marker ``work/hung``), once
    the next chunk's call waits queued on this worker with its records, it holds the GIL for ever:
    the client's deadline ends the worker, with that queued call on it."""
    import re

    for record in records:
        if record == hang and not Path(work, "hung").exists():
            Path(work, "hung").write_text(os.environ.get("SKYCTL_TEST_HOST", "?"))
            if not next_call_has_records(60):
                raise TimeoutError("no call queued behind this one")
            Path(work, "queued").write_text("yes")
            Path(work, "hung.pid").write_text(str(os.getpid()))
            re.match(r"(a+)+$", "a" * 64 + "b")
        yield record.upper()
