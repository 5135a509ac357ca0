"""``type: ray`` hosts, end to end: a real local Ray head, the real ``skyctl`` in subprocesses.

The cluster and the drivers run from a venv of their own that has ray
(``tests/rayhead.py``); the client (this Python) has none. ``cluster``'s
driver runs on a ``local`` host, ``sshcluster``'s on the test sshd. Every
wait has a deadline; the tests synchronise on files and lines, never on time:
a task waits for a file the test writes, and writes its pid where the test
needs it.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from helpers import (REPO, clean_env, pid_alive, run_skyctl, skyctl_argv, spare_pids, ssh_host_yaml, start_skyctl,
                     wait_for)
from rayhead import RAY_ENV, RayHead, RayUnavailable, ray_python, start_ray_head

T = "tests/targets/ray_targets.py"
pytestmark = pytest.mark.timeout(400)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"ray is required when CI is set: {reason}", pytrace=False)
    pytest.skip(f"no ray: {reason}")


@pytest.fixture(scope="session")
def ray_head() -> Iterator[RayHead]:
    """One local Ray head for the session (``ray start --head``), stopped at the end (its own processes only: never ``ray stop``)."""
    try:
        head = start_ray_head(ray_python())
    except RayUnavailable as exc:
        _unavailable(str(exc))
        raise
    try:
        yield head
    finally:
        head.stop()


@pytest.fixture(scope="module")
def ray_config(tmp_path_factory: pytest.TempPathFactory, ray_head: RayHead, sshd: Any) -> Path:
    env = "env: {" + ", ".join(f"{k}: '{v}'" for k, v in RAY_ENV.items()) + "}"
    text = (
        "default: local\nhosts:\n  local:\n    type: local\n"
        f"  head:\n    type: local\n    python: {ray_head.python}\n    {env}\n"
        f"  cluster:\n    type: ray\n    via: head\n    address: {ray_head.address}\n    resources: {{num_cpus: 1}}\n"
        + ssh_host_yaml(sshd, name="sshhead", python=ray_head.python, extra=env)
        + f"  sshcluster:\n    type: ray\n    via: sshhead\n    address: {ray_head.address}\n"
        "  noray:\n    type: local\n"  # the client's own python: no ray there
        "  norayc:\n    type: ray\n    via: noray\n"
    )
    path = tmp_path_factory.mktemp("ray") / "skyward.yaml"
    path.write_text(text)
    return path


@pytest.fixture(params=["cluster", "sshcluster"], ids=["via-local", "via-ssh"])
def ray_host(request: pytest.FixtureRequest) -> str:
    return request.param


def sky(config: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return run_skyctl(*args, "-c", str(config), cwd=REPO, timeout=kw.pop("timeout", 300), **kw)


class Lines:
    """A process's stdout read line by line on a thread: ``next(timeout)`` has a deadline."""

    def __init__(self, stream: Any) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            for raw in iter(stream.readline, b""):
                line = raw.decode().rstrip("\n")
                self.seen.append(line)
                self._queue.put(line)
            self._queue.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def next(self, timeout: float = 120) -> str | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout}s") from None

    def wait_end(self, timeout: float = 120) -> list[str]:
        """Every line, once the stream has ended."""
        while self.next(timeout) is not None:
            pass
        return self.seen


# -- run: one call, one Ray task ---------------------------------------------------------


def test_run_streams_values_live_from_a_ray_task(ray_config: Path, ray_host: str, tmp_path: Path) -> None:
    proc = start_skyctl("run", f"{T}:gated", "-a", f"workdir={tmp_path}", "-H", ray_host, "-c", str(ray_config))
    try:
        lines = Lines(proc.stdout)
        # the task is still running: it waits for the file this test writes only after reading the value
        assert lines.next() == "first in_task=True"
        (tmp_path / "go").write_text("")
        assert lines.next() == "second"
        assert proc.wait(timeout=120) == 0, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_task_on_the_drivers_node_streams_over_a_unix_socket(ray_config: Path, ray_host: str) -> None:
    """The head, the driver and the task share this machine: the task's link is the driver's abstract Unix
    socket, not loopback TCP (``raylink.Link.local``), whichever way the driver was reached."""
    result = sky(ray_config, "run", f"{T}:link_family", "-H", ray_host)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "unix"


def test_a_plain_functions_value_and_a_raising_task(ray_config: Path) -> None:
    added = sky(ray_config, "run", f"{T}:add", "-a", "a=2", "-a", "b=3", "-H", "cluster")
    assert (added.returncode, added.stdout) == (0, "5\n"), added.stderr
    raised = sky(ray_config, "run", f"{T}:boom", "-H", "cluster")
    assert raised.returncode == 1, raised.stderr
    assert raised.stdout == "0\n1\n"  # the values before the error, then the traceback
    assert "Traceback (most recent call last):" in raised.stderr
    assert 'ray_targets.py", line' in raised.stderr and ", in boom" in raised.stderr
    assert "ValueError: boom after 2" in raised.stderr
    for own in ("raytask", "raydriver", "skyctl bundle", "site-packages/ray"):
        assert own not in raised.stderr, raised.stderr


def test_ctrl_c_cancels_the_task_and_its_finally_runs(ray_config: Path, tmp_path: Path) -> None:
    proc = start_skyctl("run", f"{T}:forever", "-a", f"workdir={tmp_path}", "-H", "cluster", "-c", str(ray_config))
    try:
        first = Lines(proc.stdout).next()
        assert first is not None and first.startswith("started "), first
        task_pid = int(first.split()[1])
        assert task_pid != proc.pid
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    marker = tmp_path / "finally"
    wait_for(marker.exists, timeout=60, what="the task's finally")
    # the task was cancelled, never left to return: ray.cancel interrupts it in its loop (KeyboardInterrupt),
    # or closes it at its yield when it is still paused there by Ray's backpressure (GeneratorExit; a busy
    # machine makes that more likely): which of the two is timing, not behaviour
    assert marker.read_text() in ("KeyboardInterrupt", "GeneratorExit")


def test_ctrl_c_in_a_pipe_cancels_the_chunk_and_the_one_queued_behind_it_never_runs(ray_config: Path,
                                                                                     tmp_path: Path) -> None:
    """A slot's next chunk waits in its task behind the running one (attached ahead); Ctrl-C cancels the
    running chunk (its ``finally`` runs) and the queued one, which never starts: none of its values come."""
    proc = subprocess.Popen(
        skyctl_argv("pipe", f"{T}:hold_at", "-a", "gate_at=15", "-a", f"workdir={tmp_path}", "-H", "cluster",
                    "-j", "1", "--chunk", "10", "-c", str(ray_config)),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=clean_env())
    try:
        assert proc.stdin is not None
        proc.stdin.write("".join(f"{i}\n" for i in range(1, 41)).encode())
        proc.stdin.close()
        proc.stdin = None
        lines = Lines(proc.stdout)
        wait_for((tmp_path / "blocked").exists, timeout=180, what="the second chunk at its gate")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
        values = [int(v) for v in lines.wait_end() if v]
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_for((tmp_path / "finally-15").exists, timeout=60, what="the cancelled chunk's finally")
    assert (tmp_path / "finally-15").read_text() in ("KeyboardInterrupt", "GeneratorExit")
    assert all(v <= 2 * 20 for v in values), values  # nothing of the chunks after the held one


def test_the_python_api_on_a_ray_host(ray_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import skyctl
    from tests.targets import ray_targets

    monkeypatch.chdir(REPO)
    with skyctl.host("cluster", ray_config) as cluster:
        assert skyctl.function(ray_targets.add)(1, 2) >> cluster == 3
        assert list(skyctl.function(ray_targets.count)(4) >> cluster) == [0, 1, 2, 3]
        assert list(skyctl.function(ray_targets.double)(iter(range(5))) >> cluster) == [0, 2, 4, 6, 8]
        with pytest.raises(ValueError, match="boom after 1"):
            list(skyctl.function(ray_targets.boom)(1) >> cluster)


# -- pipe: chunks as Ray tasks ------------------------------------------------------------


def test_a_pipe_of_100000_records_through_ray_tasks_exactly_once(ray_config: Path, ray_host: str) -> None:
    n = 100_000
    result = sky(ray_config, "pipe", f"{T}:double", "-H", ray_host, "--chunk", "1000",
                 input="".join(f"{i}\n" for i in range(1, n + 1)))
    assert result.returncode == 0, result.stderr
    assert sorted(map(int, result.stdout.split())) == [2 * i for i in range(1, n + 1)]
    assert f"{ray_host}: ok, 100 chunks, 100000 records in, 100000 values out, 0 re-runs" in result.stderr


def test_a_chunk_task_gets_its_first_record_before_stdin_has_its_last(ray_config: Path, tmp_path: Path) -> None:
    """Records stream into a chunk's Ray task as they are read: the task starts with the first
    record, while stdin (and the chunk) is still open."""
    proc = subprocess.Popen(
        skyctl_argv("pipe", f"{T}:first_seen", "-a", f"workdir={tmp_path}", "-H", "cluster", "--chunk", "1000",
                    "-c", str(ray_config)),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=clean_env())
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"1\n2\n3\n")
        proc.stdin.flush()  # 3 records of a chunk of 1000, and stdin stays open
        wait_for(lambda: (tmp_path / "first-1").exists() or proc.poll() is not None, timeout=180,
                 what="the chunk task's first record")
        assert (tmp_path / "first-1").exists(), proc.stderr.read().decode() if proc.stderr else ""
        proc.stdin.write(b"4\n5\n")
        proc.stdin.close()
        proc.stdin = None
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    assert out.split() == [b"2", b"4", b"6", b"8", b"10"]
    assert "cluster: ok, 1 chunk, 5 records in, 5 values out" in err.decode()


def test_a_slots_back_to_back_chunks_run_in_one_kept_task(ray_config: Path) -> None:
    """The driver keeps a task whose call ended well for its next call: one Ray task runs a slot's chunks,
    each chunk still a call of the function of its own (its iterator ends with the chunk)."""
    result = sky(ray_config, "pipe", f"{T}:task_of_chunk", "-H", "cluster", "-j", "1", "--chunk", "100",
                 "--keep-order", input="".join(f"{i}\n" for i in range(1, 1001)))
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert [int(first) for _, first in lines] == list(range(1, 1001, 100))  # a call per chunk
    assert len({task for task, _ in lines}) == 1, lines  # all in one task


def test_a_killed_ray_worker_reruns_its_chunk_on_the_same_host(ray_config: Path, tmp_path: Path) -> None:
    n, gate_at = 6000, 3600  # chunk 4 (records 3001..4000) stops at its 600th record
    stderr = tmp_path / "stderr"
    with open(stderr, "wb") as errors:
        proc = subprocess.Popen(
            skyctl_argv("pipe", f"{T}:double_with_gate", "-a", f"gate_at={gate_at}", "-a", f"workdir={tmp_path}",
                        "-H", "cluster", "--chunk", "1000", "-c", str(ray_config)),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, cwd=REPO, env=clean_env())
    try:
        assert proc.stdin is not None
        proc.stdin.write("".join(f"{i}\n" for i in range(1, n + 1)).encode())  # 30 KB: within the pipe's buffer
        proc.stdin.close()
        proc.stdin = None
        lines = Lines(proc.stdout)
        blocked = wait_for(lambda: list(tmp_path.glob("blocked-*")), timeout=180, what="a Ray worker at the gate")
        victim = int(blocked[0].name.split("-")[1])
        # some of chunk 4's values are out before its worker dies (a batch of them), so the re-run must skip them
        wait_for(lambda: str(2 * 3001) in lines.seen, timeout=120, what="chunk 4's first values")
        os.kill(victim, signal.SIGKILL)
        (tmp_path / "gate").write_text("open")
        status = proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = stderr.read_text()
    assert status == 0, err
    values = sorted(int(v) for v in lines.wait_end() if v)
    assert values == [2 * i for i in range(1, n + 1)]  # each value exactly once
    assert "warning: cluster: chunk 4 (stdin lines 3001–4000): the Ray task was lost: WorkerCrashedError" in err, err
    assert "it runs again, skipping the values already written" in err, err
    # the chunk queued behind it in the same task (attached ahead), if one was, is lost with it and runs again from
    # its start: chunk 5 or 6, whichever that slot took next (the other slot may have taken chunk 5)
    lost_with_the_task = r"warning: cluster: chunk (\d+) \(stdin lines [^)]*\): the Ray task was lost: WorkerCrashedError"
    lost = {int(number) for number in re.findall(lost_with_the_task, err)}
    assert lost in ({4}, {4, 5}, {4, 6}), err
    assert f"cluster: ok, 6 chunks, 6000 records in, 6000 values out, {len(lost)} re-run" in err, err


def test_a_bad_record_ends_its_chunk_task_with_exit_65(ray_config: Path) -> None:
    data = "".join(f"{i}\n" for i in range(1, 2500)) + "oops\n" + "".join(f"{i}\n" for i in range(1, 100))
    result = sky(ray_config, "pipe", f"{T}:double", "-H", "cluster", input=data)
    assert result.returncode == 65, result.stderr
    assert "stdin line 2500: cannot read 'oops' as int" in result.stderr
    assert sorted(map(int, result.stdout.split())) == [2 * i for i in range(1, 2500)]


def test_a_plain_function_runs_once_per_chunk_task(ray_config: Path) -> None:
    result = sky(ray_config, "pipe", f"{T}:chunk_sum", "-H", "cluster", "--chunk", "100", "--keep-order",
                 input="".join(f"{i}\n" for i in range(1, 1001)))
    assert result.returncode == 0, result.stderr
    assert list(map(int, result.stdout.split())) == [sum(range(k * 100 + 1, k * 100 + 101)) for k in range(10)]


# -- the driver's environment ---------------------------------------------------------------


def test_ray_missing_on_the_via_host_is_exit_5_with_a_hint(ray_config: Path) -> None:
    for args in (("run", f"{T}:count", "-a", "n=3"), ("pipe", f"{T}:double")):
        result = sky(ray_config, *args, "-H", "norayc", input="1\n2\n")
        assert result.returncode == 5, result.stderr
        assert result.stdout == ""
        assert "ray is not importable" in result.stderr, result.stderr
        assert "hint: install ray into that host's python" in result.stderr
        assert "Traceback" not in result.stderr
    checked = sky(ray_config, "check", "norayc")
    assert checked.returncode == 5 and "norayc: FAILED (5)" in checked.stdout, checked.stdout + checked.stderr


def test_hosts_lists_and_check_reports_the_drivers_ray(ray_config: Path, ray_head: RayHead) -> None:
    listed = sky(ray_config, "hosts")
    assert listed.returncode == 0
    row = next(line for line in listed.stdout.splitlines() if line.startswith("cluster "))
    assert row.split()[1] == "ray" and f"ray {ray_head.address} via head" in row and "(on head)" in row
    checked = sky(ray_config, "check", "cluster")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("cluster: ok  python %d.%d" % sys.version_info[:2])
    assert f"ray {ray_head.version} at {ray_head.address}: 1 nodes, 2 CPUs" in checked.stdout


@pytest.mark.parametrize("host, message", [
    ("  c: {type: ray}\n", "type ray needs 'via'"),
    ("  c: {type: ray, via: nope}\n", "'via' is 'nope', which names no host"),
    ("  c: {type: ray, via: c}\n", "which is a ray host too"),
    ("  c: {type: ray, via: local, python: /usr/bin/python3}\n", "'python' does not apply to a ray host"),
    ("  c: {type: ray, via: local, resources: {num_cpu: 1}}\n", "did you mean 'num_cpus'?"),
    ("  c: {type: ray, via: local, workers: 0}\n", "'workers' must be a whole number"),
    ("  c: {type: local, via: local}\n", "'via' is only for ray hosts"),
])
def test_bad_ray_hosts_are_config_errors(tmp_path: Path, host: str, message: str) -> None:
    config = tmp_path / "skyward.yaml"
    config.write_text("hosts:\n  local:\n    type: local\n" + host)
    result = sky(config, "run", f"{T}:add", "-a", "a=1", "-a", "b=2")
    assert result.returncode == 3, result.stderr
    assert message in result.stderr


# -- the distributor's side of a lost task (no Ray needed) ----------------------------------


def test_a_lost_chunk_runs_again_on_the_same_slot() -> None:
    from skyctl.errors import ChunkLost
    from skyctl.many import Distributor, Slot

    class Stream:
        def __init__(self, feed: Any, skip: int, lose: bool) -> None:
            self.feed, self.skip, self.lose, self.result = feed, skip, lose, None

        def batches(self) -> Iterator[list[int]]:
            values = [2 * r for batch in self.feed.batches() for r in batch][self.skip:]
            if self.lose:
                yield values[:30]
                err = ChunkLost("box: the Ray task was lost: WorkerCrashedError")
                err.reason = "the Ray task was lost: WorkerCrashedError"
                raise err
            yield values

        def interrupt(self, exc: BaseException) -> None:
            pass

        def close(self) -> None:
            pass

    class Host:
        def close(self) -> None:
            pass

    runs: list[tuple[int, int]] = []

    def start(slot: Slot, feed: Any, skip: int) -> Stream:
        first = feed._chunk.records[0] if feed._chunk.records else None
        runs.append((first, skip))
        return Stream(feed, skip, lose=first == 101 and skip == 0)

    out: list[int] = []
    warnings: list[str] = []
    source = [list(range(1, 301))]
    distributor = Distributor([Slot(Host(), "box", 0)], start, source,
                              lambda chunk, host, batch: out.extend(batch), chunk=100, warn=warnings.append)
    distributor.run()
    assert distributor.exit_status == 0 and distributor.error is None
    assert sorted(out) == [2 * i for i in range(1, 301)]
    assert (101, 30) in runs  # the re-run skipped the 30 values already written
    stats = distributor.stats["box"]
    assert not stats.dead and stats.chunks == 3 and stats.reruns == 1
    assert warnings == ["box: chunk 2: the Ray task was lost: WorkerCrashedError; it runs again, "
                        "skipping the values already written"]


def test_a_timeout_cancels_the_task_and_its_finally_runs(ray_config: Path, tmp_path: Path) -> None:
    """``--timeout`` on a ray host: the driver cancels the task at the limit (``ray.cancel``), exit 124."""
    r = sky(ray_config, "run", f"{T}:forever", "-a", f"workdir={tmp_path}", "-H", "cluster", "--timeout", "30")
    assert r.returncode == 124, r.stderr
    assert r.stdout.startswith("started "), r.stdout
    assert "timed out after 30s (--timeout)" in r.stderr
    wait_for((tmp_path / "finally").exists, timeout=60, what="the task's finally")


def test_stopping_a_head_ends_its_processes_only(ray_head: RayHead) -> None:
    """``RayHead.stop`` never runs ``ray stop`` (which ends every cluster on the machine): a second head, with a
    worker its raylet started, goes entirely; the session's head keeps running."""
    other = start_ray_head(ray_head.python)
    driver = None
    try:
        # the driver stays attached (until its stdin closes) so that its task's worker is alive at the stop
        driver = subprocess.Popen(
            [other.python, "-c", "import os, sys, ray; ray.init(address=%r, logging_level='ERROR'); "
             "print(ray.get(ray.remote(lambda: os.getpid()).options(max_retries=0).remote()), flush=True); "
             "sys.stdin.read()" % other.address],
            env=other.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = Lines(driver.stdout).next(300)
        worker = int(line)
        before = other.pids()
        assert worker in before and driver.pid not in before
        kept = ray_head.pids()
        assert kept and not kept & before
    finally:
        other.stop()
        if driver is not None:
            driver.kill()
            driver.wait(timeout=60)
    assert not [pid for pid in before if os.path.exists(f"/proc/{pid}") and _running(pid)]
    assert not other.temp_dir.exists()
    assert ray_head.pids() and sky_ok_on(ray_head)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def sky_ok_on(head: RayHead) -> bool:
    """The head still answers: a plain driver gets a task's value."""
    done = subprocess.run([head.python, "-c", "import ray; ray.init(address=%r, logging_level='ERROR'); "
                           "print(ray.get(ray.remote(lambda: 41 + 1).options(max_retries=0).remote()))" % head.address],
                          env=head.env(), capture_output=True, text=True, timeout=300)
    return done.returncode == 0 and done.stdout.split()[-1:] == ["42"]


# -- spare drivers: a run leaves one, warm, for the next (``transports/spare.py``) ------------------


def _spare_config(tmp_path: Path, head: RayHead, extra: str = "") -> Path:
    env = "env: {" + ", ".join(f"{k}: '{v}'" for k, v in RAY_ENV.items()) + "}"
    path = tmp_path / "skyward.yaml"
    path.write_text(f"hosts:\n  head:\n    type: local\n    python: {head.python}\n    {env}\n"
                    f"  cluster:\n    type: ray\n    via: head\n    address: {head.address}\n{extra}")
    return path


def _with_runtime_dir(run_dir: Path) -> list[int]:
    """The processes whose environment names ``run_dir`` as their ``XDG_RUNTIME_DIR``: what a run started."""
    marker = f"XDG_RUNTIME_DIR={run_dir}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if marker in f.read().split(b"\0") and _running(int(entry)):
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_a_run_leaves_a_spare_driver_and_the_next_run_takes_it(ray_head: RayHead, run_dir: Path,
                                                                tmp_path: Path) -> None:
    config = _spare_config(tmp_path, ray_head)
    env = {"XDG_RUNTIME_DIR": str(run_dir)}
    first = run_skyctl("run", f"{T}:add", "-a", "a=2", "-a", "b=3", "-H", "cluster", "-c", str(config), env=env,
                       timeout=300)
    assert (first.returncode, first.stdout) == (0, "5\n"), first.stderr
    (spare,) = wait_for(lambda: spare_pids(run_dir), timeout=120, what="a spare driver listening")
    spares = run_dir / "skyctl" / "spares"
    (sock,) = spares.glob("*.sock")
    assert stat.S_IMODE(spares.stat().st_mode) == 0o700 and stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert spare in _with_runtime_dir(run_dir)  # (what the test without reuse looks for)
    gate = tmp_path / "gate"
    gate.mkdir()
    proc = start_skyctl("run", f"{T}:gated", "-a", f"workdir={gate}", "-H", "cluster", "-c", str(config), env=env)
    try:
        lines = Lines(proc.stdout)
        assert lines.next() == "first in_task=True"
        # the spare serves this run: its socket claimed, the process still there
        assert not sock.exists() and pid_alive(spare)
        (gate / "go").write_text("")
        assert lines.next() == "second"
        assert proc.wait(timeout=120) == 0, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_for(lambda: not pid_alive(spare), timeout=60, what="the spare that served the run to end with it")
    (after,) = wait_for(lambda: spare_pids(run_dir), timeout=120, what="the next spare")
    assert after != spare


@pytest.mark.parametrize("how", ["--no-reuse", "reuse: false"])
def test_no_spare_driver_without_reuse(ray_head: RayHead, run_dir: Path, tmp_path: Path, how: str) -> None:
    config = _spare_config(tmp_path, ray_head, "    reuse: false\n" if how == "reuse: false" else "")
    flags = [how] if how.startswith("--") else []
    done = run_skyctl("run", f"{T}:add", "-a", "a=1", "-a", "b=1", "-H", "cluster", *flags, "-c", str(config),
                      env={"XDG_RUNTIME_DIR": str(run_dir)}, timeout=300)
    assert (done.returncode, done.stdout) == (0, "2\n"), done.stderr
    # nothing the run started outlives it (a spare would wait for reuse_idle, 60 s)
    wait_for(lambda: not _with_runtime_dir(run_dir), timeout=30, what="the run's processes to end")
    assert not list(run_dir.glob("skyctl/spares/*"))


def test_a_spare_driver_leaves_after_reuse_idle(ray_head: RayHead, run_dir: Path, tmp_path: Path) -> None:
    config = _spare_config(tmp_path, ray_head, "    reuse_idle: 1\n")
    done = run_skyctl("run", f"{T}:add", "-a", "a=1", "-a", "b=2", "-H", "cluster", "-c", str(config),
                      env={"XDG_RUNTIME_DIR": str(run_dir)}, timeout=300)
    assert done.returncode == 0, done.stderr
    (spare,) = wait_for(lambda: spare_pids(run_dir), timeout=120, what="a spare driver listening")
    wait_for(lambda: not pid_alive(spare), timeout=60, what="the idle spare to leave")
    assert not list(run_dir.glob("skyctl/spares/*.sock"))


def test_a_pipe_leaves_a_spare_per_slot_and_takes_them(ray_head: RayHead, run_dir: Path, tmp_path: Path) -> None:
    config = _spare_config(tmp_path, ray_head, "    workers: 2\n")
    env = {"XDG_RUNTIME_DIR": str(run_dir)}
    records = "".join(f"{i}\n" for i in range(20_000))
    first = run_skyctl("pipe", f"{T}:double", "-H", "cluster", "-c", str(config), input=records, env=env, timeout=300)
    assert first.returncode == 0 and sorted(map(int, first.stdout.split())) == list(range(0, 40_000, 2)), first.stderr
    spares = wait_for(lambda: len(spare_pids(run_dir)) == 2 and spare_pids(run_dir), timeout=120,
                      what="two spare drivers listening")
    again = run_skyctl("pipe", f"{T}:double", "-H", "cluster", "-c", str(config), input=records, env=env, timeout=300)
    assert again.returncode == 0 and len(again.stdout.split()) == 20_000, again.stderr
    for pid in spares:  # both slots ran in them: each ended with the pipe
        wait_for(lambda: not pid_alive(pid), timeout=60, what=f"spare {pid} to end with the pipe")
    wait_for(lambda: len(spare_pids(run_dir)) == 2, timeout=120, what="two new spares")
