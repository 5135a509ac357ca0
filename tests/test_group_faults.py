"""Many hosts when something goes wrong: a raising function, a killed or stopped worker,
``--fail-fast``; and the per-host summary's counts adding up (issue 18, items 7, 8, 10, 12, 13).

The ssh hosts are the test sshd under several profile names, the local ones
``type: local``; a worker is stopped or killed at a record where the function
waits for the test (a marker file names its pid): no timing involved.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from helpers import REPO, clean_env, numbers, pipe_killing_a_worker, sky, skyctl_argv, ssh_host_yaml, wait_for

T = "tests/targets/group_faults.py"
pytestmark = pytest.mark.timeout(300)
SUMMARY = re.compile(r"^(\S+): (.*?), (\d+) chunks?, (\d+) records? in, (\d+) values? out, (\d+) re-runs?, [\d.]+ s$")
TOTAL = re.compile(r"^total: (\d+) chunks?, (\d+) records? in, (\d+) values? out, (\d+) re-runs?"
                   r"(?:; cancelled: (\d+) chunks?, (\d+) records? \(not run to their end\))?$")


@pytest.fixture(scope="module")
def faults_config(tmp_path_factory: pytest.TempPathFactory, sshd) -> Path:
    text = "default: local\nhosts:\n  local:\n    type: local\n"
    for name in ("b1", "b2", "b3"):
        text += ssh_host_yaml(sshd, name=name, extra=f"env: {{SKYCTL_TEST_HOST: {name}}}")
    for name in ("l1", "l2"):
        text += f"  {name}:\n    type: local\n    env: {{SKYCTL_TEST_HOST: {name}}}\n"
    text += "groups:\n  four: [b1, b2, l1, l2]\n  farm: [b1, b2, b3]\n  trio: [b1, b2, l1]\n"
    path = tmp_path_factory.mktemp("faults") / "skyward.yaml"
    path.write_text(text)
    return path


def summary(stderr: str) -> tuple[dict[str, tuple[str, int, int, int, int]], tuple[int, ...]]:
    """The per-host lines (outcome, chunks, records, values, re-runs) and the totals line of a distributed pipe."""
    hosts, total = {}, None
    for line in stderr.splitlines():
        if m := SUMMARY.match(line):
            hosts[m[1]] = (m[2], int(m[3]), int(m[4]), int(m[5]), int(m[6]))
        elif m := TOTAL.match(line):
            total = tuple(int(g or 0) for g in m.groups())
    assert hosts and total is not None, stderr
    return hosts, total


def adds_up(stderr: str, stdout_lines: int) -> tuple[dict[str, tuple[str, int, int, int, int]], tuple[int, ...]]:
    """The per-host counts sum to the totals line, and the values to what stdout got."""
    hosts, (chunks, records, values, reruns, _, _) = summary(stderr)
    assert sum(h[1] for h in hosts.values()) == chunks, stderr
    assert sum(h[2] for h in hosts.values()) == records, stderr
    assert sum(h[3] for h in hosts.values()) == values == stdout_lines, stderr
    assert sum(h[4] for h in hosts.values()) == reruns, stderr
    return hosts, (chunks, records, values, reruns)


# -- item 7: a raising function ---------------------------------------------------------


def test_keep_order_failure_writes_exactly_what_one_host_writes(faults_config: Path) -> None:
    n, bad, chunk = 20000, 5555, 100
    one = sky(faults_config, "pipe", f"{T}:fails_at", "-a", f"bad={bad}", "-H", "local", input=numbers(n))
    assert one.returncode == 1 and one.stdout == numbers(bad - 1), one.stderr
    for _ in range(3):  # the same every run
        many = sky(faults_config, "pipe", f"{T}:fails_at", "-a", f"bad={bad}", "-H", "four", "--chunk", str(chunk),
                   "--keep-order", input=numbers(n))
        assert many.returncode == 1, many.stderr
        assert many.stdout == one.stdout
        assert re.search(r"^\[(b1|b2|l1|l2)\] ValueError: record 5555 is bad$", many.stderr, re.M), many.stderr
        assert "Traceback (most recent call last)" in many.stderr
        hosts, (chunks, records, values, _) = adds_up(many.stderr, bad - 1)
        # every chunk up to the failing one ended (56 of them), nothing after it counts
        assert (chunks, records) == (56, 5600), many.stderr
        failed = [name for name, h in hosts.items() if h[0].startswith("exit 1")]
        assert len(failed) == 1 and "; in chunk 56 (stdin lines 5501–5600)" in hosts[failed[0]][0], many.stderr


def test_failure_without_keep_order_writes_every_finished_chunk_and_names_the_failing_one(faults_config: Path) -> None:
    n, bad, chunk = 20000, 5555, 100
    result = sky(faults_config, "pipe", f"{T}:fails_at", "-a", f"bad={bad}", "-H", "four", "--chunk", str(chunk),
                 input=numbers(n))
    assert result.returncode == 1, result.stderr
    values = [int(v) for v in result.stdout.split()]
    assert len(values) == len(set(values))
    hosts, (chunks, records, _, _) = adds_up(result.stderr, len(values))
    failed = [h for h in hosts.values() if h[0].startswith("exit 1")]
    assert len(failed) == 1 and "; in chunk 56 (stdin lines 5501–5600)" in failed[0][0], result.stderr
    assert set(range(5501, bad)) <= set(values)  # the failing chunk's values before the failure
    whole = {k for k in range(n // chunk) if all(k * chunk + i in values for i in range(1, chunk + 1))}
    assert len(whole) >= chunks - 1  # every chunk that ended (but the failing one) is written whole
    assert records == chunks * chunk, result.stderr


# -- item 8: the counts add up ----------------------------------------------------------


def test_the_summary_adds_up_after_a_killed_worker(faults_config: Path, tmp_path: Path) -> None:
    n = 6000
    values, host, stderr = pipe_killing_a_worker(faults_config, tmp_path, n, f"{T}:gate_at", "-a", "at=3150",
                                                 "-a", f"workdir={tmp_path}", "--chunk", "200", marker="at-*")
    assert sorted(values) == [2 * i for i in range(1, n + 1)]
    hosts, (chunks, records, values, reruns) = adds_up(stderr, n)
    assert (chunks, records, reruns) == (30, n, 1), stderr
    assert ", 1 re-run, " in stderr and "1 re-runs" not in stderr
    assert hosts[host][0].startswith("exit 6"), stderr


def test_plurals_read_as_english(faults_config: Path) -> None:
    result = sky(faults_config, "pipe", f"{T}:fails_at", "-a", "bad=0", "-H", "l1,l2", "--chunk", "1", input="7\n")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^l\d: ok, 1 chunk, 1 record in, 1 value out, 0 re-runs, ", result.stderr, re.M), result.stderr
    assert "total: 1 chunk, 1 record in, 1 value out, 0 re-runs" in result.stderr


# -- item 10: a stalled worker is named ----------------------------------------------------


def test_a_stopped_worker_is_named_in_a_warning_and_the_run_completes_after(faults_config: Path, tmp_path: Path) -> None:
    n, at = 3000, 2950  # in the last chunk: the others finish and have nothing left to take
    proc = subprocess.Popen(
        skyctl_argv("pipe", f"{T}:gate_at", "-a", f"at={at}", "-a", f"workdir={tmp_path}", "-H", "farm", "--chunk", "100",
                    "-c", str(faults_config)),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
        env=clean_env({"SKYCTL_STALL_WARNING": "1"}))
    stderr: list[bytes] = []
    reader = threading.Thread(target=lambda: stderr.extend(iter(proc.stderr.readline, b"")), daemon=True)
    pid = None
    try:
        assert proc.stdin is not None
        proc.stdin.write(numbers(n).encode())
        proc.stdin.close()
        proc.stdin = None
        reader.start()
        marker = wait_for(lambda: list(tmp_path.glob("at-*")), timeout=120, what="a worker at the record")[0]
        host, pid = marker.read_text(), int(marker.name.split("-")[1])
        os.kill(pid, signal.SIGSTOP)
        (tmp_path / "gate").write_text("open")
        warning = f"warning: {host}: no value from chunk 30 (stdin lines 2901–3000) for "
        wait_for(lambda: any(warning in line.decode() for line in stderr), timeout=60, what="the stall warning")
        os.kill(pid, signal.SIGCONT)
        pid = None
        out = proc.stdout.read()
        assert proc.wait(timeout=120) == 0, b"".join(stderr).decode()
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    assert sorted(map(int, out.split())) == [2 * i for i in range(1, n + 1)]
    assert sum(warning in line.decode() for line in stderr) == 1  # once, not every second


# -- item 12: pool.map says what it did ----------------------------------------------------


def test_pool_map_logs_a_rerun_and_keeps_stats(faults_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    import skyctl
    from tests.targets import group_faults

    monkeypatch.chdir(REPO)
    caplog.set_level(logging.WARNING, logger="skyctl")
    n = 3000
    pool = skyctl.pool(["l1", "l2"], faults_config)
    values: list[int] = []
    done = threading.Event()

    def consume() -> None:
        try:
            values.extend(pool.map(group_faults.gate_at, range(1, n + 1), chunk=100, at=1550, workdir=str(tmp_path)))
        finally:
            done.set()

    threading.Thread(target=consume, daemon=True).start()
    marker = wait_for(lambda: list(tmp_path.glob("at-*")), timeout=120, what="a worker at the gate")[0]
    host = marker.read_text()
    os.kill(int(marker.name.split("-")[1]), signal.SIGKILL)
    (tmp_path / "gate").write_text("open")
    assert done.wait(120)
    assert sorted(values) == [2 * i for i in range(1, n + 1)]
    warnings = [r for r in caplog.records if r.name == "skyctl" and r.levelno == logging.WARNING]
    assert any(r.getMessage().startswith(f"{host}: ") and "chunk 16" in r.getMessage() and "runs again" in r.getMessage()
               for r in warnings), [r.getMessage() for r in warnings]
    stats = pool.stats
    assert set(stats) == {"l1", "l2"} and isinstance(stats[host], skyctl.HostStats)
    assert sum(s.records for s in stats.values()) == n and sum(s.values for s in stats.values()) == n
    assert sum(s.chunks for s in stats.values()) == 30 and sum(s.reruns for s in stats.values()) == 1
    assert stats[host].status == 6 and [s.status for name, s in stats.items() if name != host] == [0]


# -- item 13: --fail-fast's exit status ----------------------------------------------------


def test_fail_fast_exits_with_the_failing_hosts_status(faults_config: Path, tmp_path: Path) -> None:
    result = sky(faults_config, "run", f"{T}:raises_on", "-a", "bad=b2", "-a", f"workdir={tmp_path}", "-a", "hosts=3",
                 "-H", "trio", "--fail-fast")
    assert result.returncode == 1, result.stderr
    assert "RuntimeError: b2 is bad" in result.stderr
    lines = {line.split(":")[0]: line for line in result.stderr.splitlines() if re.match(r"^(b1|b2|l1): ", line)}
    assert lines["b2"].startswith("b2: exit 1, raised RuntimeError"), result.stderr
    assert lines["b1"].startswith("b1: cancelled (--fail-fast)") and lines["l1"].startswith("l1: cancelled"), result.stderr
    for host in ("b1", "l1"):  # their generators were closed
        wait_for(lambda h=host: (tmp_path / f"finally-{host}").exists(), timeout=30, what=f"{host}'s finally")


# -- the scheduler in-process: an earlier chunk failing after a later one -------------------


def test_keep_order_counts_the_first_failing_chunk_in_input_order_even_when_it_fails_last() -> None:
    """Chunk 3 raises first, chunk 2 later, chunk 1 ends last: the output is what one host
    writes (chunk 1, then chunk 2 up to its failure), and the failure is chunk 2's."""
    import time
    from typing import Any, Iterator

    from skyctl.many import Distributor, Slot

    distributor: Distributor

    def until(condition: Any) -> None:
        deadline = time.monotonic() + 30
        while not condition():
            assert time.monotonic() < deadline, "the scheduler never got there"
            time.sleep(0.005)

    class Stream:
        def __init__(self, feed: Any) -> None:
            self.feed, self.result, self.stop = feed, None, None

        def batches(self) -> Iterator[list[int]]:
            records = [r for batch in self.feed.batches() for r in batch]
            first = records[0]
            if first == 1:  # chunk 1 ends once chunk 2 is the failure
                until(lambda: distributor.failed_chunk is not None and distributor.failed_chunk.number == 1)
            if first == 11:  # chunk 2 fails once chunk 3 has
                until(lambda: distributor.failed_chunk is not None)
            for r in records:
                if self.stop is not None:
                    raise self.stop
                if r in (15, 25):
                    raise ValueError(f"record {r} is bad")
                yield [r]

        def interrupt(self, exc: BaseException) -> None:
            self.stop = exc

        def close(self) -> None:
            pass

    class Host:
        def close(self) -> None:
            pass

    out: list[int] = []
    slots = [Slot(Host(), name, 0) for name in ("h1", "h2", "h3")]
    distributor = Distributor(slots, lambda slot, feed, skip: Stream(feed), [list(range(1, 51))],
                              lambda chunk, host, batch: out.extend(batch), chunk=10, ordered=True, stall_warning=None)
    distributor.run()
    assert out == list(range(1, 15))
    assert isinstance(distributor.error, ValueError) and str(distributor.error) == "record 15 is bad"
    assert distributor.failed_chunk is not None and distributor.failed_chunk.number == 1
    failed = [s for s in distributor.stats.values() if s.error is not None]
    assert len(failed) == 1 and failed[0].name == distributor.failed_host
    totals = distributor.totals()
    assert (totals.chunks, totals.records, totals.values) == (2, 20, 14)
    assert totals.records + totals.cancelled_records == distributor.records_read  # all read before chunk 3 failed, or not
