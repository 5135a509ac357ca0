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


def overlapping(records: Iterator[int], workdir: str) -> Iterator[int]:
    """Each record doubled. Each call takes the next free number N as it starts (a file ``enter-N``,
    written before it reads a record); call 0 holds its first record until call 1 has started,
    which happens only if a slot starts its next chunk's call while the current chunk runs."""
    work = Path(workdir)
    number = 0
    while True:
        try:
            os.close(os.open(work / f"enter-{number}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            break
        except FileExistsError:
            number += 1
    for x in records:
        if number == 0:
            deadline = time.monotonic() + 60
            while not (work / "enter-1").exists():
                if time.monotonic() > deadline:
                    raise TimeoutError("the next chunk's call did not start while this one ran")
                time.sleep(0.01)
        yield x * 2
