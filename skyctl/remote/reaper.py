"""Nothing the function started outlives its call: the worker ends its descendants.

Why: the contract says nothing outlives a call on the remote. A process the
user's function starts (``subprocess.Popen``, ``cmd &`` in a shell, a
``multiprocessing`` pool, a double-forked daemon) would otherwise keep running
on the host after the call ended, after Ctrl-C, after the client was killed:
holding GPUs, ports and files on a machine that other people share, with nobody
left to stop it.

How (Linux): the worker makes itself a *child subreaper*
(``prctl(PR_SET_CHILD_SUBREAPER)``), so a process whose parent exits (the
grandchild of a double fork, ``setsid cmd &``) is re-parented to the worker
instead of to init: everything the function started stays in the worker's
tree, whatever session or process group it put itself in. When a call ends,
``end_descendants`` walks that tree (the ppid links in ``/proc/*/stat``), sends
SIGTERM (and SIGCONT, so a stopped process gets it), waits up to a grace
period for the tree to empty (polling with a deadline: a process that exits at
once costs milliseconds), sends SIGKILL to whatever is left (and to anything
forked meanwhile), and reaps the zombies. A process is known by its pid *and*
its start time, and is signalled through a pidfd where the system has them,
so a pid that was recycled meanwhile is never signalled.

Elsewhere (no ``/proc``, no subreaper): the tree comes from ``ps``; processes
still attached to the worker's tree are ended, a double-forked daemon escapes.

Cost: with no child at all (``waitid(..., WNOHANG)`` says ECHILD, and with the
subreaper set no child means no descendant), ending a call is one system call.

Not covered: a worker that is itself killed with SIGKILL (or calls
``os._exit``) cannot end anything; its descendants go to the next subreaper up.

Stdlib only: shipped to the remote inside the worker bundle.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import NamedTuple

#: prctl option (linux/prctl.h)
PR_SET_CHILD_SUBREAPER = 36

#: seconds a process gets to exit after SIGTERM when a call ends
CALL_GRACE = 1.0
#: the same when the worker itself is on its way out (its client is gone, or it got SIGTERM):
#: the transports send SIGKILL one second after their SIGTERM
EXIT_GRACE = 0.5
#: seconds to wait for SIGKILLed processes to disappear (one stuck in the kernel may take longer)
KILL_WAIT = 1.0
#: first and longest pause between two looks at the tree
FIRST_PAUSE, MAX_PAUSE = 0.001, 0.05


class Proc(NamedTuple):
    """One process of the tree, as seen at one moment."""

    pid: int
    ppid: int
    #: start time (clock ticks since boot, from /proc); None when unknown (``ps``)
    start: int | None
    #: one-letter state (``R``, ``S``, ``Z`` for a zombie, ...)
    state: str
    #: the command name
    name: str

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X", "x")


_lock = threading.RLock()  # re-entrant: the SIGTERM handler may run on a thread already inside


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children (Linux); False where not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _proc_table() -> dict[int, Proc]:
    """Every process, from ``/proc/<pid>/stat``."""
    table: dict[int, Proc] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            proc = _read_stat(int(entry))
            if proc is not None:
                table[proc.pid] = proc
    return table


def process(pid: int) -> Proc | None:
    """One process as ``/proc`` shows it now; None when it is gone (or where there is no ``/proc``)."""
    return _read_stat(pid)


def _read_stat(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:  # gone meanwhile
        return None
    head, _, rest = data.rpartition(b")")  # the name may hold spaces and parentheses
    fields = rest.split()
    try:
        # after the name: state(3) ppid(4) ... starttime(22)
        return Proc(pid, int(fields[1]), int(fields[19]), fields[0].decode(), head.partition(b"(")[2].decode(errors="replace"))
    except (IndexError, ValueError):
        return None


def _ps_table() -> dict[int, Proc]:
    """Every process, from ``ps`` (systems without ``/proc``); empty when ``ps`` fails."""
    import subprocess  # only here: a worker on Linux does not pay for importing it

    try:
        ps = subprocess.Popen(["ps", "-A", "-o", "pid=", "-o", "ppid=", "-o", "stat=", "-o", "comm="],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:
        return {}
    try:
        out, _ = ps.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        ps.kill()
        ps.wait()
        return {}
    table: dict[int, Proc] = {}
    for line in out.decode(errors="replace").splitlines():
        parts = line.split(None, 3)
        try:
            pid, ppid = int(parts[0]), int(parts[1])
        except (IndexError, ValueError):
            continue
        if pid != ps.pid:  # ps itself, already gone
            table[pid] = Proc(pid, ppid, None, parts[2][:1] if len(parts) > 2 else "", parts[3] if len(parts) > 3 else "")
    return table


#: what an OpenSSH session process is called (``sshd-session`` from OpenSSH 9.8 on)
SSH_SESSION_NAMES = ("sshd", "sshd-session")


def end_ssh_session_when_alone(wait: float, session: int | None = None, me: int | None = None) -> bool:
    """End the OpenSSH session this process runs under once no other process of it is left,
    waiting up to ``wait`` s for those (a kept connection's other calls keep it); True if signalled.
    ``session``/``me``: that session's process and the process it served, when another process acts for
    it (the watcher for a worker it ended; default: this process's parent and this process).

    For a worker whose client went silent (a partition): sshd would otherwise hold the
    session, and so the host's resources, until TCP gives up on its last unacknowledged
    packets (about 15 minutes). Only a parent named sshd, never init; Linux (``/proc``) only.
    """
    parent = os.getppid() if session is None else session
    me = os.getpid() if me is None else me
    if parent <= 1 or not os.path.isdir("/proc/self"):
        return False
    deadline = time.monotonic() + wait
    while True:
        table = _proc_table()
        session = table.get(parent)
        if session is None or session.name not in SSH_SESSION_NAMES:
            return False
        if not any(p.ppid == parent and p.pid != me and p.alive for p in table.values()):
            break
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    try:
        os.kill(parent, signal.SIGTERM)
    except OSError:
        return False
    return True


def process_table() -> dict[int, Proc]:
    """Every process visible to this one, by pid."""
    return _proc_table() if os.path.isdir("/proc/self") else _ps_table()


def descendants(root: int, table: dict[int, Proc] | None = None) -> list[Proc]:
    """Every process below ``root`` (children first, then theirs), zombies included; not ``root``."""
    table = process_table() if table is None else table
    children: dict[int, list[Proc]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc)
    found: list[Proc] = []
    todo = [root]
    seen = {root}
    while todo:
        for child in children.get(todo.pop(), ()):
            if child.pid not in seen:
                seen.add(child.pid)
                found.append(child)
                todo.append(child.pid)
    return found


def has_children() -> bool:
    """Whether this process has any child (running or a zombie); True when it cannot tell."""
    waitid = getattr(os, "waitid", None)
    if waitid is None:
        return True
    try:
        waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    except OSError:
        return True
    return True


def reap_zombies() -> None:
    """Collect every child of this process that has exited."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        except InterruptedError:
            continue
        if pid == 0:
            return


def send(proc: Proc, sig: int) -> bool:
    """Signal ``proc`` if it is still the same process (same start time); False when it is gone or not ours."""
    if proc.pid == os.getpid() or proc.pid <= 1:
        return False
    fd = None
    try:
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None and proc.start is not None:
            try:
                fd = pidfd_open(proc.pid)  # from here on ``fd`` is this pid's process, whatever happens to the pid
            except ProcessLookupError:
                return False
            except OSError:  # no pidfds in this kernel: os.kill below
                fd = None
        if proc.start is not None:
            now = _read_stat(proc.pid)
            if now is None or now.start != proc.start:
                return False  # gone, or the pid names another process now
        if fd is not None:
            signal.pidfd_send_signal(fd, sig)
        else:
            os.kill(proc.pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False
    except OSError:
        return False
    finally:
        if fd is not None:
            os.close(fd)


def end_descendants(grace: float = CALL_GRACE, kill_wait: float = KILL_WAIT, root: int | None = None) -> list[Proc]:
    """End every process below ``root`` (default: this process): SIGTERM, up to ``grace``
    seconds to exit, then SIGKILL (waiting up to ``kill_wait`` for them to go).

    Processes forked meanwhile are signalled too. When ``root`` is this process its
    zombies are reaped (so nothing is left in the process table either). Returns the
    processes that were still running and were signalled.
    """
    own = root is None or root == os.getpid()
    top = os.getpid() if root is None else root
    with _lock:
        if own and not has_children():
            return []
        ended: dict[tuple[int, int | None], Proc] = {}
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, kill_wait)):
            deadline = time.monotonic() + wait
            pause = FIRST_PAUSE
            signalled: set[tuple[int, int | None]] = set()
            while True:
                if own:
                    reap_zombies()
                live = [p for p in descendants(top) if p.alive and p.pid != os.getpid()]
                if not live:
                    if own:
                        reap_zombies()  # those that died since the reap above: with no live parent, all ours
                    return list(ended.values())
                for proc in live:
                    key = (proc.pid, proc.start)
                    if key in signalled:
                        continue
                    signalled.add(key)
                    if send(proc, sig):
                        ended.setdefault(key, proc)
                        if sig == signal.SIGTERM:
                            send(proc, signal.SIGCONT)  # a stopped process acts on SIGTERM only once continued
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(pause, left))
                pause = min(pause * 2, MAX_PAUSE)
        if own:
            reap_zombies()
        return list(ended.values())


def describe(procs: list[Proc], limit: int = 5) -> str:
    """``sleep (1234), sh (1235)``, and how many more past ``limit``."""
    names = [f"{p.name} ({p.pid})" for p in procs[:limit]]
    if len(procs) > limit:
        names.append(f"{len(procs) - limit} more")
    return ", ".join(names)
