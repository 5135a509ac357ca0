"""Examples for `skyctl pipe`: stdin records streamed into an Iterator[float]."""

from __future__ import annotations

from collections import deque
from typing import Iterator


def running_mean(data: Iterator[float]) -> Iterator[float]:
    """The mean of everything seen so far, after each value."""
    total, count = 0.0, 0
    for x in data:
        total += x
        count += 1
        yield total / count


def moving_average(data: Iterator[float], window: int = 3) -> Iterator[float]:
    """The mean of the last `window` values, once `window` values have arrived."""
    recent: deque[float] = deque(maxlen=window)
    total = 0.0
    for x in data:
        if len(recent) == window:
            total -= recent[0]
        recent.append(x)
        total += x
        if len(recent) == window:
            yield round(total / window, 6)


def to_fahrenheit(readings: Iterator[dict]) -> Iterator[dict]:
    """One row in, one row out: each chunk of a distributed `pipe` is independent
    (`--format csv -H farm`: every row carries its sensor and time along)."""
    for row in readings:
        yield {"timestamp": row["timestamp"], "sensor": row["sensor"],
               "fahrenheit": round(float(row["value"]) * 9 / 5 + 32, 2)}


def preflight() -> dict:
    """A CI preflight: what this host has. Fails (exit 1 for its host) when the disk is nearly full."""
    import os
    import platform
    import shutil

    usage = shutil.disk_usage(os.path.expanduser("~"))
    free = usage.free / usage.total
    if free < 0.05:
        raise RuntimeError(f"only {free:.0%} of the disk is free")
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "disk_free": round(free, 3)}
