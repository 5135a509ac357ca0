"""Functions for ``tests/test_chunk_sizes.py``: each call (one chunk) logs its first record and its size."""

from __future__ import annotations

import time
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
