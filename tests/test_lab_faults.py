"""Network faults against real hosts with networks of their own (the fault lab, ``tests/lab.py``; issue 23).

Each lab host is a network namespace with its own address, link and sshd;
the real ``skyctl`` runs here and reaches them over a bridge. A partition is
the host's link going down mid-call: no RST, no ICMP, the connection just
goes silent, as when a switch or a VPN dies. The profiles use short
keepalives (``keepalive: 1``, ``keepalive_count: 2``) so that every bound
is a few seconds; ``connect_timeout: 8`` (also the bootstrap deadline) leaves
room for a loaded machine starting four Pythons at once.

Bounds: a fault must be noticed within ``keepalive × keepalive_count`` (the
client's keepalives, which must be answered). ``NOTICE_SLACK`` is added to
each bound: one more keepalive interval (the first unanswered keepalive may
go out up to one interval after the cut) and room for a busy CI machine. The
tests wait for events (marker files, lines on stderr, processes gone), never
on sleeps; every wait has a deadline.

Under ``CI`` these tests fail when the lab cannot start; elsewhere they skip
with the reason (not root, no ``ip``/``tc``).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from helpers import REPO, clean_env, holder_pid, skyctl_argv, wait_for
from lab import Lab, LabUnavailable, lab_available, start_lab

pytestmark = pytest.mark.timeout(180)

T = "tests/targets/lab_targets.py"
KEEPALIVE = 1.0
KEEPALIVE_COUNT = 2
CONNECT_TIMEOUT = 8.0  # also the bootstrap deadline: a loaded CI machine starts four Pythons at once
#: one more keepalive interval, and room for a loaded machine (see the module docstring)
NOTICE_SLACK = KEEPALIVE + 4.0
#: the bound on noticing a partition, as the docs state it (plus the slack)
NOTICE_BOUND = KEEPALIVE * KEEPALIVE_COUNT + NOTICE_SLACK
PROFILE = f"keepalive: {KEEPALIVE:g}\nkeepalive_count: {KEEPALIVE_COUNT}\nconnect_timeout: {CONNECT_TIMEOUT:g}"
#: a hang guard only
DEADLINE = 90.0


# -- fixtures -------------------------------------------------------------------------------


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"the fault lab is required when CI is set: {reason}", pytrace=False)
    pytest.skip(f"no fault lab: {reason}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Four lab hosts ``lab0``…``lab3``, for the whole module; every fault is undone after each test."""
    reason = lab_available()
    if reason:
        _unavailable(reason)
    try:
        started = start_lab(4)
    except LabUnavailable as exc:
        _unavailable(str(exc))
        raise
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(autouse=True)
def _healed(lab: Lab) -> Iterator[None]:
    yield
    lab.reset()




# -- helpers ----------------------------------------------------------------------------------




def write_config(lab: Lab, path: Path, extra: str = "") -> Path:
    path.write_text(lab.config_yaml(extra=f"{PROFILE}\n{extra}"))
    return path


def start(run_dir: Path, *args: str, stdin: int | None = None) -> subprocess.Popen[bytes]:
    env = clean_env({"XDG_RUNTIME_DIR": str(run_dir)})
    env.pop("SSH_AUTH_SOCK", None)
    return subprocess.Popen(skyctl_argv(*args), cwd=REPO, env=env, stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


class Stderr:
    """Reads a process's stderr as it comes, noting when each line arrived."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.lines: list[tuple[float, str]] = []
        self._buf = b""

    def poll(self, timeout: float = 0.05) -> None:
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while select.select([fd], [], [], timeout)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            self._buf += chunk
            *done, self._buf = self._buf.split(b"\n")
            now = time.monotonic()
            self.lines += [(now, line.decode(errors="replace")) for line in done]
            timeout = 0

    def wait_line(self, pattern: str, timeout: float = DEADLINE) -> float:
        """When the first line matching ``pattern`` arrived (waiting for it up to ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            for at, line in self.lines:
                if re.search(pattern, line):
                    return at
            if time.monotonic() > deadline or (self.proc.poll() is not None and not self.more()):
                raise AssertionError(f"no stderr line matching {pattern!r}: {self.text()}")
            self.poll(0.1)

    def more(self) -> bool:
        before = len(self.lines)
        self.poll(0)
        return len(self.lines) > before

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def finish(proc: subprocess.Popen[bytes], err: Stderr, timeout: float = DEADLINE) -> tuple[str, str]:
    """Wait for ``proc`` (stdout drained alongside stderr); its stdout and whole stderr."""
    assert proc.stdout is not None
    out = b""
    deadline = time.monotonic() + timeout
    fds = [proc.stdout.fileno()]
    while fds:
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"skyctl did not finish within {timeout}s: {err.text()}")
        ready = select.select(fds, [], [], 0.05)[0]
        if ready:
            chunk = os.read(fds[0], 1 << 20)
            if chunk:
                out += chunk
            else:
                fds = []
        err.poll(0)
    proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    err.poll(0)
    while err.more():
        pass
    return out.decode(), err.text()


def numbers(n: int) -> bytes:
    return "".join(f"{i}\n" for i in range(1, n + 1)).encode()


def summary(stderr: str, host: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith(f"{host}: ")]
    assert lines, f"no summary line for {host}: {stderr}"
    return lines[-1]


def host_index(name: str) -> int:
    return int(name.removeprefix("lab"))


# -- a) distributed pipe, one host cut off mid-chunk --------------------------------------------


def test_a_host_cut_off_mid_chunk_is_noticed_and_its_chunk_runs_elsewhere_once(
        lab: Lab, run_dir: Path, tmp_path: Path) -> None:
    cfg = write_config(lab, tmp_path / "skyward.yaml")
    n, gate_at = 6000, 3150
    proc = start(run_dir, "pipe", f"{T}:double_with_gate", "-a", f"gate_at={gate_at}", "-a", f"workdir={tmp_path}",
                 "-H", "lab", "--chunk", "200", "-c", str(cfg), stdin=subprocess.PIPE)
    err = Stderr(proc)
    try:
        assert proc.stdin is not None
        proc.stdin.write(numbers(n))  # 30 KB: within the pipe's buffer
        proc.stdin.close()
        proc.stdin = None
        marker = wait_for(lambda: list(tmp_path.glob("at-*")), timeout=DEADLINE, what="a worker mid-chunk")[0]
        victim = marker.read_text()
        lab.partition(host_index(victim))
        cut_at = time.monotonic()
        (tmp_path / "gate").write_text("open")  # the chunk's re-run must pass the record too
        noticed_at = err.wait_line(rf"^warning: {victim}: exit 6")
        out, stderr = finish(proc, err)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert noticed_at - cut_at <= NOTICE_BOUND, (noticed_at - cut_at, stderr)
    assert proc.returncode == 0, stderr
    assert sorted(int(v) for v in out.split()) == [2 * i for i in range(1, n + 1)]  # each value exactly once
    warning = next(line for line in stderr.splitlines() if line.startswith(f"warning: {victim}:"))
    assert "runs again on another worker" in warning and "keepalives" in warning, warning
    assert summary(stderr, victim).startswith(f"{victim}: exit 6")
    assert sum(int(re.search(r"(\d+) re-runs?\b", summary(stderr, h.name)).group(1)) for h in lab.hosts) >= 1


# -- b) broadcast run, one host cut off; c) nothing of the call is left on it -------------------


@dataclass
class Broadcast:
    out: str
    stderr: str
    returncode: int
    cut_at: float
    ended_at: float
    #: the processes in the cut-off host's namespace just before the cut
    at_cut: dict[int, str]


def _broadcast_with_one_host_cut(lab: Lab, run_dir: Path, tmp_path: Path, *target: str) -> Broadcast:
    """Broadcast ``target`` over the lab, cut ``lab2`` once every host has started, let the others finish."""
    cfg = write_config(lab, tmp_path / "skyward.yaml")
    victim = "lab2"
    proc = start(run_dir, "run", f"{T}:{target[0]}", *target[1:], "-a", f"workdir={tmp_path}", "-H", "lab",
                 "-c", str(cfg))
    err = Stderr(proc)
    try:
        wait_for(lambda: len(list(tmp_path.glob("started-*"))) == len(lab.hosts), timeout=DEADLINE,
                 what="every host's function to start")
        at_cut = lab.processes(host_index(victim))
        lab.partition(host_index(victim))
        cut_at = time.monotonic()
        (tmp_path / "gate").write_text("open")
        out, stderr = finish(proc, err)
        ended_at = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
    return Broadcast(out, stderr, proc.returncode, cut_at, ended_at, at_cut)


def test_broadcast_with_a_host_cut_off_gives_it_exit_6_and_the_others_complete(
        lab: Lab, run_dir: Path, tmp_path: Path) -> None:
    done = _broadcast_with_one_host_cut(lab, run_dir, tmp_path, "sleeper_with_gate")
    out, stderr = done.out, done.stderr
    assert done.returncode == 6, stderr
    assert done.ended_at - done.cut_at <= NOTICE_BOUND, (done.ended_at - done.cut_at, stderr)
    line = summary(stderr, "lab2")
    assert line.startswith("lab2: exit 6") and "keepalives" in line, line
    for host in ("lab0", "lab1", "lab3"):
        assert f"{host}\tstarted {host}" in out and f"{host}\tdone {host}" in out, out
        assert summary(stderr, host).startswith(f"{host}: ok"), stderr
    assert "lab2\tdone" not in out


#: how long anything of the call may stay on the cut-off host: the worker's bound on its client's silence
#: (``keepalive × keepalive_count``), then up to 5 s for it to end the call and exit (docs/protocol.md,
#: *Liveness*), plus the slack
LEFTOVER_BOUND = KEEPALIVE * KEEPALIVE_COUNT + 5.0 + NOTICE_SLACK


def _left_on_a_cut_off_host(lab: Lab, run_dir: Path, tmp_path: Path, sshd_too: bool) -> None:
    """Broadcast with ``lab2`` cut off while its function is busy (with a child process of its own); with the
    link still down, wait up to ``LEFTOVER_BOUND`` from the cut for the call's processes there to be gone."""
    victim = host_index("lab2")
    done = _broadcast_with_one_host_cut(lab, run_dir, tmp_path, "busy_with_child", "-a", "busy_on=lab2")
    assert done.returncode == 6, done.stderr
    assert any("sleep 600" in cmd for cmd in done.at_cut.values()), f"the function's child ran at the cut: {done.at_cut}"
    assert any("sshd" in cmd for cmd in done.at_cut.values()), f"so did the call's sshd session: {done.at_cut}"

    def left() -> dict[int, str]:
        return {pid: cmd for pid, cmd in lab.processes(victim).items() if sshd_too or "sshd" not in cmd}

    deadline = done.cut_at + LEFTOVER_BOUND
    while left() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert lab.hosts[victim].partitioned, "the link stayed down all along"
    assert not left(), (f"still on the cut-off host {time.monotonic() - done.cut_at:.1f}s after the cut "
                        f"(bound {LEFTOVER_BOUND:g}s): {left()}")


def test_the_worker_and_the_functions_processes_end_on_a_cut_off_host(lab: Lab, run_dir: Path, tmp_path: Path) -> None:
    """With the link still down, the worker (its function busy, with a child process) notices its client's
    silence by itself and ends the call, the child and itself within the stated bound.

    Without the worker-side heartbeat (before protocol v2) both stayed for good.
    """
    _left_on_a_cut_off_host(lab, run_dir, tmp_path, sshd_too=False)


def test_nothing_of_the_call_is_left_on_a_cut_off_host(lab: Lab, run_dir: Path, tmp_path: Path) -> None:
    """The same, and the sshd session that served the call is gone too: nothing of the call is left.

    Measured with branch proto's heartbeats: the worker and the child go within the bound, the
    ``sshd: user@notty`` session stays. When its worker exits, the session's last packets (exit
    status, channel close) stay unacknowledged behind the cut, so sshd waits on TCP retransmission
    (``tcp_retries2`` = 15: about 15 minutes), and on its own ``ClientAlive*`` settings (off by
    default), not on skyctl.
    """
    _left_on_a_cut_off_host(lab, run_dir, tmp_path, sshd_too=True)


# -- d) a partition during the bundle upload ------------------------------------------------------


def _sent_bytes(lab: Lab, i: int) -> int:
    """Bytes sent towards host ``i`` through its link's qdisc so far."""
    out = subprocess.run(["tc", "-s", "qdisc", "show", "dev", lab.hosts[i].netns], capture_output=True, text=True).stdout
    match = re.search(r"Sent (\d+) bytes", out)
    return int(match.group(1)) if match else 0


def test_a_partition_during_the_bundle_upload_fails_fast_and_the_next_call_works(
        lab: Lab, run_dir: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote-workdir"  # fresh: the bundle must be uploaded
    cfg = write_config(lab, tmp_path / "skyward.yaml", f"workdir: {remote}")
    lab.rate(1, "200kbit")  # the bundle (~100 KB and up) takes seconds
    base = _sent_bytes(lab, 1)
    proc = start(run_dir, "run", f"{T}:where", "-H", "lab1", "-c", str(cfg))
    err = Stderr(proc)
    try:
        wait_for(lambda: _sent_bytes(lab, 1) - base > 40_000, timeout=DEADLINE, what="the upload to be under way")
        assert not list(remote.glob("bundle-*.zip")), "the upload was still going on at the cut"
        lab.partition(1)
        cut_at = time.monotonic()
        out, stderr = finish(proc, err)
        ended_at = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
    # exit 4 (nothing of the call ran), saying what happened, not "did not start: exit status -1"
    assert proc.returncode == 4, stderr
    assert ended_at - cut_at <= max(CONNECT_TIMEOUT, KEEPALIVE * KEEPALIVE_COUNT) + NOTICE_SLACK, (ended_at - cut_at, stderr)
    [error] = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert "lost the connection to 'lab1'" in error and "keepalives" in error and "while starting the worker" in error
    assert "Traceback" not in stderr and "hint: " in stderr, stderr
    assert not list(remote.glob("bundle-*.zip")), "no partial bundle was left where the cache looks"
    lab.heal(1)
    lab.unrate(1)
    again = start(run_dir, "run", f"{T}:where", "-H", "lab1", "-c", str(cfg))
    out, stderr = finish(again, Stderr(again), timeout=DEADLINE)
    assert again.returncode == 0, stderr
    assert out.strip() == "lab1"
    assert len(list(remote.glob("bundle-*.zip"))) == 1


# -- e) a host on a slow link takes fewer chunks -------------------------------------------------


def test_a_host_on_a_1_mbit_link_takes_fewer_chunks(lab: Lab, run_dir: Path, tmp_path: Path) -> None:
    cfg = write_config(lab, tmp_path / "skyward.yaml")
    lab.rate(3, "1mbit")
    records = b"".join(b"%05d" % i + b"x" * 995 + b"\n" for i in range(3000))  # 3 MB in 1 KB records
    proc = start(run_dir, "pipe", f"{T}:where_each", "-H", "lab", "--chunk", "50", "-c", str(cfg),
                 stdin=subprocess.PIPE)
    err = Stderr(proc)
    try:
        assert proc.stdin is not None

        def feed() -> None:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(records)
                proc.stdin.close()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        out, stderr = finish(proc, err)
        feeder.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    taken = {h.name: 0 for h in lab.hosts}
    for line in out.splitlines():
        taken[line.split()[0]] += 1
    assert sum(taken.values()) == 3000
    chunks = {h.name: int(re.search(r"(\d+) chunks?\b", summary(stderr, h.name)).group(1)) for h in lab.hosts}
    fast = [chunks[name] for name in ("lab0", "lab1", "lab2")]
    assert chunks["lab3"] < max(fast), (chunks, stderr)
    assert taken["lab3"] < max(taken[name] for name in ("lab0", "lab1", "lab2")), taken


# -- f) a kept connection whose host was cut off and healed ---------------------------------------


def test_a_kept_connection_through_a_partition_and_heal_needs_no_manual_step(
        lab: Lab, run_dir: Path, tmp_path: Path) -> None:
    cfg = write_config(lab, tmp_path / "skyward.yaml", "reuse: true")

    def call(bound: float) -> tuple[int, str, str, float]:
        started = time.monotonic()
        proc = start(run_dir, "run", f"{T}:where", "-H", "lab0", "-c", str(cfg))
        out, stderr = finish(proc, Stderr(proc), timeout=DEADLINE)
        elapsed = time.monotonic() - started
        assert elapsed <= bound, f"the call took {elapsed:.1f}s (bound {bound:g}s): {stderr}"
        return proc.returncode, out, stderr, elapsed

    code, out, stderr, _ = call(DEADLINE)
    assert code == 0 and out.strip() == "lab0", stderr
    wait_for(lambda: [p for p in map(holder_pid, (run_dir / "skyctl").glob("*.pid")) if p],
             what="a holder keeping the connection")
    lab.partition(0)
    # during the partition: a call fails within its bounds (the kept connection answers no round trip,
    # a direct connection times out), it never hangs
    code, out, stderr, _ = call(CONNECT_TIMEOUT + KEEPALIVE * KEEPALIVE_COUNT + 2 * NOTICE_SLACK)
    assert code in (4, 6), stderr
    assert "Traceback" not in stderr, stderr
    lab.heal(0)
    # after the heal: the next call works, with no manual step (no `skyctl` stop, no socket to remove)
    code, out, stderr, _ = call(CONNECT_TIMEOUT + KEEPALIVE * KEEPALIVE_COUNT + 2 * NOTICE_SLACK)
    assert code == 0 and out.strip() == "lab0", stderr
    # and the one after that is served by a kept connection again
    code, out, stderr, _ = call(DEADLINE)
    assert code == 0 and "warning" not in stderr, stderr
    assert [p for p in map(holder_pid, (run_dir / "skyctl").glob("*.pid")) if p]


def test_a_kept_connection_cut_briefly_mid_idle_serves_the_next_call(lab: Lab, run_dir: Path, tmp_path: Path) -> None:
    """A cut shorter than the keepalive bound: the kept connection survives it, the next call just works."""
    cfg = write_config(lab, tmp_path / "skyward.yaml", "reuse: true")
    first = start(run_dir, "run", f"{T}:where", "-H", "lab0", "-c", str(cfg))
    out, stderr = finish(first, Stderr(first))
    assert first.returncode == 0, stderr
    lab.partition(0)
    lab.heal(0)
    second = start(run_dir, "run", f"{T}:where", "-H", "lab0", "-c", str(cfg))
    out, stderr = finish(second, Stderr(second), timeout=CONNECT_TIMEOUT + NOTICE_BOUND)
    assert second.returncode == 0 and out.strip() == "lab0", stderr
