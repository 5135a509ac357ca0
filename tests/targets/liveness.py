"""Functions for ``tests/test_liveness.py`` (run remotely, stdlib only)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator


def worker_pid() -> int:
    """The pid of the worker process that runs this call."""
    return os.getpid()


def pid_then_wait(release: str, timeout: float = 300.0) -> Iterator[int]:
    """Yield the worker's pid, then wait (quietly: nothing crosses the connection) until the file ``release`` exists."""
    yield os.getpid()
    deadline = time.monotonic() + timeout
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield -1
