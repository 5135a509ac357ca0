"""Targets of the protocol fuzz (tests/test_fuzz_protocol.py, benchmarks/fuzz.py): values, logs, input."""

from __future__ import annotations

import sys
from typing import Iterator


def count(n: int = 1501) -> Iterator[int]:
    """0..n-1, with a log line every 300 values (LOG frames between the batches)."""
    for i in range(n):
        if i % 300 == 0:
            print(f"log at {i}", file=sys.stderr, flush=True)
        yield i


def upper(lines: Iterator[str]) -> Iterator[str]:
    """Each line upper-cased."""
    for line in lines:
        yield line.upper()


def total(n: int) -> int:
    """A plain return value."""
    return sum(range(n))
