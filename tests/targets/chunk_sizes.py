"""Functions for ``tests/test_chunk_sizes.py``: each call (one chunk) logs its first record and its size."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator


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


def overlapping(records: Iterator[int], workdir: str, wait_at: int = 2, patience: float = 60.0) -> Iterator[int]:
    """Each record doubled. Each call takes the next free number N as it starts (a file ``enter-N``,
    written before it reads a record); call ``wait_at`` holds its first record until call
    ``wait_at + 1`` has started, which happens only if a slot starts its next chunk's call while the
    current chunk runs (else it raises after ``patience`` seconds)."""
    work = Path(workdir)
    number = 0
    while True:
        try:
            fd = os.open(work / f"enter-{number}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())  # before the close: the test reads it only after the run
            os.close(fd)
            break
        except FileExistsError:
            number += 1
    for x in records:
        if number == wait_at:
            deadline = time.monotonic() + patience
            while not (work / f"enter-{wait_at + 1}").exists():
                if time.monotonic() > deadline:
                    raise TimeoutError("the next chunk's call did not start while this one ran")
                time.sleep(0.01)
        yield x * 2
