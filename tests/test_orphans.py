"""Nothing outlives the call on the remote (issue 11, reproduction 6), on ``local`` and over ssh.

The target (``tests/targets/orphans.py``) starts three ``sleep 300``: a
plain child, one in a session of its own and a double-forked daemon, and
records their pids and start times. Every way a call can end must end all
three: a normal return, an exception, Ctrl-C, the reader of stdout going away,
the client killed (also while the function ignores the cancel), the worker
told to stop by SIGTERM. A process counts as ended when its ``/proc`` entry is
gone, is a zombie, or belongs to another process (a recycled pid: the start
time differs). The ssh "remote" is this machine, so the test sees its /proc.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

import skyctl

from helpers import REPO, pid_alive, run_skyctl, start_skyctl, wait_for
from pipetools import read_line
from targets import orphans

pytestmark = pytest.mark.timeout(120)

ORPHANS = "tests/targets/orphans.py"
CHILDREN = ("plain", "session", "daemon")
#: seconds within which every child must be gone (generous: the machine may be loaded)
ENDED_WITHIN = 30.0
#: the worker's note on stderr when it had to end something
NOTE = re.compile(r"skyctl: ended \d+ process(es)? the function left running \(nothing outlives a call\): .*sleep")


def _stat(pid: int) -> list[bytes] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()
    except OSError:
        return None


def running(pid: int, start: int) -> bool:
    """``pid`` is still the process that started at ``start``, and not a zombie."""
    fields = _stat(pid)
    return fields is not None and int(fields[19]) == start and fields[0] != b"Z"


def in_process_table(pid: int, start: int) -> bool:
    """``pid`` (that process) still has an entry, zombie or not: not reaped yet."""
    fields = _stat(pid)
    return fields is not None and int(fields[19]) == start


class Children:
    """The pid files of a test's calls; at teardown, whatever still runs is killed (so a failure leaves nothing)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.files: list[Path] = []

    def file(self, name: str = "pids") -> Path:
        path = self.tmp_path / name
        self.files.append(path)
        return path

    def read(self, path: Path, timeout: float = 60) -> dict[str, tuple[int, int]]:
        text = wait_for(lambda: path.exists() and path.read_text(), timeout, f"the children's pids in {path}")
        return {name: (pid, start) for name, (pid, start) in json.loads(text).items()}

    def cleanup(self) -> None:
        for path in self.files:
            if path.exists():
                for name, (pid, start) in json.loads(path.read_text()).items():
                    if name != "worker" and running(pid, start):
                        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def kids(tmp_path: Path) -> Iterator[Children]:
    children = Children(tmp_path)
    yield children
    children.cleanup()


def assert_all_ended(found: dict[str, tuple[int, int]], timeout: float = ENDED_WITHIN) -> None:
    def still() -> list[str]:
        return [f"{name} {pid}" for name, (pid, start) in found.items() if name in CHILDREN and running(pid, start)]

    try:
        wait_for(lambda: not still(), timeout, "the function's children to end")
    except AssertionError:
        raise AssertionError(f"still running after {timeout}s: {', '.join(still())}") from None


def start_endless(config: os.PathLike[str], pids: Path, *flags: str, function: str = "children_then_endless",
                  **popen: object) -> subprocess.Popen[bytes]:
    return start_skyctl("run", "-c", str(config), *flags, f"{ORPHANS}:{function}", "-a", f"pids={pids}", **popen)


@pytest.mark.parametrize("then, code", [("return", 0), ("raise", 1)])
def test_a_call_that_ends_ends_everything_it_started(host_config, kids, then, code):
    pids = kids.file()
    result = run_skyctl("run", "-c", str(host_config), f"{ORPHANS}:leave_children", "-a", f"pids={pids}",
                        "-a", f"then={then}", timeout=90)
    assert result.returncode == code, result.stderr
    if then == "return":
        assert result.stdout == "started\n"
    else:
        assert "RuntimeError: failing with three children running" in result.stderr
    assert NOTE.search(result.stderr), result.stderr
    assert_all_ended(kids.read(pids))


def test_ctrl_c_ends_everything_the_function_started(host_config, kids, procs):
    pids = kids.file()
    proc = start_endless(host_config, pids)
    procs.append(proc)
    assert read_line(proc.stdout, timeout=60) == b"0\n"
    found = kids.read(pids)
    assert all(running(*found[name]) for name in CHILDREN)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130, proc.stderr.read().decode()
    assert_all_ended(found)


def test_the_reader_going_away_ends_everything_the_function_started(host_config, kids, procs):
    """``| head -1``: skyctl's stdout is closed after the first value."""
    pids = kids.file()
    proc = start_endless(host_config, pids)
    procs.append(proc)
    assert read_line(proc.stdout, timeout=60) == b"0\n"
    found = kids.read(pids)
    proc.stdout.close()
    assert proc.wait(60) == 0, proc.stderr.read().decode()
    assert_all_ended(found)


@pytest.mark.parametrize("function", ["children_then_endless", "children_then_stuck"])
def test_killing_the_client_ends_everything_the_function_started(host_config, kids, procs, function):
    """Also when the function ignores the cancel (its ``finally`` blocks): the worker's exit ends them."""
    pids = kids.file()
    proc = start_endless(host_config, pids, function=function)
    procs.append(proc)
    assert read_line(proc.stdout, timeout=60) == b"0\n"
    found = kids.read(pids)
    proc.kill()
    proc.wait(30)
    assert_all_ended(found, timeout=60)
    wait_for(lambda: not pid_alive(found["worker"][0]), 60, "the worker to exit")


def test_killing_the_client_of_a_direct_ssh_connection_ends_everything(ssh_config, kids, procs):
    """``--no-reuse``: no holder in between, sshd closes the channel and the worker sees EOF."""
    pids = kids.file()
    proc = start_endless(ssh_config, pids, "--no-reuse")
    procs.append(proc)
    assert read_line(proc.stdout, timeout=60) == b"0\n"
    found = kids.read(pids)
    proc.kill()
    proc.wait(30)
    assert_all_ended(found)


def test_sigterm_to_the_worker_ends_everything_the_function_started(host_config, kids, procs):
    """What the transports send a worker that does not exit in time after EOF."""
    pids = kids.file()
    proc = start_endless(host_config, pids)
    procs.append(proc)
    assert read_line(proc.stdout, timeout=60) == b"0\n"
    found = kids.read(pids)
    worker, start = found["worker"]
    assert running(worker, start)
    os.kill(worker, signal.SIGTERM)
    assert_all_ended(found)
    assert proc.wait(60) == 6  # the worker is gone: connection lost


@pytest.fixture
def host_name(request: pytest.FixtureRequest, host_config) -> str:
    return {"local": "local", "ssh": "box"}[request.node.callspec.params["host_config"]]


def test_a_kept_worker_ends_and_reaps_each_calls_children_and_serves_the_next(host_config, host_name, kids,
                                                                              monkeypatch):
    """Through the API with one worker for several calls: when a call returns its children are already
    gone from the process table (ended and reaped before the call's last frame), and the worker lives on."""
    monkeypatch.chdir(REPO)  # the target module travels by value from under the current directory
    leave_children = skyctl.function(orphans.leave_children)
    with skyctl.host(host_name, host_config) as h:
        first, second = kids.file("first"), kids.file("second")
        assert leave_children(str(first)) >> h == "started"
        found = kids.read(first, timeout=0)
        assert [name for name in CHILDREN if in_process_table(*found[name])] == []
        assert running(*found["worker"])
        assert leave_children(str(second)) >> h == "started"
        again = kids.read(second, timeout=0)
        assert again["worker"] == found["worker"]
        assert [name for name in CHILDREN if in_process_table(*again[name])] == []
