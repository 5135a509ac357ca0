"""The watcher (``skyctl/remote/watcher.py``): a worker whose function holds the GIL for ever is ended
once its client is gone; the watcher is nobody's child the worker could see, and goes with the worker.

A function stuck in one C call that never lets go of the GIL stops every thread of its worker, so
the worker cannot notice its client leaving. Before the watcher such a worker spun on for good on
an ssh host (docs/security.md, *Limits*): the end-to-end tests below, against the suite's real sshd,
failed then (the worker was still there at the deadline).

Bounds, from the client gone: a hangup is seen at once (once the watcher runs: at most
``START_DELAY`` after the worker started), a silence after the liveness bound and at most one
``step`` more; then the worker has ``WATCH_GRACE`` to leave by itself; then its processes
get ``reaper.EXIT_GRACE`` after SIGTERM and up to ``KILL_WAIT`` after SIGKILL, and the worker's
SIGKILL as much again. ``SLACK`` is room for a loaded machine: every wait is a deadline that fails
the test, never a sleep it relies on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

from helpers import REPO, pid_alive, run_skyctl, start_skyctl, wait_for
from ssh_e2e import box
from stall import sshd_sessions

from skyctl.remote import reaper, watcher, wire
from skyctl.remote.worker import WATCH_GRACE

if TYPE_CHECKING:
    from sshd import SshServer

pytestmark = [pytest.mark.timeout(240), pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")]

T = "tests/targets/liveness.py"
#: room for a loaded machine (two cores, another suite running)
SLACK = 30.0
#: from a hangup until the worker is gone (see the module docstring)
AFTER_HANGUP = watcher.START_DELAY + WATCH_GRACE + reaper.EXIT_GRACE + 2 * reaper.KILL_WAIT
#: the short liveness of the silence test: ``keepalive`` × ``keepalive_count`` = 2 s
KEEPALIVE, KEEPALIVE_COUNT = 1.0, 2
BOUND = KEEPALIVE * KEEPALIVE_COUNT
#: from the client's last byte until the worker is gone
AFTER_SILENCE = BOUND + watcher.STEP + AFTER_HANGUP


@pytest.fixture(autouse=True)
def _no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # the keys offered are exactly the profile's


def running(pid: int, start: int | None) -> bool:
    """``pid`` is still the process that started at ``start`` (a recycled pid is not), and not a zombie."""
    proc = reaper.process(pid)
    return proc is not None and proc.alive and (start is None or proc.start == start)


@contextlib.contextmanager
def gil_held(config: str, run_dir: Path, tmp_path: Path, *flags: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``skyctl run`` of a function that holds the GIL for ever: its client process and its worker's pid, once
    the function runs. Afterwards, whatever the test did: the client is continued and killed, and a worker
    still there is killed (a failed test must not leave a process spinning)."""
    pid_file = tmp_path / "worker.pid"
    proc = start_skyctl("run", f"{T}:pid_then_hold_the_gil", "-a", f"pid_file={pid_file}", "-c", config, *flags,
                        env={"XDG_RUNTIME_DIR": str(run_dir)})
    worker, start = 0, None
    try:
        worker = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), 90, "the function to run"))
        found = reaper.process(worker)
        start = found.start if found else None
        assert running(worker, start), "the worker runs the function"
        yield proc, worker
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.communicate(timeout=60)
        if worker and running(worker, start):
            os.kill(worker, signal.SIGKILL)


def wait_gone(pid: int, within: float, what: str) -> float:
    """Wait for ``pid`` to be gone; fail after ``within`` + ``SLACK`` s. Returns the seconds it took."""
    began = time.monotonic()
    wait_for(lambda: not pid_alive(pid), timeout=within + SLACK, what=f"{what} (bound {within:g}s + {SLACK:g}s slack)")
    return time.monotonic() - began


# -- over SSH: the client gone, the GIL held ----------------------------------------------------------


@pytest.mark.parametrize("via", ["direct", "kept"])
def test_a_worker_holding_the_gil_is_ended_when_its_client_is_killed(sshd: SshServer, run_dir: Path, tmp_path: Path,
                                                                     via: str) -> None:
    """SIGKILL to ``skyctl run``: its connection (or, through a kept one, its channel) closes, sshd closes
    the worker's input; the worker cannot see it, its watcher does."""
    config = box(tmp_path / "skyward.yaml", sshd, extra=f"workdir: {tmp_path / 'wd'}")
    flags = ["--no-reuse"] if via == "direct" else []
    with gil_held(config, run_dir, tmp_path, *flags) as (client, worker):
        client.kill()
        client.wait(60)
        wait_gone(worker, AFTER_HANGUP, "the worker to be ended")


def test_a_worker_holding_the_gil_is_ended_when_its_client_goes_silent(sshd: SshServer, run_dir: Path,
                                                                       tmp_path: Path) -> None:
    """The client stopped (SIGSTOP): its TCP connection stays open and says nothing, as over a partition.
    After the liveness bound the watcher ends the worker, and then the sshd session it ran under."""
    config = box(tmp_path / "skyward.yaml", sshd, extra=f"workdir: {tmp_path / 'wd'}\n"
                 f"keepalive: {KEEPALIVE:g}\nkeepalive_count: {KEEPALIVE_COUNT}")
    with gil_held(config, run_dir, tmp_path, "--no-reuse") as (client, worker):
        sessions = sshd_sessions(sshd, client.pid)
        assert sessions, "an sshd session serves the client"
        client.send_signal(signal.SIGSTOP)
        wait_gone(worker, AFTER_SILENCE, "the worker to be ended")
        for pid in sessions:  # nothing of the call is left: its sshd session ended too (the worker was alone in it)
            wait_gone(pid, BOUND, "the worker's sshd session to end")


# -- the watcher itself --------------------------------------------------------------------------------


def test_the_watcher_is_no_child_of_the_worker_and_goes_with_it(host_config: os.PathLike[str], tmp_path: Path) -> None:
    """A worker's reaper never sees its watcher: the worker has no child (one system call ends a call), the
    watcher's parent is not the worker; it is named, runs the bundle's module in an interpreter of its own,
    holds the input and a pidfd and nothing else of the worker's; and once the worker exits, so does it."""
    result = run_skyctl("run", f"{T}:the_watcher", "-c", str(host_config), timeout=120)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["watcher"] > 0 and seen["children"] is False, seen
    assert seen["parent"] != seen["worker"] and seen["name"] == "skyctl-watcher", seen
    assert "-I\0-S\0-c\0" in seen["cmdline"] and "skyctl.remote.watcher" in seen["cmdline"], seen
    kept = sorted(target for target in seen["fds"].values() if target != os.devnull)
    assert len(kept) == 2 and "anon_inode:[pidfd]" in kept, seen["fds"]
    assert {int(fd) for fd, target in seen["fds"].items() if target == os.devnull} >= {0, 1, 2}, seen["fds"]
    wait_gone(seen["worker"], 0.0, "the worker to exit")
    wait_gone(seen["watcher"], 0.0, "the watcher to exit with its worker")
    assert not running(seen["watcher"], seen["start"])


#: a stand-in worker: starts its watcher on fd 0 (the test's pipe or socket; "proc": without a pidfd, as on
#: Linux < 5.3), becomes a subreaper, starts a child, says its pids once the watcher runs, then holds the GIL
#: for ever ("hold") or exits once a line comes ("exit")
STAND_IN = textwrap.dedent("""\
    import itertools, json, os, subprocess, sys, time
    from skyctl.remote import reaper, watcher

    mode, bound, grace, how = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    if how == "proc":
        del os.pidfd_open
    watcher.start(0, watcher.Clock(), bound or None, grace)
    watcher.started()
    reaper.become_subreaper()
    alone = not reaper.has_children()
    child = subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not watcher.pid() and time.monotonic() < deadline:
        time.sleep(0.01)
    print(json.dumps({"watcher": watcher.pid(), "child": child.pid, "alone": alone}), flush=True)
    if mode == "hold":
        sum(itertools.repeat(1))
    sys.stdin.readline()
    child.kill()
    child.wait()
""")


class StandIn:
    """The stand-in worker and its input's other end (a pipe's write end, or a socket)."""

    def __init__(self, mode: str, bound: float, grace: float, how: str = "pidfd", over: str = "pipe") -> None:
        self.sock = None
        if over == "socket":
            self.sock, theirs = socket.socketpair()
            stdin: int = theirs.fileno()
        else:
            stdin = subprocess.PIPE
        self.proc = subprocess.Popen([sys.executable, "-c", STAND_IN, mode, str(bound), str(grace), how], cwd=REPO,
                                     stdin=stdin, stdout=subprocess.PIPE)
        if self.sock is not None:
            theirs.close()
        assert self.proc.stdout is not None
        self.pids: dict[str, int] = json.loads(self.proc.stdout.readline() or b"{}")
        assert self.pids.get("watcher", 0) > 0 and self.pids["alone"], self.pids

    def say(self, data: bytes) -> None:
        if self.sock is not None:
            self.sock.sendall(data)
        else:
            assert self.proc.stdin is not None
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

    def hang_up(self) -> None:
        """The client's end goes: a pipe's write end closed; a socket shut for writing (POLLRDHUP, not POLLHUP)."""
        if self.sock is not None:
            self.sock.shutdown(socket.SHUT_WR)
        else:
            assert self.proc.stdin is not None
            self.proc.stdin.close()

    def end(self) -> None:
        for pid in (self.pids.get("child"), self.proc.pid, self.pids.get("watcher")):
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]
        self.proc.wait(60)
        for stream in (self.proc.stdin, self.proc.stdout, self.sock):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def stand_in(*args: object, **kw: str) -> Iterator[StandIn]:
    """A ``StandIn``; whatever is left of it is killed at the end."""
    worker = StandIn(*args, **kw)  # type: ignore[arg-type]
    try:
        yield worker
    finally:
        worker.end()


@pytest.mark.parametrize("how", ["pidfd", "proc"])
def test_the_watcher_exits_as_soon_as_its_worker_does(how: str) -> None:
    with stand_in("exit", 0.0, 60.0, how=how) as worker:
        worker.say(b"bye\n")
        assert worker.proc.wait(60) == 0
        wait_gone(worker.pids["watcher"], watcher.STEP, "the watcher to exit with its worker")


@pytest.mark.parametrize("how, over", [("pidfd", "pipe"), ("pidfd", "socket"), ("proc", "pipe")])
def test_a_hangup_ends_a_worker_holding_the_gil_and_its_processes(how: str, over: str) -> None:
    """The input's write end closed: after the grace, the worker's child is ended first (with the worker
    gone it would escape its tree), then the worker; and the watcher is gone too."""
    with stand_in("hold", 0.0, 0.5, how=how, over=over) as worker:
        worker.hang_up()
        assert worker.proc.wait(0.5 + 2 * reaper.KILL_WAIT + reaper.EXIT_GRACE + SLACK) == -signal.SIGKILL
        assert not pid_alive(worker.pids["child"]), "the worker's child was ended before the worker"
        wait_gone(worker.pids["watcher"], 0.0, "the watcher to exit")


def test_silence_ends_a_worker_holding_the_gil() -> None:
    """Nothing comes on the input (its write end open) for the bound: the worker is ended."""
    with stand_in("hold", 0.5, 0.5) as worker:
        assert worker.proc.wait(0.5 + watcher.STEP + 0.5 + 2 * reaper.KILL_WAIT + reaper.EXIT_GRACE + SLACK) \
            == -signal.SIGKILL
        assert not pid_alive(worker.pids["child"])


def test_bytes_waiting_unread_count_as_the_clients() -> None:
    """A worker that holds the GIL reads nothing: what the client sends meanwhile waits in the pipe, and
    still shows the client alive (no silence), as does a read by the worker (the shared clock)."""
    r, w = os.pipe()
    try:
        clock = watcher.Clock().view
        clock[0] = time.monotonic() - 1000  # the worker last read 1000 s ago
        watch = watcher._Watch(r, -1, os.getpid(), None, os.getppid(), clock, 10.0, 1.0)
        watch.queued, watch.moved = watch._unread(), time.monotonic() - 1000
        assert watch._silent() >= 1000
        os.write(w, wire.encode(wire.Kind.HEARTBEAT))
        assert watch._unread() == wire.HEADER.size
        assert watch._silent() < 500, "bytes came, unread"
        watch.moved = time.monotonic() - 1000
        assert watch._silent() >= 1000, "the same bytes, still unread: no news"
        clock[0] = time.monotonic()  # the worker read something
        assert watch._silent() < 500
    finally:
        os.close(r)
        os.close(w)
