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


def pid_then_hold_the_gil(pid_file: str) -> None:
    """Write the worker's pid to ``pid_file``, then hold the GIL for ever in one C call (``sum`` over an
    endless iterator of ints: no bytecode runs, so no signal handler and no other thread of the worker)."""
    import itertools

    with open(pid_file + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(pid_file + ".tmp", pid_file)
    sum(itertools.repeat(1))


def the_watcher() -> dict[str, object]:
    """The worker's watcher as the worker sees it: its pid, parent, start time, name, command line and open
    fds (number → what it points at); and whether the worker has a child."""
    import time

    from skyctl.remote import reaper, watcher

    deadline = time.monotonic() + 60
    while not watcher.pid() and time.monotonic() < deadline:  # it starts beside the worker
        time.sleep(0.01)
    pid = watcher.pid()
    proc = reaper.process(pid)
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read().decode(errors="replace")
    fds = {name: os.readlink(f"/proc/{pid}/fd/{name}") for name in os.listdir(f"/proc/{pid}/fd")}
    return {"worker": os.getpid(), "watcher": pid, "parent": proc.ppid if proc else None,
            "start": proc.start if proc else None, "name": proc.name if proc else None, "cmdline": cmdline,
            "fds": fds, "children": reaper.has_children()}
