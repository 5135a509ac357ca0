"""Peak RSS of the skyctl client and of the remote worker while a large input is piped through a slow consumer.

``skyctl pipe benchmarks/targets.py:slow_sink`` reads ``yes <1 KiB line> |
head -c N`` from stdin; the function consumes at most ``mb_per_s`` (so the
producer is always ahead and backpressure has to hold), writes its pid to a
file first and returns its own ``VmHWM`` at the end. Peaks:

- client: ``VmHWM`` from ``/proc/<pid>/status`` of the skyctl process,
  sampled every 0.1 s and once more when its stdout reaches EOF (its last
  output is written). Not ``ru_maxrss`` from ``wait4``: Linux carries the
  parent's RSS from before ``exec`` into it, so it would report the size of
  the process that started skyctl;
- worker: the larger of the ``VmHWM`` it reported and the one sampled from
  ``/proc/<pid>/status`` (pid from the file; the "remote" is this machine).

Usable alone::

    python benchmarks/memory.py --config skyward.yaml --host box --mb 100 --mb 1000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parent.parent
TARGET = "benchmarks/targets.py:slow_sink"


def vmhwm_kb(pid: int) -> int:
    """Peak resident set size of ``pid`` in KiB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _tcp_inodes_to(port: int) -> set[int]:
    """Inodes of established TCP sockets whose remote end is ``port`` (this network namespace)."""
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                inodes.add(int(fields[9]))
    return inodes


def holder_pids(port: int) -> list[int]:
    """skyctl holder processes (kept connections, ``reuse``) with a connection to 127.0.0.1:``port``."""
    inodes = _tcp_inodes_to(port)
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if b"skyctl.holder" not in Path(f"/proc/{name}/cmdline").read_bytes():
                continue
            links = [os.readlink(f"/proc/{name}/fd/{fd}") for fd in os.listdir(f"/proc/{name}/fd")]
        except OSError:
            continue
        if any(link.startswith("socket:[") and int(link[8:-1]) in inodes for link in links):
            found.append(int(name))
    return found


def measure(skyctl: Sequence[str], config: str | os.PathLike[str], host: str, nbytes: int, *, line_len: int = 1024,
            mb_per_s: float = 25.0, cwd: str | os.PathLike[str] = REPO, env: dict[str, str] | None = None,
            timeout: float | None = None, sshd_port: int | None = None) -> dict[str, float]:
    """One run: pipe ``nbytes`` through ``slow_sink`` on ``host``; peaks in MiB, and what was consumed.

    With ``sshd_port``, also the peak of the kept-connection holder connected
    to it (``holder_mb``, 0 when there is none); a holder lives across calls,
    so that is its peak over its whole life so far.
    """
    if timeout is None:
        timeout = 60 + 3 * nbytes / (mb_per_s * 1_000_000)
    with tempfile.TemporaryDirectory(prefix="skyctl-bench-mem-") as tmp:
        pidfile = Path(tmp) / "worker.pid"
        producer = subprocess.Popen(["sh", "-c", f"yes {'x' * (line_len - 1)} | head -c {int(nbytes)}"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        err = tempfile.TemporaryFile()
        argv = [*skyctl, "pipe", TARGET, "-a", f"pidfile={pidfile}", "-a", f"mb_per_s={mb_per_s}",
                "-c", str(config), "-H", host, "-o", "json"]
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=producer.stdout, stdout=subprocess.PIPE, stderr=err, cwd=cwd, env=env,
                                start_new_session=True)
        assert producer.stdout is not None and proc.stdout is not None
        producer.stdout.close()
        peaks = {"client": 0, "worker": 0, "holder": 0}
        done = threading.Event()

        def sample() -> None:
            worker = 0
            holders: list[int] = []
            while not done.is_set():
                peaks["client"] = max(peaks["client"], vmhwm_kb(proc.pid))
                if sshd_port and not holders:
                    holders = holder_pids(sshd_port)
                for pid in holders:
                    peaks["holder"] = max(peaks["holder"], vmhwm_kb(pid))
                if not worker:
                    with contextlib.suppress(OSError, ValueError):
                        worker = int(pidfile.read_text())
                if worker:
                    peaks["worker"] = max(peaks["worker"], vmhwm_kb(worker))
                done.wait(0.1)

        def expire() -> None:
            for p in (producer, proc):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        watchdog = threading.Timer(timeout, expire)
        watchdog.start()
        try:
            out = proc.stdout.read()
            peaks["client"] = max(peaks["client"], vmhwm_kb(proc.pid))  # after its last write, before exit
            proc.wait()
        finally:
            watchdog.cancel()
            done.set()
            sampler.join(5)
            expire()
            producer.wait(timeout=10)
            proc.stdout.close()
        seconds = time.perf_counter() - started
        err.seek(0)
        tail = err.read().decode(errors="replace")[-2000:]
        err.close()
        if proc.returncode != 0:
            raise RuntimeError(f"skyctl pipe (memory, {nbytes} bytes): exit {proc.returncode}\n{tail}")
        try:
            report = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RuntimeError(f"skyctl pipe (memory): unexpected output {out[-200:]!r}\n{tail}") from None
        if report.get("bytes", 0) < nbytes * 0.99:
            raise RuntimeError(f"skyctl pipe (memory): consumed {report.get('bytes')} of {nbytes} bytes\n{tail}")
        client_kb = peaks["client"]
        worker_kb = max(peaks["worker"], int(report.get("vmhwm_kb", 0)))
        return {"client_mb": client_kb / 1024, "worker_mb": worker_kb / 1024, "holder_mb": peaks["holder"] / 1024,
                "seconds": seconds,
                "bytes": report["bytes"], "consumer_seconds": report.get("seconds", 0.0)}


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks.run import skyctl_argv

    parser = argparse.ArgumentParser(description="peak RSS of client and worker while piping a large input")
    parser.add_argument("--config", required=True)
    parser.add_argument("--host", default="local")
    parser.add_argument("--mb", type=float, action="append", help="input size in MB (1e6 bytes); repeatable")
    parser.add_argument("--rate", type=float, default=25.0, help="consumer speed limit, MB/s")
    parser.add_argument("--sshd-port", type=int, default=None, help="also report the holder connected to this port")
    args = parser.parse_args(argv)
    for mb in args.mb or [100.0]:
        result = measure(skyctl_argv(), args.config, args.host, int(mb * 1_000_000), mb_per_s=args.rate,
                         sshd_port=args.sshd_port)
        print(json.dumps({"mb": mb, **{k: round(v, 2) for k, v in result.items()}}), flush=True)


if __name__ == "__main__":
    main()
