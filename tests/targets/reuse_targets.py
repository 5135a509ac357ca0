"""Functions for ``tests/test_reuse.py`` (run remotely, stdlib only)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator


def worker_pid() -> int:
    """The pid of the worker process that runs this call."""
    return os.getpid()


def env_and_pid(name: str) -> list:
    """``[os.environ.get(name), pid]``."""
    return [os.environ.get(name), os.getpid()]


def pid_then_wait(release: str, timeout: float = 120.0) -> Iterator[int]:
    """Yield the worker's pid, then block until the file ``release`` exists (or ``timeout``)."""
    yield os.getpid()
    deadline = time.monotonic() + timeout
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield -1
