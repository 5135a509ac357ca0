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
import time
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


def _cpu_times() -> tuple[int, int]:
    """(all, idle) jiffies since boot, from /proc/stat's first line (iowait counts as idle)."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    return sum(fields), fields[3] + fields[4]


def quiet(busiest: float = 0.1, window: float = 0.2, windows: int = 2, deadline: float = 30.0) -> bool:
    """Wait (at most ``deadline`` s) until the machine has used under ``busiest`` of its CPU for ``windows``
    windows of ``window`` s in a row: what a run left behind (a Ray driver leaving its job, a spare warming
    up) is done before the next measurement starts. False at the deadline (no /proc: at once)."""
    end = time.monotonic() + deadline
    calm = 0
    try:
        before = _cpu_times()
    except OSError:
        return False
    while time.monotonic() < end:
        time.sleep(window)  # a sample of the machine's load: nothing to wait on
        after = _cpu_times()
        total, idle = after[0] - before[0], after[1] - before[1]
        before = after
        calm = calm + 1 if total and 1 - idle / total < busiest else 0
        if calm >= windows:
            return True
    return False
