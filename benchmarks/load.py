"""A busy machine on demand: one CPU-bound process per core, for the length of a ``with`` block.

CI runners and GPU boxes that are training are never idle; a speed measured
only on an idle machine is not one users get. Rows measured "busy" run skyctl
and its baseline alike inside ``busy()``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Iterator

#: what each hog runs: pure Python arithmetic, no I/O, no memory growth
SPIN = "x = 0\nwhile True:\n    x = (x * 31 + 7) % 1000003"


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def busy(enabled: bool = True, hogs: int | None = None) -> Iterator[int]:
    """Run ``hogs`` (default: one per core) CPU-bound processes until the block ends; yields their number."""
    if not enabled:
        yield 0
        return
    procs = [subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(hogs if hogs is not None else cores())]
    try:
        yield len(procs)
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
