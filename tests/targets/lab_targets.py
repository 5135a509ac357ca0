"""Functions for the fault-lab tests (``tests/test_lab_faults.py``): stdlib only, they travel by value.

Lab hosts share this machine's filesystem (only their network is their own),
so marker files in a test's directory are how a function tells the test where
it is, and how the test lets it go on.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator

from gates import wait_for  # a sibling module: this folder is on sys.path for a file target and the tests


def _host() -> str:
    return os.environ.get("SKYCTL_TEST_HOST", "?")


def double_with_gate(records: Iterator[int], gate_at: int, workdir: str) -> Iterator[int]:
    """Each record doubled. At record ``gate_at`` the worker writes its host and pid to
    ``workdir/at-<host>-<pid>`` and waits for ``workdir/gate``: the test cuts that host's link there."""
    work = Path(workdir)
    for x in records:
        if x == gate_at:
            (work / f"at-{_host()}-{os.getpid()}").write_text(_host())
            wait_for(work / "gate")
        yield x * 2


def sleeper_with_gate(workdir: str) -> Iterator[str]:
    """Broadcast: leaves ``workdir/started-<host>-<pid>``, yields its host, waits for ``workdir/gate``,
    then yields ``done <host>``. Its ``finally`` leaves ``workdir/finally-<host>``."""
    work = Path(workdir)
    try:
        (work / f"started-{_host()}-{os.getpid()}").write_text(_host())
        yield f"started {_host()}"
        wait_for(work / "gate", timeout=600)
        yield f"done {_host()}"
    finally:
        (work / f"finally-{_host()}").write_text("ran")


def busy_with_child(workdir: str, busy_on: str) -> Iterator[str]:
    """Broadcast: starts a child process (``sleep``) of its own, as a real job would. On host ``busy_on``
    it then keeps working (a GPU job that knows nothing of the network); elsewhere it waits for
    ``workdir/gate`` and ends. Whatever the call leaves on a host shows in that host's namespace."""
    import subprocess

    child = subprocess.Popen(["sleep", "600"])
    work = Path(workdir)
    try:
        (work / f"started-{_host()}-{os.getpid()}").write_text(str(child.pid))
        yield f"started {_host()} {child.pid}"
        if _host() == busy_on:
            while True:
                time.sleep(0.05)
        wait_for(work / "gate", timeout=600)
        yield f"done {_host()}"
    finally:
        child.kill()


def where_each(records: Iterator[str]) -> Iterator[str]:
    """The host that took each record, and the record's length: for counting chunks per host."""
    host = _host()
    for x in records:
        yield f"{host} {len(x)}"


def where() -> str:
    return _host()


def count(records: Iterator[str]) -> Iterator[str]:
    """Each record as it came (an I/O-bound pipe: the work is the transfer)."""
    for x in records:
        yield x
