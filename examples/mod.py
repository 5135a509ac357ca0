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
