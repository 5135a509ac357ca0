"""Target functions for ``tests/test_orphans.py``: functions that start processes and leave them running.

Each starts three ``sleep 300``: a plain ``Popen`` child, one in a session
of its own (``start_new_session=True``), and a daemon (a double fork with a
``setsid`` between: its parent exits, so it is nobody's child any more), and
writes ``{"plain": [pid, start], "session": [...], "daemon": [...]}`` to the
file named by ``pids`` (``start``: the process's start time from
``/proc/PID/stat``, so a test can tell a recycled pid apart), and the
worker's own as ``"worker"``. Run on the host, so stdlib only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

#: the daemon: fork, setsid, fork again; the grandchild execs sleep, its pid goes to argv[1]
DAEMON = r"""
import os, sys
if os.fork():
    os._exit(0)
os.setsid()
pid = os.fork()
if pid:
    tmp = sys.argv[1] + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.replace(tmp, sys.argv[1])
    os._exit(0)
fd = os.open(os.devnull, os.O_RDWR)
for n in (0, 1, 2):
    os.dup2(fd, n)
os.execvp("sleep", ["sleep", "300"])
"""


def _start_time(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rpartition(b")")[2].split()[19])


def _wait_for_file(path: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout}s")
        time.sleep(0.01)
    return path.read_text()


def start_children(pids: Path) -> dict[str, list[int]]:
    """Start the three sleeps; record their pids and start times in ``pids``."""
    pids = Path(pids)
    plain = subprocess.Popen(["sleep", "300"])
    session = subprocess.Popen(["sleep", "300"], start_new_session=True)
    daemon_file = pids.with_name(pids.name + ".daemon")
    first = subprocess.Popen([sys.executable, "-c", DAEMON, str(daemon_file)])
    first.wait()
    daemon = int(_wait_for_file(daemon_file))
    found = {name: [pid, _start_time(pid)] for name, pid in
             (("plain", plain.pid), ("session", session.pid), ("daemon", daemon), ("worker", os.getpid()))}
    tmp = pids.with_name(pids.name + ".tmp")
    tmp.write_text(json.dumps(found))
    os.replace(tmp, pids)
    return found


def leave_children(pids: Path, then: str = "return") -> str:
    """Start the children, then return (``then=return``) or raise (``then=raise``) with them running."""
    start_children(pids)
    if then == "raise":
        raise RuntimeError("failing with three children running")
    return "started"


def children_then_endless(pids: Path) -> Iterator[int]:
    """Start the children, then yield 0, 1, 2, ... forever (a value every 50 ms)."""
    start_children(pids)
    i = 0
    while True:
        yield i
        i += 1
        time.sleep(0.05)


def children_then_stuck(pids: Path) -> Iterator[int]:
    """Start the children, yield once, then ignore a cancel: its ``finally`` blocks for 300 s."""
    start_children(pids)
    try:
        while True:
            yield 0
            time.sleep(0.05)
    finally:
        time.sleep(300)

