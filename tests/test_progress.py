"""``--progress[=SECONDS]`` and ``--total N``: a long call is never silent in a log (issue 20, part 4).

Off a terminal, ``--progress`` writes a plain line on stderr every N seconds:
records in, values out, rate, chunks done and, when the total is known (stdin
a regular file, or ``--total N``), percent and ETA. Nothing without the flag,
also with ``CI`` set. No timing: the function waits on a marker file until
the test has seen a progress line, then the test releases it.
"""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path
from typing import IO

import pytest

from helpers import REPO, clean_env, run_skyctl, skyctl_argv, start_skyctl, wait_for

from skyctl.render import Env, StatusLine, duration_text, progress_line

pytestmark = pytest.mark.timeout(120)

TARGETS = Path(__file__).resolve().parent / "targets" / "progress_targets.py"
HELD = f"{TARGETS}:held"
HELD_RUN = f"{TARGETS}:held_run"
LINE = re.compile(r"^progress: .*$", re.M)


# -- the line (in-process) ----------------------------------------------------------------


def test_a_progress_line_says_what_is_known() -> None:
    assert progress_line(4.0, 120, 240, records=True, chunks=3, done=0.4) == (
        "progress: 120 records in, 240 values out, 30 records/s, 3 chunks done, 40%, ETA 6s, 4s elapsed"
    )
    assert progress_line(2.0, 0, 5) == "progress: 5 values out, 2.5 values/s, 2s elapsed"
    assert progress_line(10.0, 0, 0, records=True, done=0.0) == (
        "progress: 0 records in, 0 values out, 0.0 records/s, 0%, 10s elapsed"  # nothing done yet: no ETA
    )
    assert "99%" in progress_line(1.0, 1, 1, done=0.999) and "100%, ETA 0s" in progress_line(1.0, 1, 1, done=1.0)


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (59.4, "59s"), (65, "1m05s"), (3600 * 2 + 180, "2h03m")])
def test_durations(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


def test_the_status_line_on_a_terminal_shows_the_eta() -> None:
    status = StatusLine(Env(stderr=io.StringIO(), environ={}))
    try:
        status.set_phase("running")
        status.counters = lambda: (10, 5)
        status.fraction = lambda: 0.5
        text = str(status.__rich__().text)
    finally:
        status.stop()
    assert "10 in" in text and "5 out" in text and "50%" in text and "ETA" in text, text


# -- end to end -------------------------------------------------------------------------------


def _stderr_file(tmp_path: Path) -> tuple[Path, IO[bytes]]:
    path = tmp_path / "stderr.txt"
    return path, open(path, "wb")


def _finish(proc: subprocess.Popen[bytes], err: IO[bytes]) -> tuple[int, str]:
    if proc.stdin is not None and proc.stdin.closed:
        proc.stdin = None  # closed by the test: communicate() would flush it
    out, _ = proc.communicate(timeout=90)
    err.close()
    return proc.returncode, out.decode()


@pytest.mark.parametrize("jobs", [None, "2"])
def test_progress_lines_with_percent_and_eta_from_a_file_stdin(tmp_path: Path, jobs: str | None) -> None:
    data = tmp_path / "in.txt"
    data.write_text("".join(f"{i}\n" for i in range(1, 201)))
    release = tmp_path / "release"
    err_path, err = _stderr_file(tmp_path)
    extra = ["-j", jobs, "--chunk", "50"] if jobs else []
    with open(data, "rb") as stdin:
        proc = start_skyctl("pipe", HELD, "-a", f"release={release}", "--progress=0.1", *extra,
                            stdin=stdin, stderr=err, env={"CI": "true"})
    try:
        line = wait_for(lambda: re.search(r"^progress: .*ETA.*$", err_path.read_text(), re.M), what="a progress line")
    finally:
        release.touch()
    code, out = _finish(proc, err)
    assert code == 0, err_path.read_text()
    assert sorted(map(int, out.split())) == list(range(1, 201))
    text = line.group(0)
    assert re.search(r"\d+ records in, \d+ values out, [\d.]+ records/s, ", text), text
    assert re.search(r", \d+%, ETA \d+[smh]", text), text
    assert ("chunks done" in text) == bool(jobs), text


def test_total_gives_a_percent_when_stdin_is_a_pipe(tmp_path: Path) -> None:
    release = tmp_path / "release"
    err_path, err = _stderr_file(tmp_path)
    proc = start_skyctl("pipe", HELD, "-a", f"release={release}", "--progress=0.1", "--total", "8",
                        stdin=subprocess.PIPE, stderr=err)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"a\nb\nc\nd\n")
        proc.stdin.flush()
        wait_for(lambda: re.search(r"^progress: 4 records in, .*, 50%, ETA \d+", err_path.read_text(), re.M),
                 what="a progress line at 50%")
    finally:
        release.touch()
        if proc.stdin is not None:
            proc.stdin.close()
    code, out = _finish(proc, err)
    assert (code, out) == (0, "a\nb\nc\nd\n"), err_path.read_text()


def test_a_pipe_stdin_without_total_has_no_percent(tmp_path: Path) -> None:
    release = tmp_path / "release"
    err_path, err = _stderr_file(tmp_path)
    proc = start_skyctl("pipe", HELD, "-a", f"release={release}", "--progress=0.1", stdin=subprocess.PIPE, stderr=err)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"a\nb\n")
        proc.stdin.flush()
        line = wait_for(lambda: re.search(r"^progress: 2 records in.*$", err_path.read_text(), re.M), what="a progress line")
    finally:
        release.touch()
        if proc.stdin is not None:
            proc.stdin.close()
    code, _ = _finish(proc, err)
    assert code == 0
    assert "%" not in line.group(0) and "ETA" not in line.group(0)


def test_progress_on_run(tmp_path: Path) -> None:
    release = tmp_path / "release"
    err_path, err = _stderr_file(tmp_path)
    proc = start_skyctl("run", HELD_RUN, "-a", f"release={release}", "--progress=0.1", stderr=err)
    try:
        line = wait_for(lambda: re.search(r"^progress: 1 values out, .*$", err_path.read_text(), re.M), what="a progress line")
    finally:
        release.touch()
    code, out = _finish(proc, err)
    assert (code, out) == (0, "1\n2\n")
    assert "records" not in line.group(0)


def test_no_progress_lines_without_the_flag_even_in_ci(tmp_path: Path) -> None:
    data = tmp_path / "in.txt"
    data.write_text("x\ny\n")
    release = tmp_path / "release"
    release.touch()
    with open(data, "rb") as stdin:
        result = subprocess.run(skyctl_argv("pipe", HELD, "-a", f"release={release}", "--total", "2"), stdin=stdin,
                                capture_output=True, text=True, timeout=60, cwd=REPO, env=clean_env({"CI": "true"}))
    assert (result.returncode, result.stdout) == (0, "x\ny\n"), result.stderr
    assert not LINE.search(result.stderr), result.stderr


def test_progress_alone_takes_the_default_and_a_bad_value_is_a_usage_error(tmp_path: Path) -> None:
    release = tmp_path / "release"
    release.touch()
    ok = run_skyctl("pipe", HELD, "--progress", "-a", f"release={release}", input="x\n")
    assert (ok.returncode, ok.stdout) == (0, "x\n"), ok.stderr
    bad = run_skyctl("pipe", HELD, "--progress=0", "-a", f"release={release}", input="x\n")
    assert bad.returncode == 2 and "--progress" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    total = run_skyctl("pipe", HELD, "--total", "0", "-a", f"release={release}", input="x\n")
    assert total.returncode == 2 and "--total" in total.stderr, total.stderr
