"""``skyctl.remote.reaper`` on real processes: finding a tree, ending it, reaping it, never a recycled pid.

In this process the reaper is pointed at a subtree (``root=``): ending *this*
process's descendants would take the suite's sshd with them. What needs a
subreaper (adopting a double-forked daemon, reaping zombies) runs in a child
Python of its own, which is what the worker is.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator

import pytest

from skyctl.remote import reaper

from helpers import REPO, wait_for
from targets.orphans import DAEMON

pytestmark = [pytest.mark.timeout(120), pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")]


def state(pid: int) -> str | None:
    """The process's state letter, None once it has no /proc entry."""
    proc = reaper._read_stat(pid)
    return proc.state if proc else None


@pytest.fixture
def shells() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Shells a test starts (each the root of a tree); they and their trees are killed at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for sh in started:
        for proc in reaper.descendants(sh.pid):
            if proc.alive:
                reaper.send(proc, signal.SIGKILL)
        sh.kill()
        sh.wait(30)


def tree(shells: list[subprocess.Popen[bytes]], script: str, sleeps: int) -> subprocess.Popen[bytes]:
    """``sh -c script``, once ``sleeps`` ``sleep`` processes run below it."""
    sh = subprocess.Popen(["sh", "-c", script])
    shells.append(sh)
    wait_for(lambda: len([p for p in reaper.descendants(sh.pid) if p.name == "sleep" and p.alive]) == sleeps,
             30, f"{sleeps} sleeps under the shell")
    return sh


def test_descendants_are_the_whole_tree_whatever_session_or_group(shells):
    sh = tree(shells, "sleep 300 & setsid sleep 300 & (sleep 300 & wait) & wait", sleeps=3)
    below = reaper.descendants(sh.pid)
    sleeps = [p for p in below if p.name == "sleep"]
    assert len(sleeps) == 3
    assert {p.ppid for p in below} <= {sh.pid} | {p.pid for p in below}
    assert all(p.start and p.start > 0 for p in below)
    assert sh.pid not in {p.pid for p in below} and os.getpid() not in {p.pid for p in below}


def test_end_descendants_ends_a_tree_and_does_not_wait_out_the_grace(shells):
    sh = tree(shells, "sleep 300 & setsid sleep 300 & (sleep 300 & wait) & wait", sleeps=3)
    started = time.monotonic()
    ended = reaper.end_descendants(grace=60, kill_wait=60, root=sh.pid)
    assert time.monotonic() - started < 30  # they exit on SIGTERM: no waiting for the 60 s
    assert len([p for p in ended if p.name == "sleep"]) == 3
    assert [p for p in reaper.descendants(sh.pid) if p.alive] == []
    assert sh.wait(30) is not None  # its `wait` returned: the shell is not touched, only what it started


def test_a_process_that_ignores_sigterm_gets_sigkill_after_the_grace(shells):
    sh = tree(shells, "trap '' TERM; sleep 300; :", sleeps=1)  # the ignored TERM is inherited by sleep
    (sleep,) = [p for p in reaper.descendants(sh.pid) if p.name == "sleep"]
    started = time.monotonic()
    reaper.end_descendants(grace=0.3, kill_wait=60, root=sh.pid)
    assert time.monotonic() - started >= 0.3
    assert state(sleep.pid) in (None, "Z")  # dead (its shell reaps it)
    assert sh.wait(30) == 0  # the shell went on with `:`


def test_a_stopped_process_is_continued_so_that_sigterm_ends_it(shells):
    sh = tree(shells, "sleep 300 & wait", sleeps=1)
    (sleep,) = [p for p in reaper.descendants(sh.pid) if p.name == "sleep"]
    os.kill(sleep.pid, signal.SIGSTOP)
    wait_for(lambda: state(sleep.pid) == "T", 30, "the sleep to stop")
    started = time.monotonic()
    reaper.end_descendants(grace=60, kill_wait=60, root=sh.pid)
    assert time.monotonic() - started < 30  # SIGTERM acted: no SIGKILL after the 60 s grace
    assert state(sleep.pid) in (None, "Z")


def test_a_recycled_pid_is_never_signalled(shells):
    sh = tree(shells, "sleep 300 & wait", sleeps=1)
    (sleep,) = [p for p in reaper.descendants(sh.pid) if p.name == "sleep"]
    impostor = sleep._replace(start=sleep.start - 1)  # what a process that had this pid before would look like
    assert reaper.send(impostor, signal.SIGKILL) is False
    assert reaper._read_stat(sleep.pid).alive
    assert reaper.send(sleep, signal.SIGKILL) is True
    wait_for(lambda: state(sleep.pid) in (None, "Z"), 30, "the sleep to die")


def test_without_proc_the_tree_comes_from_ps(shells, monkeypatch):
    sh = tree(shells, "sleep 300 & setsid sleep 300 & wait", sleeps=2)
    from_ps = reaper._ps_table()
    from_proc = reaper._proc_table()
    assert {p.pid for p in reaper.descendants(sh.pid, from_ps)} == {p.pid for p in reaper.descendants(sh.pid, from_proc)}
    monkeypatch.setattr(reaper, "process_table", reaper._ps_table)
    ended = reaper.end_descendants(grace=60, kill_wait=60, root=sh.pid)
    assert len(ended) == 2 and all(p.start is None for p in ended)
    assert sh.wait(30) is not None


def test_describe_names_a_few_and_counts_the_rest():
    procs = [reaper.Proc(100 + i, 1, 0, "S", "sleep") for i in range(7)]
    assert reaper.describe(procs[:2]) == "sleep (100), sleep (101)"
    assert reaper.describe(procs, limit=5).endswith("sleep (104), 2 more")


SUBREAPER = textwrap.dedent("""\
    import json, os, subprocess, sys, time
    from skyctl.remote import reaper

    out = {"no_children_at_first": not reaper.has_children(), "nothing_to_end": reaper.end_descendants() == []}
    out["subreaper"] = reaper.become_subreaper()
    daemon_file = sys.argv[1]
    plain = subprocess.Popen(["sleep", "300"])
    first = subprocess.Popen([sys.executable, "-c", sys.argv[2], daemon_file])
    first.wait()
    deadline = time.monotonic() + 30
    while not os.path.exists(daemon_file) and time.monotonic() < deadline:
        time.sleep(0.01)
    daemon = int(open(daemon_file).read())
    while reaper._read_stat(daemon).ppid != os.getpid() and time.monotonic() < deadline:
        time.sleep(0.01)  # its parent exits right after writing the file
    out["adopted"] = reaper._read_stat(daemon).ppid == os.getpid()
    ended = reaper.end_descendants()
    out["ended"] = {plain.pid, daemon} <= {p.pid for p in ended}
    out["left_in_proc"] = [pid for pid in (plain.pid, daemon) if os.path.exists(f"/proc/{pid}")]
    out["children_after"] = reaper.has_children()
    print(json.dumps(out))
""")


def test_a_subreaper_adopts_a_double_forked_daemon_ends_it_and_reaps_everything(tmp_path: Path):
    done = subprocess.run([sys.executable, "-c", SUBREAPER, str(tmp_path / "daemon"), DAEMON], capture_output=True,
                          text=True, timeout=90, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"no_children_at_first": True, "nothing_to_end": True, "subreaper": True,
                                       "adopted": True, "ended": True, "left_in_proc": [], "children_after": False}


def test_a_worker_never_ends_a_parent_that_is_not_an_sshd_session() -> None:
    """After a silent client the worker ends its sshd session; under anything else (here this
    test's python) it must signal nothing."""
    code = "from skyctl.remote import reaper; print(reaper.end_ssh_session_when_alone(0.0))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.stdout.strip() == "False", done.stderr
