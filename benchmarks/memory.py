"""Peak RSS sampling for the benchmark runner: a process's ``VmHWM``, and the
kept-connection holder (``reuse``) serving a given sshd port.

The 1 GB memory measurement itself is ``benchmarks/pipe_memory.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def vmhwm_kb(pid: int) -> int:
    """Peak resident set size of ``pid`` in KiB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _tcp_inodes_to(port: int) -> set[int]:
    """Inodes of established TCP sockets whose remote end is ``port`` (this network namespace)."""
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                inodes.add(int(fields[9]))
    return inodes


def holder_pids(port: int) -> list[int]:
    """skyctl holder processes (kept connections, ``reuse``) with a connection to 127.0.0.1:``port``."""
    inodes = _tcp_inodes_to(port)
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if b"skyctl.holder" not in Path(f"/proc/{name}/cmdline").read_bytes():
                continue
            links = [os.readlink(f"/proc/{name}/fd/{fd}") for fd in os.listdir(f"/proc/{name}/fd")]
        except OSError:
            continue
        if any(link.startswith("socket:[") and int(link[8:-1]) in inodes for link in links):
            found.append(int(name))
    return found
