"""The functions the benchmarks ship to a host.

Stdlib only and nothing from ``benchmarks``: this module travels by value
(cloudpickle) like a user's own module does.
"""

from __future__ import annotations

import os
import time
from typing import Iterator


def one():
    """Time to first value: one value, as soon as possible."""
    yield 1


def count(n: int):
    """Output rate: ``n`` small ints."""
    yield from range(n)


def identity(lines: Iterator[str]):
    """Pipe rate: every stdin line straight back."""
    yield from lines


def echo(items: Iterator[str]):
    """Round trip: each item back as soon as it arrives (Python API)."""
    for item in items:
        yield item


def _vmhwm_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def slow_sink(lines: Iterator[str], pidfile: str = "", mb_per_s: float = 25.0):
    """Memory: consume stdin no faster than ``mb_per_s``; report the worker's own peak RSS.

    Writes this (worker) process's pid to ``pidfile`` first, so the caller can
    sample it from outside too. Returns a dict (printed as JSON by ``skyctl pipe``).
    """
    if pidfile:
        tmp = f"{pidfile}.tmp"
        with open(tmp, "w") as out:
            out.write(str(os.getpid()))
        os.replace(tmp, pidfile)
    started = time.monotonic()
    rate = mb_per_s * 1_000_000
    nbytes = nlines = 0
    for line in lines:
        nbytes += len(line) + 1
        nlines += 1
        if nlines % 256 == 0:
            ahead = nbytes / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    return {"pid": os.getpid(), "bytes": nbytes, "lines": nlines, "vmhwm_kb": _vmhwm_kb(),
            "seconds": round(time.monotonic() - started, 3)}
