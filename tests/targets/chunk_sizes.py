"""Functions for ``tests/test_chunk_sizes.py``: each call (one chunk) logs its first record and its size."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator

from gates import next_call_has_records  # a sibling module (see gates.py)


def sized(records: Iterator[int], log: str, delay: float = 0.0) -> Iterator[int]:
    """Each record doubled (after ``delay`` seconds); at the end of the call, ``FIRST SIZE`` appended to ``log``."""
    first, size = None, 0
    try:
        for x in records:
            if first is None:
                first = x
            size += 1
            if delay:
                time.sleep(delay)
            yield x * 2
    finally:
        with open(log, "a") as out:  # one short write in append mode: calls on other workers do not tear it
            out.write(f"{first} {size}\n")


def _enter(work: Path) -> int:
    """The next free call number N, taken as the call starts (a file ``enter-N`` holding the pid)."""
    number = 0
    while True:
        try:
            fd = os.open(work / f"enter-{number}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())  # before the close: the test reads it only after the run
            os.close(fd)
            return number
        except FileExistsError:
            number += 1


def pipelined(records: Iterator[int], workdir: str, wait_at: int = 2, patience: float = 60.0) -> Iterator[int]:
    """Each record doubled. Call ``wait_at`` holds its first record until the next call, queued behind
    it on the same worker, has records there (else it raises after ``patience`` seconds), then writes
    ``seen`` with whether the next call's function had been entered meanwhile (it must not be)."""
    work = Path(workdir)
    number = _enter(work)
    for x in records:
        if number == wait_at:
            seen = next_call_has_records(patience)
            (work / "seen").write_text(f"{seen} {(work / f'enter-{wait_at + 1}').exists()}")
            if not seen:
                raise TimeoutError("the next chunk's records did not reach the worker while this one ran")
            wait_at = -1
        yield x * 2


def dies_with_two_in_flight(records: Iterator[int], workdir: str, wait_at: int = 2, patience: float = 60.0) -> Iterator[int]:
    """Each record doubled. Call ``wait_at``, after 5 values, waits until the next call has records
    queued on its worker, then writes ``blocked-PID`` (the test kills that worker) and waits for a
    ``gate`` file; a re-run of its chunk takes a new number and does not wait."""
    work = Path(workdir)
    number = _enter(work)
    for i, x in enumerate(records):
        if number == wait_at and i == 5:
            if not next_call_has_records(patience):
                raise TimeoutError("the next chunk's records did not reach the worker while this one ran")
            (work / f"blocked-{os.getpid()}").write_text(os.environ.get("SKYCTL_TEST_HOST", "?"))
            deadline = time.monotonic() + patience
            while not (work / "gate").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        yield x * 2
