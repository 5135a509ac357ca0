"""``skyctl pipe`` end to end, on the built-in ``local`` host and on the test sshd.

The contract section "pipe: stdin into Iterator[T]": the README examples,
records reaching the function as they are written, ``pipe`` ending when the
function returns, empty input, bad records, and choosing the stream
parameter. Every test runs the real ``skyctl`` executable; targets are in
``tests/targets/pipes.py``. The format × type matrix is in
``test_pipe_formats.py``; cancellation in ``test_pipe_cancel.py``; memory and
backpressure in ``test_pipe_memory.py``.
"""

from __future__ import annotations

import csv
import hashlib
import shlex
import subprocess
from collections import deque
from pathlib import Path

import pytest

from helpers import REPO, clean_env, skyctl_argv, start_skyctl
from pipetools import PIPES, assert_values, pipe, read_line

pytestmark = pytest.mark.timeout(120)


def moving_average(values: list[float], window: int = 3) -> list[float]:
    """The same computation as examples/mod.py:moving_average, done here."""
    recent: deque[float] = deque(maxlen=window)
    out = []
    for x in values:
        recent.append(x)
        if len(recent) == window:
            out.append(round(sum(recent) / window, 6))
    return out


def csv_column(path: Path, column: str) -> list[float]:
    with path.open(newline="") as f:
        return [float(row[column]) for row in csv.DictReader(f)]


# -- the README examples ---------------------------------------------------------------
def test_readme_csv_example_prints_the_moving_average_of_the_value_column(host_config):
    data = REPO / "examples" / "data.csv"
    done = subprocess.run(
        ["bash", "-c", f"cat examples/data.csv | {shlex.join(skyctl_argv())} pipe examples/mod.py:moving_average "
                       f"--format csv --column value -c {shlex.quote(str(host_config))}"],
        capture_output=True, text=True, timeout=60, cwd=REPO, env=clean_env(),
    )
    assert done.returncode == 0, done.stderr
    expected = moving_average(csv_column(data, "value"))
    assert len(expected) == 28
    assert done.stdout.splitlines() == [str(v) for v in expected]


def test_readme_one_number_per_line_example_needs_no_flags(host_config):
    values = [float(line) for line in (REPO / "examples" / "values.txt").read_text().split()]
    assert values == csv_column(REPO / "examples" / "data.csv", "value")
    done = subprocess.run(
        ["bash", "-c", f"cat examples/values.txt | {shlex.join(skyctl_argv())} pipe examples/mod.py:moving_average "
                       f"-a window=5 -c {shlex.quote(str(host_config))}"],
        capture_output=True, text=True, timeout=60, cwd=REPO, env=clean_env(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(v) for v in moving_average(values, 5)]


def test_csv_with_a_header_under_the_default_lines_format_is_a_bad_record_at_line_1(local_config):
    done = subprocess.run(
        ["bash", "-c", f"{shlex.join(skyctl_argv())} pipe examples/mod.py:moving_average -c {shlex.quote(str(local_config))}"
                       " < examples/data.csv"],
        capture_output=True, text=True, timeout=60, cwd=REPO, env=clean_env(),
    )
    assert done.returncode == 65
    assert "stdin line 1: cannot read 'timestamp,sensor,value' as float for parameter 'data'" in done.stderr
    assert done.stdout == ""


# -- records flow as they are written, and pipe ends with the function ---------------
def test_a_line_written_to_stdin_comes_back_before_stdin_is_closed(host_config, tmp_path):
    err = (tmp_path / "stderr").open("wb")
    proc = start_skyctl("pipe", f"{PIPES}:echo_str", "-c", str(host_config),
                        stdin=subprocess.PIPE, stderr=err, bufsize=0)
    try:
        for word in (b"first", b"second", b"third"):
            proc.stdin.write(word + b"\n")
            assert read_line(proc.stdout, timeout=60) == word + b"\n"
        assert proc.poll() is None  # still waiting for more stdin
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0, (tmp_path / "stderr").read_text()
        assert proc.stdout.read() == b""
    finally:
        proc.kill()
        proc.wait(timeout=10)
        err.close()


def test_yes_into_take3_ends_when_the_function_returns(host_config):
    done = subprocess.run(
        ["bash", "-c", f"yes | {shlex.join(skyctl_argv())} pipe {PIPES}:take3 -c {shlex.quote(str(host_config))}"],
        capture_output=True, text=True, timeout=60, cwd=REPO, env=clean_env(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "y\ny\ny\n"


def test_a_million_lines_arrive_complete_and_in_order(host_config, tmp_path):
    source = tmp_path / "in.txt"
    source.write_bytes(b"".join(b"%d\n" % i for i in range(1_000_000)))
    out = tmp_path / "out.txt"
    with source.open("rb") as stdin, out.open("wb") as stdout:
        proc = start_skyctl("pipe", f"{PIPES}:echo_str", "-c", str(host_config), stdin=stdin, stdout=stdout)
        _, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 0, stderr
    data = out.read_bytes()
    lines = data.split(b"\n")
    assert len(lines) == 1_000_001 and lines[-1] == b""
    assert (lines[0], lines[499_999], lines[999_999]) == (b"0", b"499999", b"999999")
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(source.read_bytes()).hexdigest()


# -- empty input ---------------------------------------------------------------------
def test_empty_stdin_prints_nothing_and_succeeds(host_config):
    done = pipe(host_config, "echo_str", input=b"")
    assert (done.returncode, done.stdout) == (0, ""), done.stderr


def test_empty_stdin_gives_the_functions_own_result_for_no_records(host_config):
    done = pipe(host_config, "count", input=b"")
    assert (done.returncode, done.stdout) == (0, "0\n"), done.stderr


def test_a_csv_holding_only_its_header_has_no_records(local_config):
    done = pipe(local_config, "echo_dict", "--format", "csv", input=b"a,b\n")
    assert (done.returncode, done.stdout) == (0, ""), done.stderr


# -- bad records ---------------------------------------------------------------------
def test_bad_record_fail_keeps_earlier_values_closes_the_generator_and_exits_65(host_config, tmp_path):
    good = [f"{i}.5" for i in range(5000)]
    stdin = "\n".join(good[:16] + ["abc"] + good[16:]) + "\n"
    done = pipe(host_config, "guarded", "-a", f"marks={tmp_path}", input=stdin)
    assert done.returncode == 65, done.stderr
    assert done.stdout.splitlines() == good[:16]
    assert "stdin line 17: cannot read 'abc' as float for parameter 'data'\n" in done.stderr
    assert done.stderr.count("stdin line") == 1
    assert "Traceback" not in done.stderr
    assert (tmp_path / "closed").read_text() == "finally ran"


def test_bad_record_fail_after_many_values_still_prints_every_one_before_it(local_config, tmp_path):
    good = [str(float(i)) for i in range(100_000)]
    done = pipe(local_config, "guarded", "-a", f"marks={tmp_path}", input="\n".join(good + ["1,5"] + good) + "\n")
    assert done.returncode == 65
    assert done.stdout.splitlines() == good
    assert "stdin line 100001: cannot read '1,5' as float for parameter 'data'" in done.stderr
    assert (tmp_path / "closed").exists()


BAD_UTF8_CASES = [  # (records before the bad line: none, a few, more than one read of stdin holds)
    pytest.param(0, id="first-line"), pytest.param(2, id="third-line"), pytest.param(20_000, id="after-20000"),
]


@pytest.mark.parametrize("good", BAD_UTF8_CASES)
@pytest.mark.parametrize("target, flags, header", [("echo_str", (), b""), ("echo_int", (), b""), ("echo_int", ("--format", "csv"), b"n\n")],
                         ids=["str", "int", "csv-int"])
def test_a_bad_utf8_line_comes_after_every_value_before_it(host_config, good, target, flags, header):
    lines = [str(i).encode() for i in range(good)]
    data = header + b"\n".join(lines + [b"\xff", b"7", b"8"]) + b"\n"
    done = pipe(host_config, target, *flags, input=data)
    assert done.returncode == 65, done.stderr
    assert done.stdout == "".join(f"{i}\n" for i in range(good))
    line = good + 1 + bool(header)
    assert f"error: stdin line {line}: cannot read '\\\\xff' as " in done.stderr, done.stderr
    assert done.stderr.count("stdin line") == 1

    skipped = pipe(host_config, target, *flags, "--on-bad-line", "skip", input=data)
    assert skipped.returncode == 0, skipped.stderr
    assert skipped.stdout == "".join(f"{i}\n" for i in [*range(good), 7, 8])
    assert f"warning: stdin line {line}: cannot read '\\\\xff' as " in skipped.stderr, skipped.stderr


def test_a_bad_record_the_function_never_reaches_is_not_an_error(local_config):
    done = pipe(local_config, "take3", "--on-bad-line", "fail", input="a\nb\nc\nd\n" * 1000 + "\xff\n")
    assert (done.returncode, done.stdout) == (0, "a\nb\nc\n"), done.stderr


def test_bad_record_skip_warns_about_five_then_counts_the_rest(host_config):
    lines, good = [], []
    for i in range(1, 21):
        if i % 2 == 0 and i <= 16:
            lines.append(f"x{i}")
        else:
            lines.append(f"{i}")
            good.append(float(i))
    done = pipe(host_config, "echo_float", "--on-bad-line", "skip", input="\n".join(lines) + "\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(v) for v in good]
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert warnings[:5] == [f"warning: stdin line {n}: cannot read 'x{n}' as float for parameter 'data'" for n in (2, 4, 6, 8, 10)]
    assert len(warnings) == 6
    assert "skipped 8 bad stdin records (5 shown above)" in warnings[5]


# -- which parameter is fed ---------------------------------------------------------
def test_a_function_without_a_stream_parameter_is_a_usage_error(local_config):
    done = pipe(local_config, "no_stream", input="1\n")
    assert done.returncode == 2
    assert "no_stream() has no parameter annotated Iterator[T]" in done.stderr
    assert "Traceback" not in done.stderr


def test_two_stream_parameters_need_param_and_the_hint_says_so(local_config):
    done = pipe(local_config, "two_streams", input="1\n")
    assert done.returncode == 2
    assert "left, right" in done.stderr and "--param" in done.stderr


def test_param_picks_the_stream_and_other_parameters_keep_defaults(host_config):
    done = pipe(host_config, "two_streams", "--param", "left", "-a", "scale=3", input="1\n2\n")
    assert (done.returncode, done.stdout) == (0, "3\n6\n"), done.stderr


def test_param_feeds_stdin_into_the_second_stream_while_arg_gives_the_first(local_config):
    done = pipe(local_config, "two_streams", "--param", "right", "-a", "left=5,6", input="1\n2\n")
    assert (done.returncode, done.stdout) == (0, "5\n6\n-1\n-2\n"), done.stderr


def test_param_naming_no_stream_parameter_suggests_the_close_one(local_config):
    done = pipe(local_config, "two_streams", "--param", "rigth", input="1\n")
    assert done.returncode == 2
    assert "did you mean 'right'?" in done.stderr


def test_optional_iterable_and_plain_function_streams_are_fed(local_config):
    assert pipe(local_config, "optional_stream", input="4\n5\n").stdout == "4\n5\n"
    assert pipe(local_config, "echo_iterable", input="p\nq\n").stdout == "p\nq\n"


def test_arg_values_reach_the_other_parameters(host_config):
    done = pipe(host_config, "scaled", "-a", "factor=0.5", "--arg", "offset=1", "-o", "json", input="1\n2\n10\n")
    assert_values(done, [1.5, 2.0, 6.0])


def test_a_missing_required_arg_beside_the_stream_is_a_usage_error(local_config):
    done = pipe(local_config, "scaled", input="1\n")
    assert done.returncode == 2
    assert "factor" in done.stderr


def test_the_stream_parameter_cannot_also_be_given_with_arg(local_config):
    done = pipe(local_config, "echo_str", "-a", "data=x", input="1\n")
    assert done.returncode == 2
    assert "parameter 'data' (Iterator[str]) is fed from stdin" in done.stderr
