"""Peak RSS of the skyctl client and of the worker while 100 MB and 1 GB are piped into a slow consumer.

``skyctl pipe benchmarks/pipe_memory.py:slow_consumer`` gets ``nbytes`` of
1 KiB lines on stdin, written by a thread of this script as fast as skyctl
takes them. The function consumes them no faster than ``mb_per_s`` (so the
producer is always ahead and only backpressure keeps memory flat), yields the
bytes consumed after every MiB, and finally its own ``VmHWM``. Reported:

- ``client_mb``: peak RSS of the ``skyctl`` process, the largest ``VmHWM``
  sampled from ``/proc/<pid>/status`` every 20 ms (not ``wait4``'s
  ``ru_maxrss``: for the ``local`` host that includes the worker, a child);
- ``worker_mb``: the larger of the worker's own final ``VmHWM`` and the one
  sampled from outside (the "remote" is this machine: ``local`` or the test sshd);
- ``in_flight_mb``: the most stdin bytes ever taken by skyctl but not yet
  consumed by the function (written by the producer minus consumed as last
  reported): what backpressure bounds;
- ``seconds``, ``bytes``.

The main benchmark runner calls ``measure(skyctl_argv, config, host, nbytes)``.
Alone::

    python benchmarks/pipe_memory.py                 # local host, 100 MB and 1 GB
    python benchmarks/pipe_memory.py --ssh           # through a test sshd on 127.0.0.1 (tests/sshd.py)
    python benchmarks/pipe_memory.py --config skyward.yaml --host gpu-1 --mb 100 --mb 1000

Alone, it first makes one short unmeasured run, so that every measured run is
warm as in the runner: the first call after the bundle changed also uploads it,
and the bootstrap stub's sha256 check loads OpenSSL's libcrypto into the worker
(~3 MiB more resident, once).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parent.parent
TARGET = "benchmarks/pipe_memory.py:slow_consumer"
MIB = 1 << 20


# -- the function shipped to the host (travels by value; stdlib only) --------------------
def slow_consumer(data: Iterator[bytes], mb_per_s: float = 25.0, pidfile: str = "") -> Iterator[Any]:
    """Consume stdin at most ``mb_per_s`` MB/s; yield bytes consumed every MiB, then ``{"bytes", "vmhwm_kb"}``."""
    if pidfile:
        with open(pidfile + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(pidfile + ".tmp", pidfile)
    rate = mb_per_s * 1_000_000
    started = time.monotonic()
    consumed = 0
    next_report = MIB
    for line in data:
        consumed += len(line) + 1
        if consumed >= next_report:
            next_report += MIB
            ahead = consumed / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
            yield consumed
    yield {"bytes": consumed, "vmhwm_kb": _vmhwm_kb(os.getpid()), "seconds": round(time.monotonic() - started, 3)}


def _vmhwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


# -- one measurement ------------------------------------------------------------------------
def measure(skyctl: list[str], config: str | os.PathLike[str] | None, host: str | None, nbytes: int, *,
            mb_per_s: float = 25.0, line_len: int = 1024, env: dict[str, str] | None = None,
            timeout: float | None = None) -> dict[str, float]:
    """Pipe ``nbytes`` into ``slow_consumer`` on ``host``; peaks in MiB (see the module docstring)."""
    if timeout is None:
        timeout = 120 + 3 * nbytes / (mb_per_s * 1_000_000)
    line = b"x" * (line_len - 1) + b"\n"
    chunk = line * max(1, MIB // len(line))
    with tempfile.TemporaryDirectory(prefix="skyctl-pipe-memory-") as tmp:
        pidfile = Path(tmp) / "worker.pid"
        argv = [*skyctl, "pipe", TARGET, "-a", f"mb_per_s={mb_per_s}", "-a", f"pidfile={pidfile}", "-o", "json", "-q"]
        argv += ["-c", str(config)] if config else []
        argv += ["-H", host] if host else []
        err = tempfile.TemporaryFile()
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=REPO,
                                env=env, start_new_session=True)
        assert proc.stdin is not None and proc.stdout is not None
        state = {"written": 0, "consumed": 0, "in_flight": 0, "client_kb": 0, "worker_kb": 0, "final": None}
        done = threading.Event()

        def produce() -> None:
            fd = proc.stdin.fileno()  # type: ignore[union-attr]
            try:
                while state["written"] < nbytes:
                    view = memoryview(chunk)[: nbytes - state["written"]]
                    while view:
                        n = os.write(fd, view)
                        state["written"] += n
                        view = view[n:]
                        state["in_flight"] = max(state["in_flight"], state["written"] - state["consumed"])
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    proc.stdin.close()  # type: ignore[union-attr]

        def sample() -> None:
            worker = 0
            while not done.is_set():
                state["client_kb"] = max(state["client_kb"], _vmhwm_kb(proc.pid))
                if not worker:
                    with contextlib.suppress(OSError, ValueError):
                        worker = int(pidfile.read_text())
                if worker:
                    state["worker_kb"] = max(state["worker_kb"], _vmhwm_kb(worker))
                done.wait(0.02)

        def expire() -> None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

        threads = [threading.Thread(target=f, daemon=True) for f in (produce, sample)]
        for t in threads:
            t.start()
        watchdog = threading.Timer(timeout, expire)
        watchdog.start()
        try:
            for raw in proc.stdout:
                value = json.loads(raw)
                if isinstance(value, int):
                    state["consumed"] = value
                else:
                    state["final"] = value
            proc.wait()
        finally:
            watchdog.cancel()
            done.set()
            for t in threads:
                t.join(10)
            expire()
            proc.stdout.close()
        seconds = time.perf_counter() - started
        err.seek(0)
        tail = err.read().decode(errors="replace")[-2000:]
        err.close()
    final = state["final"]
    if proc.returncode != 0 or not final:
        raise RuntimeError(f"skyctl pipe ({nbytes} bytes): exit {proc.returncode}\n{tail}")
    if final["bytes"] != nbytes + (1 if nbytes % line_len else 0):  # a final line without newline counts one
        raise RuntimeError(f"skyctl pipe: the function consumed {final['bytes']} of {nbytes} bytes\n{tail}")
    return {
        "client_mb": state["client_kb"] / 1024,
        "worker_mb": max(state["worker_kb"], final["vmhwm_kb"]) / 1024,
        "in_flight_mb": state["in_flight"] / MIB,
        "seconds": seconds,
        "bytes": final["bytes"],
    }


def skyctl_argv() -> list[str]:
    """The ``skyctl`` console script beside this interpreter, else on PATH, else ``-c``."""
    beside = Path(sys.executable).parent / "skyctl"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("skyctl")
    return [found] if found else [sys.executable, "-c", "from skyctl.cli import main; main()"]


@contextlib.contextmanager
def _sshd_config() -> Iterator[tuple[Path, str]]:
    """A config whose host ``box`` is a fresh test sshd on 127.0.0.1 (stopped afterwards)."""
    sys.path.insert(0, str(REPO / "tests"))
    from helpers import write_config  # type: ignore[import-not-found]
    from sshd import start_sshd  # type: ignore[import-not-found]

    with tempfile.TemporaryDirectory(prefix="skyctl-pipe-memory-sshd-") as tmp:
        server = start_sshd(Path(tmp))
        try:
            yield write_config(Path(tmp) / "skyward.yaml", server, default="box"), "box"
        finally:
            server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="peak RSS of the skyctl client and worker while piping a large input")
    parser.add_argument("--config", help="skyward.yaml (default: the usual lookup; in this repo, the local host)")
    parser.add_argument("--host", help="host profile (default: the config's default)")
    parser.add_argument("--ssh", action="store_true", help="use a test sshd on 127.0.0.1 (tests/sshd.py)")
    parser.add_argument("--mb", type=float, action="append", help="input size in MB (1e6 bytes); repeatable; default 100 and 1000")
    parser.add_argument("--rate", type=float, default=25.0, help="the consumer's limit, MB/s (default 25)")
    args = parser.parse_args(argv)
    sizes = args.mb or [100.0, 1000.0]
    with contextlib.ExitStack() as stack:
        config, host = args.config, args.host
        if args.ssh:
            config, host = stack.enter_context(_sshd_config())
        where = host or "default host"
        measure(skyctl_argv(), config, host, 1_000_000, mb_per_s=args.rate)  # warm-up, not reported
        for mb in sizes:
            r = measure(skyctl_argv(), config, host, int(mb * 1_000_000), mb_per_s=args.rate)
            print(f"{mb:>6g} MB via {where}: client peak RSS {r['client_mb']:.1f} MiB, worker peak RSS {r['worker_mb']:.1f} MiB, "
                  f"at most {r['in_flight_mb']:.1f} MiB in flight, {r['seconds']:.1f} s", flush=True)
            print(json.dumps({"mb": mb, "host": where, **{k: round(v, 2) for k, v in r.items()}}), flush=True)


if __name__ == "__main__":
    main()
