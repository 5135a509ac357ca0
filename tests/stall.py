"""Stall the sshd processes behind one SSH connection, as a hung host would (SIGSTOP), for liveness tests.

A stalled peer keeps its TCP connection open and answers nothing: only
keepalives that expect a reply can tell it from a quiet one. The sshd
processes serving one client are found through ``/proc``: the descendants of
the test sshd that hold the server end of a TCP connection whose client end
belongs to the given process.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any, Iterator

__all__ = ["sshd_sessions", "stalled"]


def _tcp_ports() -> dict[int, tuple[int, int]]:
    """Socket inode → (local port, remote port) of every TCP socket in this network namespace."""
    ports: dict[int, tuple[int, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            local, remote, inode = fields[1], fields[2], int(fields[9])
            ports[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16))
    return ports


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(int(link[len("socket:[") : -1]))
    return inodes


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def sshd_sessions(server: Any, client_pid: int) -> list[int]:
    """The processes of ``server``'s sshd serving the SSH connections that process ``client_pid`` holds to it."""
    ports = _tcp_ports()
    client_ports = {ports[i][0] for i in _socket_inodes(client_pid) if i in ports and ports[i][1] == server.port}
    serving = []
    for pid in _descendants(server.pid):
        if any(i in ports and ports[i][0] == server.port and ports[i][1] in client_ports for i in _socket_inodes(pid)):
            serving.append(pid)
    return serving


@contextlib.contextmanager
def stalled(server: Any, client_pid: int) -> Iterator[list[int]]:
    """SIGSTOP the sshd processes serving ``client_pid``'s connection(s) to ``server``; SIGCONT them on exit, always."""
    pids = sshd_sessions(server, client_pid)
    assert pids, f"no sshd process serves a connection of pid {client_pid}"
    stopped: list[int] = []
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        yield pids
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
