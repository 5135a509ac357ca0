"""``skyctl pipe`` memory and backpressure: a large stdin into a slow consumer, on ``local`` and over ssh.

200 MB of 1 KiB lines are written into skyctl's stdin by a thread of this
test while the function first stalls (waits for a file) and then consumes
with a short sleep per batch. While the function stalls, the writer must end
up blocked with only a bounded part of the input taken (a slow consumer
slows the producer); throughout, skyctl's peak RSS (VmHWM from /proc,
sampled) stays under 100 MB. The full 1 GB measurement is
``benchmarks/pipe_memory.py``.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from helpers import start_skyctl, wait_for
from pipetools import PIPES

pytestmark = pytest.mark.timeout(240)

MB = 1 << 20
LINE = b"x" * 1023 + b"\n"
TOTAL = 200 * MB
CHUNK = LINE * (MB // len(LINE))  # whole lines, about 1 MB
LIMIT = 100 * MB


def status_kb(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Writer(threading.Thread):
    """Writes ``TOTAL`` bytes of lines into a pipe; tracks how much went in and since when a write blocks."""

    def __init__(self, fd: int) -> None:
        super().__init__(daemon=True)
        self.fd = fd
        self.written = 0
        self.writing_since: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while self.written < TOTAL:
                view = memoryview(CHUNK)[: TOTAL - self.written]
                while view:
                    self.writing_since = time.monotonic()
                    n = os.write(self.fd, view)
                    self.writing_since = None
                    self.written += n
                    view = view[n:]
        except BaseException as exc:
            self.error = exc
        finally:
            self.writing_since = None
            os.close(self.fd)

    def blocked_for(self) -> float:
        since = self.writing_since
        return time.monotonic() - since if since is not None else 0.0


class PeakRss(threading.Thread):
    """Samples a process's VmHWM (peak RSS) until it is gone."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kb = 0
        self.samples = 0

    def run(self) -> None:
        while True:
            kb = status_kb(self.pid, "VmHWM")
            if kb is None:
                return
            self.peak_kb = max(self.peak_kb, kb)
            self.samples += 1
            time.sleep(0.02)


def test_a_slow_consumer_pauses_stdin_and_client_memory_stays_flat(host_config, tmp_path):
    records = TOTAL // len(LINE)
    err = (tmp_path / "stderr").open("wb")
    proc = start_skyctl(
        "pipe", f"{PIPES}:slow", "-c", str(host_config), "-a", f"marks={tmp_path}",
        "-a", "stall_at=1000", "-a", "every=2000", "-a", "pause=0.005",
        stdin=subprocess.PIPE, stderr=err,
    )
    peak = PeakRss(proc.pid)
    peak.start()
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    reader.start()
    writer = Writer(os.dup(proc.stdin.fileno()))
    proc.stdin.close()
    writer.start()
    try:
        wait_for(lambda: (tmp_path / "stalled").exists() or proc.poll() is not None, 60, "the consumer to stall")
        # Backpressure: with the function stalled, the writer ends up blocked
        # in write() while most of the input is still unread.
        wait_for(lambda: writer.blocked_for() > 2.0 or writer.written >= TOTAL or proc.poll() is not None,
                 120, "the writer to block")
        taken = writer.written
        assert proc.poll() is None, err.name
        assert taken < 40 * MB, f"skyctl took {taken / MB:.0f} MB of stdin while the function was stalled"
        assert status_kb(proc.pid, "VmRSS") * 1024 < LIMIT
        (tmp_path / "go").write_text("go")
        assert proc.wait(timeout=180) == 0, (tmp_path / "stderr").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        err.close()
    writer.join(30)
    reader.join(30)
    peak.join(30)
    print(f"stdin taken while stalled: {taken / MB:.1f} MB; client peak RSS: {peak.peak_kb / 1024:.1f} MB")
    assert writer.error is None and writer.written == TOTAL
    assert out[-1] == b"%d\n" % records
    assert peak.samples > 10
    assert peak.peak_kb * 1024 < LIMIT, f"client peak RSS {peak.peak_kb / 1024:.0f} MB"
