"""Functions for ``tests/test_progress.py``: stdlib only, they travel by value."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator


def held(data: Iterator[str], release: str, timeout: float = 120.0) -> Iterator[str]:
    """Echoes each record; after the first one waits until the file ``release`` exists
    (so the call is still running while the test looks for progress lines)."""
    for number, line in enumerate(data):
        yield line
        if number == 0:
            deadline = time.monotonic() + timeout
            while not Path(release).exists():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{release} never appeared")
                time.sleep(0.01)


def held_run(release: str, timeout: float = 120.0) -> Iterator[int]:
    """Yields 1, waits for ``release``, yields 2."""
    yield 1
    deadline = time.monotonic() + timeout
    while not Path(release).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} never appeared")
        time.sleep(0.01)
    yield 2
