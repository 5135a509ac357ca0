"""Targets of tests/test_protocol_faults.py: a call that waits for ever, a log line without end."""

from __future__ import annotations

import os
import subprocess
import time


def wait_forever(marker: str, child: str = "") -> None:
    """Write this process's pid to ``marker`` (and start a child, its pid to ``child``), then wait."""
    if child:
        proc = subprocess.Popen(["sleep", "1000"])
        with open(child + ".tmp", "w") as f:
            f.write(str(proc.pid))
        os.replace(child + ".tmp", child)
    with open(marker + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(marker + ".tmp", marker)
    while True:
        time.sleep(1000)


def long_log(mib: int = 2) -> str:
    """``mib`` MiB on stderr in 64 KiB writes without a line break, then a value."""
    chunk = b"x" * 65536
    for _ in range(mib * 16):
        os.write(2, chunk)
    return "done"
