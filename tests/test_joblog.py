"""Long jobs end to end: ``pipe --joblog J --results R --resume``, on the test sshd and ``local``.

The guarantee: kill skyctl with SIGKILL at any moment, resume with the same
command plus ``--resume`` as often as needed, and R ends byte-identical to an
uninterrupted ``--keep-order`` run (without it: the same lines, each once).
The client is killed at points it reaches deterministically: calls that wait
on marker files (tests/targets/longjobs.py) and the client's test-only pause
(``SKYCTL_TEST_PAUSE=POINT:N:PATH``, see skyctl/joblog/results.py); never a sleep.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from helpers import REPO, run_skyctl, ssh_host_yaml, start_skyctl, wait_for

T = "tests/targets/longjobs.py"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, sshd) -> Path:
    root = tmp_path_factory.mktemp("longjobs")
    text = "default: local\nhosts:\n"
    for name in ("b1", "b2"):
        text += ssh_host_yaml(sshd, name=name, extra=f"env: {{SKYCTL_TEST_HOST: {name}}}")
    for name in ("l1", "l2"):
        text += f"  {name}:\n    type: local\n    env: {{SKYCTL_TEST_HOST: {name}}}\n"
    text += "groups:\n  farm: [b1, b2, l1]\n  locals: [l1, l2]\n"
    path = root / "skyward.yaml"
    path.write_text(text)
    return path


def numbers(n: int) -> bytes:
    return "".join(f"{i}\n" for i in range(1, n + 1)).encode()


def expected(n: int) -> bytes:
    return "".join(f"{x},{x * x}\n" for x in range(1, n + 1)).encode()


def entries(joblog: Path) -> list[dict]:
    return [json.loads(line) for line in joblog.read_text().splitlines() if line.strip()]


def chunk_lines(joblog: Path, status: str | None = None) -> list[dict]:
    return [e for e in entries(joblog) if "chunk" in e and (status is None or e["status"] == status)]


def logged_end(joblog: Path) -> int:
    return max((e["offset"] + e["length"] for e in chunk_lines(joblog, "ok")), default=0)


def steer(work: Path, **files: str) -> None:
    """Reset the markers of ``work`` and write the given ones."""
    work.mkdir(exist_ok=True)
    for old in work.iterdir():
        old.unlink()
    for name, text in files.items():
        (work / name).write_text(text)


class Job:
    """One long job: its input, job log, results file, and the same command each time."""

    def __init__(self, tmp_path: Path, config: Path, n: int, chunk: int, *flags: str, host: str = "farm") -> None:
        self.work = tmp_path / "work"
        self.joblog, self.results = tmp_path / "job.log", tmp_path / "results.out"
        self.input = tmp_path / "input.txt"
        self.input.write_bytes(numbers(n))
        self.argv = ["pipe", f"{T}:steered", "-a", f"workdir={self.work}", "-H", host, "--chunk", str(chunk), *flags,
                     "--joblog", str(self.joblog), "--results", str(self.results), "-c", str(config)]
        steer(self.work)

    def start(self, *extra: str, pause: str | None = None) -> subprocess.Popen[bytes]:
        with self.input.open("rb") as stdin:
            return start_skyctl(*self.argv, *extra, stdin=stdin, cwd=REPO,
                                env={"SKYCTL_TEST_PAUSE": pause} if pause else None)

    def run(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return run_skyctl(*self.argv, *extra, input=self.input.read_text(), timeout=240)

    def kill_when(self, proc: subprocess.Popen[bytes], there: Path | None = None, glob: str | None = None) -> str:
        """SIGKILL the client once ``there`` (or a file matching ``glob`` in work) exists; its stderr."""
        def reached() -> bool:
            return proc.poll() is not None or (there.exists() if there is not None else any(self.work.glob(glob or "")))

        wait_for(reached, timeout=180, what=f"{there or glob}")
        assert proc.poll() is None, proc.communicate()[1].decode()
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        return err.decode()


@pytest.mark.parametrize("order", [["--keep-order"], []], ids=["keep-order", "as-they-come"])
def test_killed_anywhere_and_resumed_the_results_are_exactly_once(config: Path, tmp_path: Path,
                                                                 order: list[str]) -> None:
    n, chunk = 3000, 100
    job = Job(tmp_path, config, n, chunk, *order)

    # 1. before any chunk is logged: every call waits at its first record
    steer(job.work, stall="")
    job.kill_when(job.start(), glob="stalled-*")
    assert chunk_lines(job.joblog) == [] and job.results.read_bytes() == b""
    (job.work / "release").write_text("")  # the orphaned calls end

    # 2. between a block's write and its log line (this run's 3rd block)
    steer(job.work)
    job.kill_when(job.start("--resume", pause=f"after-block:3:{tmp_path / 'p2'}"), tmp_path / "p2.at")
    assert len(chunk_lines(job.joblog, "ok")) == 2  # blocks 1 and 2 (a group commit logs each before the pause)
    assert job.results.stat().st_size > logged_end(job.joblog)  # a block on disk that the log does not name

    # 3. mid-block: half of this run's 2nd block written
    job.kill_when(job.start("--resume", pause=f"mid-block:2:{tmp_path / 'p3'}"), tmp_path / "p3.at")
    ok = {e["chunk"] for e in chunk_lines(job.joblog, "ok")}
    assert len(ok) in (2, 3)  # the 1st block of this run is logged unless it was committed in one group with the 2nd
    assert job.results.stat().st_size > logged_end(job.joblog)
    assert n // chunk not in ok

    # 4. a host dies in the resumed run (its chunk runs again elsewhere), then the client is killed after the last chunk
    steer(job.work, hold=str(n))
    proc = job.start("--resume", pause=f"at-end:0:{tmp_path / 'p4'}")
    wait_for(lambda: (job.work / "held").exists() and (job.work / "held").read_text(), timeout=180, what="a held call")
    pid, host = (job.work / "held").read_text().split()
    os.kill(int(pid), signal.SIGKILL)
    (job.work / "release").write_text("")
    err = job.kill_when(proc, tmp_path / "p4.at")
    assert f"warning: {host}:" in err and "runs again" in err, err
    assert {e["chunk"] for e in chunk_lines(job.joblog, "ok")} == set(range(1, n // chunk + 1))
    assert [e for e in chunk_lines(job.joblog) if e["status"] == "lost" and e["host"] == host], entries(job.joblog)

    # 5. resumed once more: nothing left to run, nothing written; R is the uninterrupted run's
    before = job.joblog.read_text()
    done = job.run("--resume")
    assert done.returncode == 0, done.stderr
    assert chunk_lines(job.joblog)[: len(chunk_lines(job.joblog))] and job.joblog.read_text().startswith(before)
    assert not [e for e in entries(job.joblog)[before.count("\n"):] if "chunk" in e]
    results = job.results.read_bytes()
    if order:
        assert results == expected(n)
    else:
        lines = results.splitlines(keepends=True)
        assert len(lines) == n and sorted(lines) == sorted(expected(n).splitlines(keepends=True))
    assert logged_end(job.joblog) == len(results)
    # the same as one uninterrupted run (to stdout)
    steer(job.work)
    straight = run_skyctl(*[a for a in job.argv if a not in ("--joblog", str(job.joblog), "--results", str(job.results))],
                          input=job.input.read_text(), timeout=240)
    assert straight.returncode == 0, straight.stderr
    if order:
        assert straight.stdout.encode() == results


def test_a_changed_input_is_refused_with_its_line_and_nothing_written(config: Path, tmp_path: Path) -> None:
    job = Job(tmp_path, config, 100, 10, "--keep-order", host="l1")
    first = job.run()
    assert first.returncode == 0, first.stderr
    results = job.results.read_bytes()
    assert results == expected(100) and len(chunk_lines(job.joblog, "ok")) == 10
    lines = job.input.read_text().splitlines(keepends=True)
    lines[56] = "5700\n"
    job.input.write_text("".join(lines))
    again = job.run("--resume")
    assert again.returncode == 2, again.stderr
    assert "the input differs from the logged run at line 51 (chunk 6, lines 51-60" in again.stderr, again.stderr
    assert job.results.read_bytes() == results


def test_a_shorter_input_is_refused(config: Path, tmp_path: Path) -> None:
    job = Job(tmp_path, config, 50, 10, host="l1")
    assert job.run().returncode == 0
    job.input.write_bytes(numbers(30))
    again = job.run("--resume")
    assert again.returncode == 2 and "the input differs from the logged run at line 31" in again.stderr, again.stderr


def test_a_torn_last_log_line_is_ignored_and_its_chunk_runs_again(config: Path, tmp_path: Path) -> None:
    job = Job(tmp_path, config, 200, 20, "--keep-order", host="locals")
    assert job.run().returncode == 0
    text = job.joblog.read_text()
    last_chunk = text.rstrip("\n").rfind('\n{"chunk"')
    job.joblog.write_text(text[: last_chunk + 30])  # the last chunk's line, cut mid-write
    with job.results.open("ab") as f:
        f.write(b"half a block")  # ... after its block was (partly) written
    again = job.run("--resume")
    assert again.returncode == 0, again.stderr
    assert "torn line" in again.stderr, again.stderr
    assert job.results.read_bytes() == expected(200)
    reran = [e for e in entries(job.joblog)[text[: last_chunk + 1].count("\n"):] if "chunk" in e]
    assert [e["chunk"] for e in reran] == [10] and reran[0]["status"] == "ok"


def test_resume_failed_runs_only_the_failed_chunks(config: Path, tmp_path: Path) -> None:
    job = Job(tmp_path, config, 300, 50, host="l1")
    steer(job.work, fail="120")
    first = job.run()
    assert first.returncode == 1 and "record 120 fails" in first.stderr, first.stderr
    failed = chunk_lines(job.joblog, "failed")
    assert [(e["chunk"], e["first_line"], e["last_line"], e["exit"]) for e in failed] == [(3, 101, 150, 1)]
    resumed = job.run("--resume")  # a failed chunk is done for --resume: the others run
    assert resumed.returncode == 0, resumed.stderr
    assert {e["chunk"] for e in chunk_lines(job.joblog, "ok")} == {1, 2, 4, 5, 6}
    steer(job.work)
    before = len(entries(job.joblog))
    again = job.run("--resume-failed")
    assert again.returncode == 0, again.stderr
    ran = [e for e in entries(job.joblog)[before:] if "chunk" in e]
    assert [(e["chunk"], e["status"]) for e in ran] == [(3, "ok")]
    lines = job.results.read_bytes().splitlines(keepends=True)
    assert sorted(lines) == sorted(expected(300).splitlines(keepends=True))


def test_a_second_run_on_the_same_job_log_refuses(config: Path, tmp_path: Path) -> None:
    job = Job(tmp_path, config, 100, 10, host="l1")
    steer(job.work, stall="")
    first = job.start()
    try:
        wait_for(lambda: any(job.work.glob("stalled-*")) or first.poll() is not None, timeout=120, what="a stalled call")
        second = job.run("--resume")
        assert second.returncode == 2, second.stderr
        assert "is in use by another skyctl run" in second.stderr, second.stderr
    finally:
        (job.work / "release").write_text("")
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err.decode()
    # without --keep-order the contract promises the same lines, each once (their order on one worker:
    # tests/test_chunking.py::test_the_chunk_queued_on_the_same_worker_writes_after_the_one_ahead_of_it)
    assert sorted(job.results.read_bytes().splitlines()) == sorted(expected(100).splitlines())


def test_sigterm_logs_the_chunks_in_flight_as_interrupted(config: Path, tmp_path: Path) -> None:
    job = Job(tmp_path, config, 100, 10, host="farm")
    steer(job.work, stall="")
    proc = job.start()
    wait_for(lambda: any(job.work.glob("stalled-*")) or proc.poll() is not None, timeout=120, what="a stalled call")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err.decode()  # 128 + SIGTERM, as for any command ended by SIGTERM
    interrupted = chunk_lines(job.joblog, "interrupted")
    assert interrupted and all(e["exit"] in (130, 143) for e in interrupted), entries(job.joblog)
    assert entries(job.joblog)[-1]["exit"] == 143
    (job.work / "release").write_text("")
    steer(job.work)
    again = job.run("--resume")
    assert again.returncode == 0, again.stderr
    assert sorted(job.results.read_bytes().splitlines()) == sorted(expected(100).splitlines())


def test_one_ssh_host_with_a_job_log_runs_in_chunks_and_stdout_gets_the_values(config: Path, tmp_path: Path) -> None:
    joblog = tmp_path / "j.log"
    argv = ["pipe", f"{T}:upper", "-H", "b1", "--chunk", "4", "--joblog", str(joblog), "-c", str(config)]
    done = run_skyctl(*argv, input="a\nb\nc\nd\ne\nf\ng\n", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "A\nB\nC\nD\nE\nF\nG\n", done.stderr
    logged = entries(joblog)
    assert logged[0]["joblog"] == 1 and logged[0]["chunk_size"] == 4 and logged[0]["command"][:2] == ["skyctl", "pipe"]
    chunks = [e for e in logged if "chunk" in e and "status" in e]
    assert [(e["chunk"], e["host"], e["first_line"], e["last_line"], e["records"], e["values"], e["status"])
            for e in chunks] == [(1, "b1", 1, 4, 4, 4, "ok"), (2, "b1", 5, 7, 3, 3, "ok")]
    import hashlib

    assert chunks[1]["sha256"] == hashlib.sha256(b"e\nf\ng\n").hexdigest()
    again = run_skyctl(*argv, "--resume", input="a\nb\nc\nd\ne\nf\ng\n", timeout=120)
    assert again.returncode == 0 and again.stdout == "", again.stderr


@pytest.mark.parametrize("argv, message", [
    (["--resume"], "--resume needs --joblog FILE"),
    (["--results", "r.out"], "--results needs --joblog FILE"),
])
def test_long_job_flags_need_a_job_log(config: Path, argv: list[str], message: str) -> None:
    done = run_skyctl("pipe", f"{T}:upper", "-H", "l1", *argv, "-c", str(config), input="a\n", timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_a_job_log_without_chunk_cuts_1000_lines_and_refuses_chunk_auto(config: Path, tmp_path: Path) -> None:
    """``--chunk auto`` (the default elsewhere) cannot cut a job log's fixed line ranges: without ``--chunk``
    a job log's chunks are 1000 lines (in its header, so a resume checks them); ``--chunk auto`` is refused."""
    joblog = tmp_path / "j.log"
    argv = ["pipe", f"{T}:upper", "-H", "locals", "--joblog", str(joblog), "-c", str(config)]
    text = "".join(f"r{i}\n" for i in range(2500))
    done = run_skyctl(*argv, "--keep-order", input=text, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == text.upper()
    assert entries(joblog)[0]["chunk_size"] == 1000 and entries(joblog)[0]["chunk_unit"] == "lines"
    assert [(e["first_line"], e["last_line"], e["records"]) for e in sorted(chunk_lines(joblog, "ok"),
                                                                               key=lambda e: e["chunk"])] == [
        (1, 1000, 1000), (1001, 2000, 1000), (2001, 2500, 500)]
    again = run_skyctl(*argv, "--keep-order", "--resume", "--chunk", "1000", input=text, timeout=120)
    assert again.returncode == 0 and again.stdout == "", again.stderr
    refused = run_skyctl(*argv, "--chunk", "auto", input=text, timeout=60)
    assert refused.returncode == 2 and "--chunk auto cannot be used with --joblog" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr


def test_resume_with_other_chunk_settings_is_refused(config: Path, tmp_path: Path) -> None:
    job = Job(tmp_path, config, 30, 10, host="l1")
    assert job.run().returncode == 0
    other = run_skyctl(*[a if a != "10" else "7" for a in job.argv], "--resume", input=job.input.read_text(), timeout=60)
    assert other.returncode == 2 and "the logged run had --chunk 10, this one 7" in other.stderr, other.stderr


def test_a_bad_record_fails_its_chunk_and_a_resume_meets_it_again(config: Path, tmp_path: Path) -> None:
    joblog, results = tmp_path / "j.log", tmp_path / "r.out"
    argv = ["pipe", f"{T}:steered", "-a", f"workdir={tmp_path}", "-H", "l1", "--chunk", "2", "--keep-order",
            "--joblog", str(joblog), "--results", str(results), "-c", str(config)]
    for extra in ([], ["--resume"]):
        done = run_skyctl(*argv, *extra, input="1\n2\n3\nx\n5\n", timeout=120)
        assert done.returncode == 65 and "stdin line 4" in done.stderr, done.stderr
    failed = chunk_lines(joblog, "failed")
    assert [(e["chunk"], e["first_line"], e["exit"], e["sha256"]) for e in failed] == [(2, 3, 65, None)] * 2
    assert results.read_bytes() == b"1,1\n2,4\n"  # a chunk that fails writes nothing


def test_run_with_a_job_log_logs_each_hosts_call(config: Path, tmp_path: Path) -> None:
    joblog = tmp_path / "j.log"
    done = run_skyctl("run", "tests/targets/groups.py:where", "-H", "b1,l1", "--joblog", str(joblog), "-c", str(config),
                      timeout=120)
    assert done.returncode == 0, done.stderr
    logged = entries(joblog)
    assert logged[0]["joblog"] == 1 and logged[0]["command"][:2] == ["skyctl", "run"]
    assert sorted((e["host"], e["values"], e["status"], e["exit"]) for e in logged[1:-1]) == \
        [("b1", 1, "ok", 0), ("l1", 1, "ok", 0)]
    assert logged[-1]["exit"] == 0
    one = run_skyctl("run", f"{T}:upper", "-H", "l1", "--joblog", str(joblog), "-c", str(config), timeout=60)
    assert one.returncode == 2  # upper needs a stream: a usage error, logged too
    assert entries(joblog)[-1] == {**entries(joblog)[-1], "exit": 2}


def test_the_pool_api_with_a_job_log(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import skyctl
    from tests.targets import groups

    monkeypatch.chdir(REPO)
    joblog = tmp_path / "api.log"
    with skyctl.host("locals", config) as pool:
        first = pool.map(groups.double, range(1, 501), chunk=100, ordered=True, joblog=joblog)
        taken = [next(first) for _ in range(250)]
        first.close()  # the caller stops in chunk 3: chunks 1 and 2 are logged ok, chunk 3 is not
        assert taken == [2 * i for i in range(1, 251)]
        assert sorted(e["chunk"] for e in chunk_lines(joblog, "ok")) == [1, 2]
        rest = list(pool.map(groups.double, range(1, 501), chunk=100, ordered=True, joblog=joblog, resume=True))
        assert rest == [2 * i for i in range(201, 501)]
        with pytest.raises(skyctl.SkyctlError, match="differs from the logged run at line 1"):
            list(pool.map(groups.double, range(2, 502), chunk=100, ordered=True, joblog=joblog, resume=True))
