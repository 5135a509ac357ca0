"""End-to-end: ``skyctl run`` on the built-in ``local`` host and over SSH.

Every test drives the real ``skyctl`` executable against a real worker (a
child process, or the test sshd) with ``-c <config>``. Remote functions live
in ``tests/targets/streams.py``; marker files they write in ``tmp_path`` are
visible here because the ssh "remote" is this machine.
"""

from __future__ import annotations

import os
import select
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers import REPO, clean_env, pid_alive, run_skyctl, skyctl_argv, start_skyctl, wait_for

STREAMS = "tests/targets/streams.py"
OWN_FRAMES = ("skyctl/remote/worker.py", "skyctl/session.py", "skyctl/callstream.py", "skyctl/failures.py", "skyctl/api.py",
              "skyctl/cli.py", "skyctl/commands/", "cloudpickle")


def read_line(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> str:
    """One line from ``proc``'s stdout pipe, failing after ``timeout`` seconds."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no line on skyctl's stdout within {timeout}s (got {buf!r})")
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 1)
            if not chunk:
                raise AssertionError(f"skyctl's stdout closed after {buf!r}; exit {proc.wait(30)}, stderr: {_stderr(proc)}")
            buf += chunk
    return buf.decode()


def _stderr(proc: subprocess.Popen[bytes]) -> str:
    return proc.stderr.read().decode(errors="replace") if proc.stderr else ""


def read_pid(path: Path) -> int:
    return int(wait_for(lambda: path.exists() and path.read_text(), what=f"the worker's pid in {path}"))


def test_fibonacci_example_prints_one_value_per_line(host_config):
    result = run_skyctl("run", "-c", str(host_config), "examples/train.py:fibonacci", "--arg", "n=10")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == "0 1 1 2 3 5 8 13 21 34".split()


def test_package_module_target(host_config):
    result = run_skyctl("run", "-c", str(host_config), "examples.train:fibonacci", "-a", "n=4")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "0\n1\n1\n2\n"


def test_first_value_arrives_while_the_generator_is_still_running(host_config, tmp_path, procs):
    release = tmp_path / "release"
    proc = start_skyctl("run", "-c", str(host_config), f"{STREAMS}:first_then_wait", "--arg", f"release={release}",
                        "--arg", "timeout=120")
    procs.append(proc)
    assert read_line(proc, timeout=60) == "first\n"  # the generator now waits for `release` (up to 120 s)
    assert proc.poll() is None
    release.touch()
    assert read_line(proc, timeout=60) == "second\n"
    assert proc.wait(60) == 0


def test_error_after_three_values_prints_them_then_the_users_traceback(host_config):
    result = run_skyctl("run", "-c", str(host_config), f"{STREAMS}:raises_after", "--arg", "n=3")
    assert result.returncode == 1
    assert result.stdout == "0\n1\n2\n"
    err = result.stderr
    assert err.count("Traceback (most recent call last)") == 1, err
    assert 'streams.py", line' in err and "in raises_after" in err and "in fail_here" in err, err
    assert 'raise ValueError(f"boom after {n} values")' in err, err  # source lines shown
    assert err.rstrip().endswith("ValueError: boom after 3 values"), err
    for own in OWN_FRAMES:
        assert own not in err, err


def test_a_value_that_does_not_pickle_is_printed_by_its_repr(host_config):
    """The CLI renders on the worker: nothing is pickled, an odd value prints as its repr()."""
    result = run_skyctl("run", "-c", str(host_config), f"{STREAMS}:yields_a_lock")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "1" and "_thread.lock object" in lines[1] and lines[2] == "3", result.stdout


def test_a_last_odd_value_after_fast_ones_is_printed(host_config):
    result = run_skyctl("run", "-c", str(host_config), f"{STREAMS}:fast_then_a_lock")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:5000] == [str(i) for i in range(5000)] and "_thread.lock object" in lines[5000]


def _processes_running(marker: str) -> list[int]:
    """Live processes whose argv mentions ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.mark.parametrize("bad", ["no_such_function", "raises_after --arg n=notanint"])
def test_a_usage_error_on_local_leaves_no_worker_behind(tmp_path, bad):
    """The local worker starts while the target loads: a bad target must still end it."""
    python = tmp_path / "own-python" / "python3"  # by which this test's worker is found
    python.parent.mkdir()
    python.symlink_to(sys.executable)
    cfg = tmp_path / "skyward.yaml"
    cfg.write_text(f"default: local\nhosts:\n  local:\n    type: local\n    python: {python}\n")
    name, *args = bad.split()
    result = run_skyctl("run", "-c", str(cfg), f"{STREAMS}:{name}", *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert _processes_running(str(python)) == []


def test_remote_prints_go_to_stderr_never_stdout(host_config):
    result = run_skyctl("run", "-c", str(host_config), f"{STREAMS}:chatty")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "the-value\n"
    lines = result.stderr.splitlines()
    for line in ("print-to-stdout", "print-to-stderr", "partial-fd1-write", "fd2-write", "after-the-value",
                 "last-words-without-newline"):
        assert line in lines, result.stderr  # whole lines: the remote's stdout and stderr never interleave mid-line


@pytest.mark.parametrize("function", ["endless", "slow_endless"])
def test_head_closes_the_generator_and_exits_zero(host_config, tmp_path, function):
    marker = tmp_path / "finally"
    argv = skyctl_argv("run", "-c", str(host_config), f"{STREAMS}:{function}", "--arg", f"finally_marker={marker}")
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {shlex.join(argv)} | head -3"],
        capture_output=True, text=True, timeout=90, cwd=REPO, env=clean_env(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "0\n1\n2\n"
    assert result.stderr == ""
    assert marker.read_text() == "finally ran"  # before skyctl exited, not eventually


def test_sigint_closes_the_generator_and_exits_130(host_config, tmp_path, procs):
    marker, pid_file = tmp_path / "finally", tmp_path / "pid"
    proc = start_skyctl("run", "-c", str(host_config), f"{STREAMS}:slow_endless",
                        "--arg", f"finally_marker={marker}", "--arg", f"pid_file={pid_file}")
    procs.append(proc)
    assert read_line(proc, timeout=60) == "0\n"
    worker = read_pid(pid_file)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130
    assert marker.read_text() == "finally ran"
    assert "Traceback" not in _stderr(proc)
    wait_for(lambda: not pid_alive(worker), timeout=15, what="the worker to exit")


def test_sigkill_of_the_client_ends_the_worker(host_config, tmp_path, procs):
    marker, pid_file = tmp_path / "finally", tmp_path / "pid"
    proc = start_skyctl("run", "-c", str(host_config), f"{STREAMS}:slow_endless",
                        "--arg", f"finally_marker={marker}", "--arg", f"pid_file={pid_file}")
    procs.append(proc)
    assert read_line(proc, timeout=60) == "0\n"
    worker = read_pid(pid_file)
    assert pid_alive(worker)
    proc.kill()
    proc.wait(30)
    wait_for(lambda: not pid_alive(worker), timeout=15, what=f"worker {worker} to exit after its client was killed")


def test_unread_stdout_pauses_the_generator(host_config, tmp_path, procs):
    progress = tmp_path / "progress"
    proc = start_skyctl("run", "-c", str(host_config), f"{STREAMS}:counting", "--arg", f"progress={progress}",
                        stderr=subprocess.DEVNULL)  # stdout: a pipe nobody reads
    procs.append(proc)

    def count() -> int:
        return int(progress.read_text()) if progress.exists() else 0

    wait_for(lambda: count() > 0, timeout=60, what="the generator to start")
    samples = [count()]
    deadline = time.monotonic() + 90
    while not (len(samples) >= 15 and samples[-1] == samples[-15]):  # stable for ~3 s
        assert time.monotonic() < deadline, f"the generator never paused; it reached {samples[-1]}"
        time.sleep(0.2)
        samples.append(count())
    paused_at = samples[-1]
    assert paused_at < 1_000_000
    time.sleep(2)  # not synchronisation: the claim is that nothing moves in this window
    assert count() == paused_at and proc.poll() is None
    # The reader going away is a quiet, successful end.
    assert proc.stdout is not None
    proc.stdout.close()
    assert proc.wait(60) == 0


SAMPLES_TEXT = """\
plain text
42
2.5
True
{"name":"café","n":[1,2]}
[1,"ü",null]
[1,2]
Opaque<1>
None
done
"""

SAMPLES_JSON = """\
"plain text"
42
2.5
true
{"name": "café", "n": [1, 2]}
[1, "ü", null]
[1, 2]
"Opaque<1>"
null
"done"
"""


@pytest.mark.parametrize("output, expected", [("text", SAMPLES_TEXT), ("json", SAMPLES_JSON)])
def test_output_rendering_and_generator_return_value(host_config, output, expected):
    result = run_skyctl("run", "-c", str(host_config), f"{STREAMS}:samples", "--output", output)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected


def test_output_json_lines_parse(host_config):
    import json

    result = run_skyctl("run", "-c", str(host_config), f"{STREAMS}:samples", "-o", "json")
    assert [json.loads(line) for line in result.stdout.splitlines()][-3:] == ["Opaque<1>", None, "done"]


@pytest.mark.parametrize("output, expected", [("text", '{"k":"ü","n":[1,2.5]}\n'), ("json", '{"k": "ü", "n": [1, 2.5]}\n')])
def test_plain_function_return_prints_once(host_config, output, expected):
    result = run_skyctl("run", "-c", str(host_config), f"{STREAMS}:returns", "-o", output,
                        "--arg", 'value={"k": "ü", "n": [1, 2.5]}')
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected


@pytest.mark.parametrize("function, expected", [("returns_none", ""), ("gen_returns_none", "1\n")])
def test_none_return_prints_nothing(host_config, function, expected):
    result = run_skyctl("run", "-c", str(host_config), f"{STREAMS}:{function}")
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected


def test_file_target_imports_siblings_and_the_remote_needs_none_of_the_files(host_config, tmp_path):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "lib").mkdir(parents=True)
    elsewhere.mkdir()
    (project / "lib" / "deep.py").write_text("def triple(x):\n    return 3 * x\n")
    (project / "helper.py").write_text(textwrap.dedent("""\
        import importlib.util
        import sys

        from lib import deep

        def report(project_dir):
            return {
                "value": deep.triple(14),
                "helper_findable": importlib.util.find_spec("helper") is not None,
                "project_on_path": any(p.rstrip("/") == project_dir for p in sys.path),
            }
    """))
    (project / "app.py").write_text(textwrap.dedent("""\
        import helper

        def main(project_dir: str):
            yield helper.report(project_dir)
    """))
    result = run_skyctl("run", "-c", str(host_config), "../project/app.py:main", "-o", "json",
                        "--arg", f"project_dir={project}", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    import json

    report = json.loads(result.stdout)
    # The sibling import worked on the client, and the code ran remotely
    # although the remote could not have imported it from a file.
    assert report == {"value": 42, "helper_findable": False, "project_on_path": False}
