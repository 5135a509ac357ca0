"""A broken or lying worker ends in a clear error: never a hang, a traceback or a false success (issue 24).

One test (or a few) per numbered item of the issue. Each runs the real
``skyctl`` (or the API in a subprocess) against a real worker behind
``tests/fuzzrelay.py``, a ``type: command`` host's program that changes one
frame of what the worker sends, as the test's scripted mutation says. Every
subprocess has a timeout: a hang fails the test, it never hangs the suite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fuzzcases import EXPECTED, PIPE_INPUT, TARGETS
from helpers import clean_env, pid_alive, skyctl_argv, start_skyctl, wait_for

HERE = Path(__file__).resolve().parent
RELAY = HERE / "fuzzrelay.py"

#: the liveness bound of the hosts here (keepalive × keepalive_count): a stall ends within it
KEEPALIVE, COUNT = 1.0, 2
BOUND = KEEPALIVE * COUNT


def relay_config(tmp_path: Path, mutation: str, name: str = "fuzz") -> Path:
    argv = [sys.executable, str(RELAY), "7", mutation, str(tmp_path / "relay.json")]
    config = tmp_path / "skyward.yaml"
    config.write_text(
        "hosts:\n"
        f"  {name}:\n"
        "    type: command\n"
        f"    argv: {json.dumps(argv)}\n"
        f"    python: {json.dumps(sys.executable)}\n"
        f"    workdir: {json.dumps(str(tmp_path / 'work'))}\n"
        "    connect_timeout: 5\n"
        f"    keepalive: {KEEPALIVE}\n"
        f"    keepalive_count: {COUNT}\n"
    )
    return config


def relay_did(tmp_path: Path) -> str:
    """What the relay changed (a test whose mutation never happened proves nothing)."""
    lines = (tmp_path / "relay.json").read_text().splitlines()
    done = [json.loads(line) for line in lines if json.loads(line).get("done")]
    assert done, f"the relay changed nothing: {lines}"
    return str(done[0]["what"])


def skyctl(tmp_path: Path, command: str, mutation: str, *, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    config = relay_config(tmp_path, mutation)
    target = f"{TARGETS}:count" if command == "run" else f"{TARGETS}:upper"
    return subprocess.run(skyctl_argv(command, "-q", "-c", str(config), "-H", "fuzz", target),
                          input=PIPE_INPUT if command == "pipe" else "", capture_output=True, text=True,
                          timeout=timeout, env=clean_env())


def api(tmp_path: Path, mutation: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    config = relay_config(tmp_path, mutation)
    return subprocess.run([sys.executable, str(HERE / "fuzzapi.py"), str(config)], capture_output=True, text=True,
                          timeout=timeout, env=clean_env({"PYTHONPATH": str(HERE.parent)}))


def assert_protocol_error(result: subprocess.CompletedProcess[str], status: int = 6, what: str = "") -> str:
    """Exit ``status`` with one error line naming the host, no traceback; returns that line."""
    assert result.returncode == status, (result.returncode, result.stderr[-2000:])
    assert "Traceback (most recent call last)" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "fuzz" in errors[0], errors[0]
    assert what in errors[0], errors[0]
    return errors[0]


def assert_prefix_of_expected(stdout: str, command: str) -> None:
    """What was printed is whole values of the real output, in order: never frame bytes as values."""
    expected = EXPECTED[command]
    assert expected.startswith(stdout), stdout[-300:]
    assert not stdout or stdout.endswith("\n")


# -- 1. an empty LOG frame -------------------------------------------------------
def test_1_an_empty_log_frame_is_a_protocol_error_not_a_hang(tmp_path: Path) -> None:
    result = skyctl(tmp_path, "run", "before:ITEMS_OUT:log_empty")
    assert "empty LOG" in relay_did(tmp_path) or "log_empty" in relay_did(tmp_path)
    assert_protocol_error(result, what="a LOG frame")
    assert "Exception in thread" not in result.stderr


# -- 2. a CREDIT frame whose payload is not 16 bytes ------------------------------
def test_2_a_short_credit_frame_is_a_protocol_error_not_a_hang(tmp_path: Path) -> None:
    result = skyctl(tmp_path, "pipe", "before:ITEMS_OUT:credit3")
    relay_did(tmp_path)
    assert_protocol_error(result, what="a CREDIT frame of 3 bytes")
    assert "Exception in thread" not in result.stderr


# -- 3. a CANCELLED the client never asked for ------------------------------------
def test_3_an_unasked_cancelled_is_an_error_not_a_success(tmp_path: Path) -> None:
    result = skyctl(tmp_path, "run", "replace:ITEMS_OUT:cancelled")
    relay_did(tmp_path)
    assert_protocol_error(result, what="was not cancelled")


def test_3_an_unasked_cancelled_in_the_api_is_an_error_not_none(tmp_path: Path) -> None:
    result = api(tmp_path, "replace:RETURN:cancelled")
    relay_did(tmp_path)
    assert_protocol_error(result, what="was not cancelled")
    assert result.stdout == ""


# -- 4. a stale end-of-call frame -------------------------------------------------
def test_4_a_repeated_return_is_never_credited_to_the_next_call(tmp_path: Path) -> None:
    result = api(tmp_path, "repeat_end")
    assert "repeated RETURN" in relay_did(tmp_path)
    line = assert_protocol_error(result)
    assert "RETURN" in line and ("call 1" in line or "ended" in line), line
    assert result.stdout == ""  # call 2 never returns call 1's value


# -- 5. malformed payloads --------------------------------------------------------
@pytest.mark.parametrize("mutation, what", [
    ("payload:RETURN:empty", "RETURN frame of 0 bytes"),
    ("payload:RETURN:P-garbage", "where rendered text"),
])
def test_5_a_malformed_return_is_a_protocol_error_in_the_cli(tmp_path: Path, mutation: str, what: str) -> None:
    result = skyctl(tmp_path, "run", mutation)
    relay_did(tmp_path)
    assert_protocol_error(result, what=what)


@pytest.mark.parametrize("mutation, what", [
    ("payload:RETURN:P-garbage", "does not decode"),
    ("payload:ITEMS_OUT:L-badutf8", "does not decode"),
    ("payload:ITEMS_OUT:R-one", "encoded b'R'"),
    ("payload:RETURN:empty", "RETURN frame of 0 bytes"),
])
def test_5_a_malformed_payload_is_a_protocol_error_in_the_api(tmp_path: Path, mutation: str, what: str) -> None:
    result = api(tmp_path, mutation)
    relay_did(tmp_path)
    assert_protocol_error(result, what=what)


# -- 6. start-up ------------------------------------------------------------------
@pytest.mark.parametrize("mutation, what", [
    ("hello:list", "JSON list, not an object"),
    ("hello:utf8", "not UTF-8"),
    ("hello:json", "not JSON"),
    ("hello:garbage", "where its HELLO belongs"),
    ("stub:bad nonsense{", "answered 'bad' garbled"),
    ("stub:bad 5", "answered 'bad' garbled: 'bad 5'"),
    ("stub:pipfail {", "answered 'pipfail' garbled"),
])
def test_6_a_broken_start_up_is_exit_5_with_one_line_at_once(tmp_path: Path, mutation: str, what: str) -> None:
    start = time.monotonic()
    result = skyctl(tmp_path, "run", mutation)
    took = time.monotonic() - start
    relay_did(tmp_path)
    line = assert_protocol_error(result, status=5, what=what)
    assert "exit status None" not in line and "workdir  on" not in line
    assert took < 5, f"took {took:.1f}s to say {line}"  # not after the stub's exit, ~6 s later


# -- 7. frame bytes printed as values --------------------------------------------
def test_7_a_length_a_few_bytes_too_long_prints_no_frame_bytes(tmp_path: Path) -> None:
    result = skyctl(tmp_path, "run", "length:ITEMS_OUT:+12")
    relay_did(tmp_path)
    assert_protocol_error(result)
    assert_prefix_of_expected(result.stdout, "run")


def test_7_a_rendered_count_is_checked_against_its_lines(tmp_path: Path) -> None:
    result = skyctl(tmp_path, "run", "count:ITEMS_OUT:524288")
    relay_did(tmp_path)
    assert_protocol_error(result, what="declares 524,288 values")
    assert_prefix_of_expected(result.stdout, "run")


# -- 8. liveness after start-up ---------------------------------------------------
@pytest.mark.parametrize("command, mutation", [
    ("run", "stall:ITEMS_OUT"),          # a stalled worker (nothing more, everything open)
    ("run", "length:ITEMS_OUT:100000"),  # an inflated length: the client waits for bytes that never come
    ("pipe", "replace:CREDIT:zero_credit"),  # no credit for the input, ever
])
def test_8_a_worker_that_stops_talking_ends_in_exit_6_within_the_bound(tmp_path: Path, command: str,
                                                                        mutation: str) -> None:
    start = time.monotonic()
    result = skyctl(tmp_path, command, mutation)
    took = time.monotonic() - start
    relay_did(tmp_path)
    assert_protocol_error(result)
    assert took < BOUND + 10, took


def test_8_progress_for_ever_is_bounded(tmp_path: Path) -> None:
    config = relay_config(tmp_path, "progress")
    result = subprocess.run(skyctl_argv("run", "-q", "-c", str(config), "-H", "fuzz", f"{TARGETS}:count"),
                            capture_output=True, text=True, timeout=30, env=clean_env({"SKYCTL_PIP_SILENCE": "2"}))
    assert_protocol_error(result, status=5, what="printed nothing for 2s")


def local_config(tmp_path: Path) -> Path:
    config = tmp_path / "local.yaml"
    config.write_text(f"hosts:\n  here:\n    type: local\n    keepalive: {KEEPALIVE}\n    keepalive_count: {COUNT}\n")
    return config


def test_8_a_stopped_local_worker_ends_in_exit_6_within_the_bound(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    proc = start_skyctl("run", "-q", "-c", str(local_config(tmp_path)), "-H", "here",
                        f"{HERE / 'targets' / 'liveness_faults.py'}:wait_forever", "--arg", f"marker={marker}",
                        env={"PYTHONPATH": str(HERE.parent)})
    try:
        pid = int(wait_for(lambda: marker.exists() and marker.read_text(), what="the worker's pid"))
        os.kill(pid, signal.SIGSTOP)
        start = time.monotonic()
        out, err = proc.communicate(timeout=BOUND + 20)
        took = time.monotonic() - start
        assert proc.returncode == 6, err
        assert "the worker on here (local) sent nothing for" in err.decode(), err
        assert took < BOUND + 10
    finally:
        proc.kill()
        for sig in (signal.SIGKILL, signal.SIGCONT):
            try:
                os.kill(int(marker.read_text()), sig)
            except (OSError, ValueError):
                pass


def test_8_sigterm_closes_the_remote_as_ctrl_c_does(tmp_path: Path) -> None:
    """A program that ignores EOF (the relay with ``noeof``) keeps the worker up unless skyctl closes it."""
    marker = tmp_path / "pid"
    config = relay_config(tmp_path, "noeof")
    config.write_text(config.read_text().replace(f"keepalive: {KEEPALIVE}", "keepalive: 30"))  # not the silence bound
    proc = start_skyctl("run", "-q", "-c", str(config), "-H", "fuzz",
                        f"{HERE / 'targets' / 'liveness_faults.py'}:wait_forever", "--arg", f"marker={marker}",
                        env={"PYTHONPATH": str(HERE.parent)})
    try:
        pid = int(wait_for(lambda: marker.exists() and marker.read_text(), what="the worker's pid"))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 143, err
        assert b"Traceback" not in err, err
        wait_for(lambda: not pid_alive(pid), timeout=10, what="the function's process to end")
    finally:
        proc.kill()


def test_8_a_worker_whose_client_goes_silent_ends_its_call_and_exits(tmp_path: Path) -> None:
    """Issue 23: the worker hears nothing from its client for the bound (here the client is
    stopped, its pipes left open, as a partition would leave them): the call and the worker end."""
    marker = tmp_path / "pid"
    child_marker = tmp_path / "child"
    proc = start_skyctl("run", "-q", "-c", str(local_config(tmp_path)), "-H", "here",
                        f"{HERE / 'targets' / 'liveness_faults.py'}:wait_forever", "--arg", f"marker={marker}",
                        "--arg", f"child={child_marker}", env={"PYTHONPATH": str(HERE.parent)})
    try:
        pid = int(wait_for(lambda: marker.exists() and marker.read_text(), what="the worker's pid"))
        child = int(wait_for(lambda: child_marker.exists() and child_marker.read_text(), what="the child's pid"))
        proc.send_signal(signal.SIGSTOP)
        start = time.monotonic()
        wait_for(lambda: not pid_alive(pid), timeout=BOUND + 15, what="the worker to exit by itself")
        wait_for(lambda: not pid_alive(child), timeout=5, what="the function's child process to end")
        assert time.monotonic() - start < BOUND + 15
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.communicate(timeout=20)


# -- 9. log lines -----------------------------------------------------------------
def test_9_a_log_line_without_newline_is_cut_and_bounded(tmp_path: Path) -> None:
    result = subprocess.run(skyctl_argv("run", "-q", "-c", str(local_config(tmp_path)), "-H", "here",
                                        f"{HERE / 'targets' / 'liveness_faults.py'}:long_log", "--arg", "mib=2"),
                            capture_output=True, timeout=60, env=clean_env())
    assert result.returncode == 0, result.stderr[-500:]
    lines = result.stderr.split(b"\n")
    cut = [line for line in lines if line.endswith(b"[skyctl: line cut at 64 KiB]")]
    assert len(cut) == 32, [len(line) for line in lines]
    assert max(map(len, lines)) <= (64 << 10) + 40
    assert result.stdout == b"done\n"


def test_9_log_cost_is_linear_in_the_bytes() -> None:
    from skyctl.render import MAX_LOG_LINE, Lines

    lines = Lines()
    start = time.process_time()
    out = 0
    for _ in range(1024):  # 64 MiB in 64 KiB frames, no line break: 25 s of CPU before
        out += len(lines.feed(2, b"x" * 65536))
    took = time.process_time() - start
    assert out >= 63 << 20
    assert took < 2.0, took
    assert sum(map(len, lines.rest().values())) < MAX_LOG_LINE


# -- issue 23: a spare stub (kept connection) whose keeper goes silent --------------------
def test_a_waiting_stub_exits_when_its_keeper_goes_silent() -> None:
    """The stub started with a bound (``stub_argv``) waits for its arguments only while
    blank lines (the holder's heartbeat) keep coming; a silent keeper: it exits by itself."""
    from skyctl.bootstrap import stub_argv

    fed = subprocess.Popen(stub_argv(sys.executable, 1.5), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    silent = subprocess.Popen(stub_argv(sys.executable, 1.5), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        start = time.monotonic()
        assert fed.stdin is not None
        for _ in range(8):  # 4 s of heartbeats, more than twice the bound
            fed.stdin.write(b"\n")
            fed.stdin.flush()
            time.sleep(0.5)
        assert fed.poll() is None
        assert silent.wait(timeout=20) == -signal.SIGALRM
        assert time.monotonic() - start < 20
    finally:
        fed.kill()
        silent.kill()
        fed.wait()
        silent.wait()


def test_8_a_slow_consumer_is_not_taken_for_a_silent_peer(tmp_path: Path) -> None:
    """Backpressure is not silence: stdout not read for three bounds (the worker blocked on
    credit, the client's writer blocked on stdout), then read: every value, exit 0."""
    stderr = open(tmp_path / "stderr", "wb")
    proc = start_skyctl("run", "-q", "-c", str(local_config(tmp_path)), "-H", "here", f"{TARGETS}:count",
                        "--arg", "n=1000000", env={"PYTHONPATH": str(HERE.parent)}, stderr=stderr)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first == b"0\n"
        time.sleep(3 * BOUND)  # the condition under test is time passing while nothing is read
        rest = proc.stdout.read()
        proc.wait(timeout=60)
        assert proc.returncode == 0, (tmp_path / "stderr").read_text()[-2000:]
        assert (first + rest).count(b"\n") == 1000000
    finally:
        proc.kill()
        stderr.close()
