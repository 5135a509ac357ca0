"""``skyctl pipe`` cancelled mid-stream, on ``local`` and over ssh: ``| head``, Ctrl-C, SIGKILL.

As for ``run``: the remote generator's ``finally`` runs and the worker exits.
The target (``progress``) leaves files in a marks directory: its worker's
pid, the count of records seen, and ``closed`` from its ``finally``; tests
wait for those files rather than sleeping.
"""

from __future__ import annotations

import shlex
import signal
import subprocess

import pytest

from helpers import REPO, clean_env, pid_alive, skyctl_argv, start_skyctl, wait_for
from pipetools import PIPES, read_line

pytestmark = pytest.mark.timeout(120)


def worker_pid(marks) -> int:
    return int(wait_for(lambda: (marks / "pid").exists() and (marks / "pid").read_text(), 60, "the worker's pid"))


def test_head_ends_the_pipe_quietly_and_closes_the_generator(host_config, tmp_path):
    script = (f"yes | {shlex.join(skyctl_argv())} pipe {PIPES}:progress -a marks={shlex.quote(str(tmp_path))} "
              f"-c {shlex.quote(str(host_config))} | head -3; echo \"status=${{PIPESTATUS[1]}}\" >&2")
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=90, cwd=REPO, env=clean_env())
    assert done.stdout == "y\ny\ny\n"
    assert done.stderr.strip().splitlines()[-1] == "status=0", done.stderr
    assert "Error" not in done.stderr and "Traceback" not in done.stderr
    assert (tmp_path / "closed").read_text() == "finally ran"
    pid = worker_pid(tmp_path)
    wait_for(lambda: not pid_alive(pid), 30, "the worker to exit")


@pytest.fixture
def running(host_config, tmp_path):
    """skyctl pipe progress, its stdin open, after one record went through; killed at the end."""
    err = (tmp_path / "stderr").open("wb")
    proc = start_skyctl("pipe", f"{PIPES}:progress", "-a", f"marks={tmp_path}", "-c", str(host_config),
                        stdin=subprocess.PIPE, stderr=err, bufsize=0)
    try:
        proc.stdin.write(b"one\n")
        assert read_line(proc.stdout, timeout=60) == b"one\n"
        wait_for(lambda: (tmp_path / "seen").exists(), 30, "the record to be seen")
        yield proc, worker_pid(tmp_path)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        err.close()


def test_ctrl_c_exits_130_runs_finally_and_the_worker_exits(running, tmp_path):
    proc, pid = running
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, (tmp_path / "stderr").read_text()
    assert (tmp_path / "closed").read_text() == "finally ran"
    assert "Traceback" not in (tmp_path / "stderr").read_text()
    wait_for(lambda: not pid_alive(pid), 30, "the worker to exit")


def test_client_sigkill_makes_the_worker_exit_within_seconds(running, tmp_path):
    proc, pid = running
    assert pid_alive(pid)
    proc.kill()
    proc.wait(timeout=10)
    wait_for(lambda: not pid_alive(pid), 30, "the worker to exit after its client died")
    assert (tmp_path / "closed").read_text() == "finally ran"
