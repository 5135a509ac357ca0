"""Functions for the many-host failure and accounting tests (``tests/test_group_faults.py``): stdlib only."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator

from gates import wait_for  # a sibling module: this folder is on sys.path for a file target and the tests


def fails_at(records: Iterator[int], bad: int) -> Iterator[int]:
    """Each record as it is; raises at record ``bad`` (one value per record before it)."""
    for x in records:
        if x == bad:
            raise ValueError(f"record {x} is bad")
        yield x


def gate_at(records: Iterator[int], at: int, workdir: str) -> Iterator[int]:
    """Each record doubled. At record ``at`` the worker writes ``workdir/at-<pid>`` (its host's name
    inside) and waits for ``workdir/gate``: the test stops or kills that process there."""
    work = Path(workdir)
    for x in records:
        if x == at:
            (work / f"at-{os.getpid()}").write_text(os.environ.get("SKYCTL_TEST_HOST", "?"))
            wait_for(work / "gate")
        yield x * 2


def raises_on(bad: str, workdir: str, hosts: int) -> Iterator[str]:
    """On host ``bad``: raises once all ``hosts`` hosts have started; elsewhere: yields once, then
    waits to be cancelled (its ``finally`` leaves ``workdir/finally-<host>``)."""
    host = os.environ.get("SKYCTL_TEST_HOST", "?")
    work = Path(workdir)
    try:
        (work / f"started-{host}").write_text("yes")
        if host == bad:
            deadline = time.monotonic() + 60
            while len(list(work.glob("started-*"))) < hosts and time.monotonic() < deadline:
                time.sleep(0.01)
            raise RuntimeError(f"{host} is bad")
        yield f"started {host}"
        while True:
            time.sleep(0.05)
    finally:
        (work / f"finally-{host}").write_text("ran")
