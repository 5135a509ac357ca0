"""Time limits (issue 20): ``--timeout``/``--idle-timeout`` on ``run`` and ``pipe``, the profile's
``timeout:``, ``SKYCTL_TIMEOUT``, ``timeout=`` in the API; exit 124 and ``skyctl.TimedOut``.

The limits are short (1-3 s); a function reaches the point where it waits for ever long before
(it says so in marker files), and every other bound is generous: nothing depends on the machine's
speed beyond that. The ssh hosts are the test sshd; the local ones ``type: local``.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from helpers import REPO, pid_alive, run_skyctl, sky, ssh_host_yaml, start_skyctl, wait_for

from schema_check import errors as schema_errors

T = "tests/targets/timeouts.py"
SCHEMA = json.loads((Path(__file__).parent / "report.schema.json").read_text())
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, sshd) -> Path:
    text = "default: local\nhosts:\n  local:\n    type: local\n"
    text += ssh_host_yaml(sshd, name="b1", extra="env: {SKYCTL_TEST_HOST: b1}")
    for name in ("l1", "l2"):
        text += f"  {name}:\n    type: local\n    env: {{SKYCTL_TEST_HOST: {name}}}\n"
    text += "  slow:\n    type: local\n    timeout: 2s\n  patient:\n    type: local\n    timeout: 10m\n"
    text += "groups:\n  trio: [b1, l1, l2]\n  pair: [b1, l1]\n"
    path = tmp_path_factory.mktemp("timeouts") / "skyward.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("host", ["local", "b1"])
def test_run_times_out_ends_the_function_in_order(config: Path, tmp_path: Path, host: str) -> None:
    r = sky(config, "run", f"{T}:values_then_hang", "-H", host, "--arg", f"work={tmp_path}", "--timeout", "3", "-q")
    assert r.returncode == 124, r.stderr
    assert r.stdout == "1\n2\n3\n"  # every value before it, whole lines
    assert f"error: {host}" in r.stderr and ": timed out after 3s (--timeout)\n" in r.stderr
    assert "hint: raise --timeout" in r.stderr
    assert "time.sleep(600)" in r.stderr  # where it was stopped: its traceback
    assert (tmp_path / "finally").read_text() == "ran"  # its finally ran
    child = int((tmp_path / "child").read_text())
    wait_for(lambda: not pid_alive(child), timeout=10, what="the function's child to be gone")


def test_broadcast_times_out_one_host_the_others_complete(config: Path, tmp_path: Path) -> None:
    r = sky(config, "run", f"{T}:host_lines", "-H", "trio", "--arg", f"work={tmp_path}", "--arg", "hangs=l2",
            "--timeout", "3", "--no-tag")
    assert r.returncode == 124, r.stderr
    assert sorted(r.stdout.splitlines()) == sorted(f"{h} {i}" for h in ("b1", "l1", "l2") for i in range(3))
    assert "l2 (local): timed out after 3s (--timeout)" in r.stderr
    assert (tmp_path / "finally-l2").exists()
    assert not (tmp_path / "finally-b1").exists()


def records(n: int) -> str:
    return "".join(f"r{i}\n" for i in range(1, n + 1))


def test_pipe_chunk_that_hangs_once_runs_again_exactly_once(config: Path, tmp_path: Path) -> None:
    n = 40
    report = tmp_path / "report.json"
    args = ("pipe", f"{T}:upper", "-H", "pair", "--chunk", "5", "--arg", f"work={tmp_path}", "--arg", "hang=r17",
            "--timeout", "2", "--report", str(report))
    r = sky(config, *args, input=records(n))
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == sorted(f"R{i}" for i in range(1, n + 1))  # exactly once
    host = (tmp_path / "hung").read_text()
    assert f"warning: {host}" in r.stderr
    assert ": timed out after 2s (--timeout) in chunk 4 (stdin lines 16–20); it runs again" in r.stderr
    document = json.loads(report.read_text())
    assert schema_errors(document, SCHEMA) == [], document
    assert document["exit_status"] == 0
    statuses = {h["name"]: h["status"] for h in document["hosts"]}
    assert statuses[host] == "timeout", document
    assert document["totals"]["reruns"] == 1

    # --strict: the timeout it recovered from makes the exit status 124, after all output
    (tmp_path / "hung").unlink()
    r = sky(config, *args[:-2], "--strict", input=records(n))
    assert r.returncode == 124, r.stderr
    assert sorted(r.stdout.splitlines()) == sorted(f"R{i}" for i in range(1, n + 1))
    assert "--strict:" in r.stderr and "timed out after 2s" in r.stderr


def test_a_chunk_queued_behind_one_whose_worker_is_ended_runs_again(config: Path, tmp_path: Path) -> None:
    """Pipelining: a chunk holds the GIL (the client's deadline ends its worker) while the next chunk's
    call waits queued on that worker: the first runs again as timed out, the queued one as lost (not
    timed out: it never ran), and every value is written once."""
    n = 200
    try:
        r = sky(config, "pipe", f"{T}:upper_then_hold_the_gil", "-H", "pair", "--chunk", "5", "--arg", f"work={tmp_path}",
                "--arg", "hang=r17", "--timeout", "1", input=records(n))
    finally:
        # a worker that holds the GIL cannot end itself; on an ssh host its watcher ends it some 10 s after
        # the client dropped it (docs/security.md, "Limits"): the test ends it now, not to spin beside the next
        hung = tmp_path / "hung.pid"
        if hung.exists() and pid_alive(int(hung.read_text())):
            os.kill(int(hung.read_text()), signal.SIGKILL)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "queued").exists()
    assert sorted(r.stdout.splitlines()) == sorted(f"R{i}" for i in range(1, n + 1))  # exactly once
    assert "timed out after 1s (--timeout); the worker did not answer, its connection was ended" in r.stderr
    assert "the call before it on that worker did not answer its time limit (the worker was ended); it runs again" \
        in r.stderr, r.stderr


def test_pipe_joblog_logs_the_timed_out_attempt(config: Path, tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    r = sky(config, "pipe", f"{T}:upper", "-H", "pair", "--chunk", "5", "--arg", f"work={tmp_path}", "--arg", "hang=r7",
            "--timeout", "2", "--joblog", str(log), input=records(20))
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == sorted(f"R{i}" for i in range(1, 21))
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    timed_out = [e for e in entries if e.get("status") == "timeout"]
    assert len(timed_out) == 1 and timed_out[0]["exit"] == 124 and timed_out[0]["chunk"] == 2, entries
    assert [e["status"] for e in entries if e.get("chunk") == 2] == ["timeout", "ok"]


def test_pipe_chunk_that_always_hangs_uses_up_its_retries(config: Path, tmp_path: Path) -> None:
    r = sky(config, "pipe", f"{T}:upper", "-H", "pair", "--chunk", "5", "--arg", f"work={tmp_path}", "--arg", "hang=r3",
            "--arg", "once=false", "--timeout", "1", "--retries", "1", input=records(10))
    assert r.returncode == 124, r.stderr
    assert "timed out after 1s (--timeout) in chunk 1 (stdin lines 1–5)" in r.stderr
    assert "it timed out on each of its 2 runs" in r.stderr
    lines = r.stdout.splitlines()
    assert lines.count("R1") == lines.count("R2") == 1 and "R3" not in lines  # the values before it, once


def test_idle_timeout_ends_a_stopped_worker(config: Path, tmp_path: Path) -> None:
    proc = start_skyctl("run", f"{T}:busy_until_stopped", "-c", str(config), "-H", "local", "--arg", f"work={tmp_path}",
                        "--idle-timeout", "1", "-q")
    pid = None
    try:
        pid = int(wait_for(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text(), timeout=60,
                           what="the worker's pid"))
        os.kill(pid, signal.SIGSTOP)  # it cannot enforce anything now: the client's deadline does
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 124, err.decode()
        assert b"local: sent no value and took no record for 1s (--idle-timeout)" in err
        assert b"the worker did not answer, its connection was ended" in err
        assert out.endswith(b"\n") and all(line.isdigit() for line in out.decode().splitlines())
        wait_for(lambda: not pid_alive(pid), timeout=30, what="the stopped worker to be ended")
    finally:
        if pid is not None and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()


def test_idle_timeout_is_off_by_default_and_ends_a_stuck_function(config: Path, tmp_path: Path) -> None:
    r = sky(config, "run", f"{T}:values_then_hang", "--arg", f"work={tmp_path}", "--idle-timeout", "2", "-q")
    assert r.returncode == 124, r.stderr
    assert r.stdout == "1\n2\n3\n"
    assert "local: sent no value and took no record for 2s (--idle-timeout)" in r.stderr
    assert (tmp_path / "finally").exists()


def test_profile_key_env_and_flag_in_that_order(config: Path, tmp_path: Path) -> None:
    r = sky(config, "run", f"{T}:sleeps", "-H", "slow", "-q")
    assert r.returncode == 124 and "slow (local): timed out after 2s (the profile's timeout:)" in r.stderr, r.stderr
    r = sky(config, "run", f"{T}:sleeps", "-H", "patient", "-q", env={"SKYCTL_TIMEOUT": "1s"})
    assert r.returncode == 124 and "patient (local): timed out after 1s (SKYCTL_TIMEOUT)" in r.stderr, r.stderr
    r = sky(config, "run", f"{T}:sleeps", "-H", "slow", "-q", "--timeout", "1", env={"SKYCTL_TIMEOUT": "10m"})
    assert r.returncode == 124 and "slow (local): timed out after 1s (--timeout)" in r.stderr, r.stderr
    r = sky(config, "run", f"{T}:sleeps", "-H", "slow", "--arg", "seconds=0.1", "--timeout", "1h")
    assert r.returncode == 0 and r.stdout == "1\n", r.stderr


def test_bad_durations(config: Path, tmp_path: Path) -> None:
    r = sky(config, "run", f"{T}:sleeps", "--timeout", "5x")
    assert r.returncode == 2 and "--timeout '5x' is not a duration" in r.stderr and "hint: " in r.stderr, r.stderr
    r = sky(config, "pipe", f"{T}:upper", "--idle-timeout", "0", input="")
    assert r.returncode == 2 and "--idle-timeout '0'" in r.stderr, r.stderr
    r = sky(config, "run", f"{T}:sleeps", env={"SKYCTL_TIMEOUT": "soon"})
    assert r.returncode == 2 and "SKYCTL_TIMEOUT='soon'" in r.stderr, r.stderr
    bad = tmp_path / "skyward.yaml"
    bad.write_text("default: local\nhosts:\n  local:\n    type: local\n    timeout: soon\n")
    r = run_skyctl("run", f"{T}:sleeps", "-c", str(bad), cwd=REPO)
    assert r.returncode == 3, r.stderr
    assert "'timeout' must be a duration" in r.stderr and "hint: " in r.stderr and "5m" in r.stderr


def test_api_raises_timed_out(config: Path, tmp_path: Path) -> None:
    import skyctl
    from tests.targets import timeouts

    fn = skyctl.function(timeouts.sleeps)
    with pytest.raises(skyctl.TimedOut) as caught:
        fn() >> skyctl.host("l1", str(config), timeout=1)
    assert caught.value.exit_status == 124 and caught.value.limit == 1.0
    assert "l1 (local): timed out after 1s (timeout=)" in str(caught.value)
    with skyctl.host("l1", str(config)) as host:  # per call
        call = host.start(timeouts.sleeps, timeout="1s")
        with pytest.raises(skyctl.TimedOut):
            list(call)
        assert fn(0.01) >> host == 1  # the host goes on

    pool = skyctl.pool(["l1", "l2"], str(config))
    items = [f"r{i}" for i in range(1, 21)]
    out = list(pool.map(timeouts.upper, items, chunk=5, timeout=2, work=str(tmp_path), hang="r8"))
    assert sorted(out) == sorted(i.upper() for i in items)
    with pytest.raises(skyctl.TimedOut):
        list(pool.map(timeouts.upper, items, chunk=5, timeout=1, retries=0, work=str(tmp_path), hang="r2", once=False))


@pytest.mark.parametrize("text, seconds", [("90", 90.0), ("1.5", 1.5), ("30s", 30.0), ("5m", 300.0), ("2h", 7200.0),
                                           ("1h30m", 5400.0), ("1m30s", 90.0), (" 10M ", 600.0)])
def test_durations(text: str, seconds: float) -> None:
    from skyctl.config.checks import parse_duration

    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-1", "5x", "h", "1m30h", "1h 30m", "nan", "inf"])
def test_not_durations(text: str) -> None:
    from skyctl.config.checks import parse_duration

    with pytest.raises(ValueError):
        parse_duration(text)


def test_a_function_that_swallows_the_interrupt_is_given_up_after_the_grace(config: Path, tmp_path: Path) -> None:
    r = sky(config, "run", f"{T}:stubborn", "--arg", f"work={tmp_path}", "--timeout", "2", "-q")
    assert r.returncode == 124, r.stderr
    assert r.stdout == "1\n"
    assert (tmp_path / "interrupted").exists()
    assert "did not end within 5s: answering without it and exiting" in r.stderr
    assert "error: local: timed out after 2s (--timeout)\n" in r.stderr


def test_a_function_holding_the_gil_is_ended_by_the_clients_deadline(config: Path, tmp_path: Path) -> None:
    r = sky(config, "run", f"{T}:holds_the_gil", "--arg", f"work={tmp_path}", "--timeout", "1", "-q")
    assert r.returncode == 124, r.stderr
    assert r.stdout == "1\n"
    assert "local: timed out after 1s (--timeout); the worker did not answer, its connection was ended" in r.stderr
    pid = int((tmp_path / "pid").read_text())
    wait_for(lambda: not pid_alive(pid), timeout=30, what="the worker to be ended")
