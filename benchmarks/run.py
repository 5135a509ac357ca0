#!/usr/bin/env python3
"""skyctl benchmarks: each measurement against a baseline in the same run.

    python benchmarks/run.py                 # everything, 5 runs each; writes docs/benchmarks.md
    python benchmarks/run.py --quick         # smaller inputs, 3 runs; prints only
    python benchmarks/run.py --only warm,pipe --repeat 9
    python benchmarks/run.py --quick --only command   # type: command via the OpenSSH client vs the built-in SSH

Starts its own OpenSSH sshd on 127.0.0.1 (``tests/sshd.py``), writes a
``skyward.yaml`` for it (remote python ``/usr/bin/python3``, a workdir of its
own), and runs the real ``skyctl`` console script in subprocesses. skyctl and
its baseline are interleaved run by run, so load from other processes hits
both alike; absolute times are noise, the ratios are the point.

Progress goes to stderr; the finished report (markdown) to stdout and, for a
full run (or with ``--out``), to ``docs/benchmarks.md``. Exit status 0 when
every measurement ran (whether or not it met its target), 1 when one failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import queue
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import load, machine  # noqa: E402
from benchmarks.proxy import start_proxy  # noqa: E402
from benchmarks.timing import BenchError, Run, drain, first_line, median, read_line  # noqa: E402

#: the remote interpreter, for skyctl's profile and for every ssh baseline
REMOTE_PY = "/usr/bin/python3"
TARGETS = "benchmarks/targets.py"
#: in the order of the report
MEASUREMENTS = ("warm", "cold", "output", "pipe", "roundtrip", "memory", "latency", "local", "many", "joblog", "command",
                "ray", "chunks")
#: in the order they run: the long memory runs last
RUN_ORDER = ("warm", "cold", "output", "pipe", "roundtrip", "latency", "local", "many", "joblog", "chunks", "command", "ray",
             "memory")
#: the delay proxy: 25 ms each way
ONE_WAY_DELAY = 0.025

COPY_LINES = "import sys\nfor line in sys.stdin:\n    sys.stdout.write(line)"
DICT_LINES = ("import json\nfor i in range({n}):\n"
              "    print(json.dumps({{'step': i, 'loss': 1.0 / (i + 1), 'tag': 'train'}}))")
ECHO_LINES = ("import sys\nr, w = sys.stdin.buffer, sys.stdout.buffer\n"
              "for line in iter(r.readline, b''):\n    w.write(line)\n    w.flush()")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def skyctl_argv() -> list[str]:
    """The real ``skyctl`` console script next to this interpreter (not a pyenv shim), else PATH's, else -c."""
    import sysconfig

    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        beside = Path(folder) / "skyctl"
        if beside.is_file() and os.access(beside, os.X_OK):
            return [str(beside)]
    found = shutil.which("skyctl")
    if found:
        return [found]
    return [sys.executable, "-c", "from skyctl.cli import main; main()"]


# --------------------------------------------------------------------------
# results


@dataclass
class Row:
    """One line of the report: skyctl's samples against a baseline's."""

    key: str
    metric: str
    #: "s" (shown in ms), "lines/s" or "MiB"
    unit: str
    skyctl: list[float]
    baseline: list[float]
    baseline_label: str
    #: "lower" or "higher" is better
    better: str = "lower"
    #: the ratio skyctl/baseline must be <= (lower) or >= (higher) this; None: informational
    target: float | None = None
    #: an absolute bound on skyctl's median too (same unit)
    limit: float | None = None
    error: str = ""

    @property
    def sky_median(self) -> float:
        return median(self.skyctl)

    @property
    def base_median(self) -> float:
        return median(self.baseline)

    @property
    def ratio(self) -> float:
        b = self.base_median
        return self.sky_median / b if b and not math.isnan(b) else float("nan")

    @property
    def sky_worst(self) -> float:
        """skyctl's worst run: the slowest time or largest memory, the lowest rate."""
        return max(self.skyctl) if self.better == "lower" else min(self.skyctl)

    @property
    def worst_ratio(self) -> float:
        """skyctl's worst run against the baseline's median: what the verdict is judged on."""
        b = self.base_median
        return self.sky_worst / b if b and not math.isnan(b) else float("nan")

    @property
    def verdict(self) -> str:
        if self.error:
            return "error"
        if self.target is None:
            return "info"
        r = self.worst_ratio
        ok = r <= self.target if self.better == "lower" else r >= self.target
        if self.limit is not None:
            ok = ok and self.sky_worst <= self.limit
        return "pass" if ok else "**FAIL**"

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "—"
        text = f"{'≤' if self.better == 'lower' else '≥'} {self.target:g}"
        if self.limit is not None:
            text = f"≤ {fmt(self.limit, self.unit)} and ratio {text}"
        return text


def fmt(value: float, unit: str) -> str:
    if value is None or math.isnan(value):
        return "—"
    if unit == "s":
        ms = value * 1000
        return f"{ms:.2f} ms" if ms < 10 else f"{ms:.0f} ms"
    if unit == "lines/s":
        if value >= 1e5:
            return f"{value / 1e6:.2f} M lines/s"
        return f"{value / 1e3:.2f} k lines/s" if value >= 1e3 else f"{value:.0f} lines/s"
    if unit == "MiB":
        return f"{value:.0f} MiB"
    return f"{value:.3g} {unit}"


def interleave(repeat: int, runs: dict[str, Callable[[], Any]]) -> dict[str, list[Any]]:
    """``repeat`` rounds, each running every callable once; the order rotates from round to round."""
    names = list(runs)
    out: dict[str, list[Any]] = {name: [] for name in names}
    for i in range(repeat):
        for name in names[i % len(names):] + names[: i % len(names)]:
            out[name].append(runs[name]())
    return out


# --------------------------------------------------------------------------
# the bench: sshd, configs, argv builders


@dataclass
class Bench:
    args: argparse.Namespace
    root: Path
    server: Any
    config: Path
    skyctl: list[str]
    env: dict[str, str]
    rows: list[Row] = field(default_factory=list)
    baselines: dict[str, str] = field(default_factory=dict)

    @property
    def repeat(self) -> int:
        return self.args.repeat

    @property
    def remote_workdir(self) -> str:
        return str(self.root / "remote-workdir")

    def sky(self, *args: str, config: Path | None = None) -> list[str]:
        return [*self.skyctl, *args, "-c", str(config or self.config)]

    def ssh(self, *cmd: str, server: Any = None) -> list[str]:
        return (server or self.server).ssh_argv(*cmd)

    def write_config(self, name: str, server: Any = None, workdir: str | None = None) -> Path:
        from tests.helpers import ssh_host_yaml

        path = self.root / name
        workdir_key = f"workdir: {workdir or self.remote_workdir}"
        path.write_text("default: box\nhosts:\n  local:\n    type: local\n"
                        + ssh_host_yaml(server or self.server, python=REMOTE_PY, extra=workdir_key)
                        # the same machine without the kept connection: the client holds the SSH connection itself
                        + ssh_host_yaml(server or self.server, name="box-direct", python=REMOTE_PY,
                                        extra=f"{workdir_key}\nreuse: false"))
        return path

    def run_kw(self, timeout: float = 120.0) -> dict[str, Any]:
        return {"cwd": REPO, "env": self.env, "timeout": timeout}

    def add(self, row: Row) -> None:
        self.rows.append(row)
        log(f"  {row.metric}: skyctl {fmt(row.sky_median, row.unit)}, baseline {fmt(row.base_median, row.unit)}, "
            f"ratio {row.ratio:.2f}, worst run {row.worst_ratio:.2f} (target {row.target_text}) {row.verdict}")


# --------------------------------------------------------------------------
# the measurements


def m_warm(b: Bench) -> None:
    """1. warm time to first value over SSH vs ``ssh host python3 -c 'print(1)'``."""
    sky = b.sky("run", f"{TARGETS}:one", "-H", "box")
    sky_noreuse = [*sky, "--no-reuse"]
    ssh = b.ssh(REMOTE_PY, "-c", "print(1)")
    for argv in (sky, sky_noreuse, ssh):  # warm-up: bundle in place, kept connection up, caches hot
        first_line(argv, **b.run_kw())
    got = interleave(b.repeat, {
        "sky": lambda: first_line(sky, **b.run_kw()),
        "noreuse": lambda: first_line(sky_noreuse, **b.run_kw()),
        "ssh": lambda: first_line(ssh, **b.run_kw()),
    })
    b.baselines["ssh print(1)"] = f"`ssh … {REMOTE_PY} -c 'print(1)'` (OpenSSH client, new connection each run)"
    b.add(Row("warm", "1. warm time to first value, `skyctl run` over SSH (default: reuse on)", "s",
              got["sky"], got["ssh"], "ssh print(1)", "lower", 0.5))
    b.add(Row("warm", "1b. the same with `--no-reuse` (informational)", "s",
              got["noreuse"], got["ssh"], "ssh print(1)", "lower", None))


def m_cold(b: Bench) -> None:
    """2. cold (a fresh, empty remote workdir per run) vs warm."""
    one = ("run", f"{TARGETS}:one", "-H", "box")
    warm = b.sky(*one)
    warm_noreuse = [*warm, "--no-reuse"]
    for argv in (warm, warm_noreuse):
        first_line(argv, **b.run_kw())
    fresh = iter(range(1_000_000))

    def cold(*extra: str) -> float:
        i = next(fresh)
        config = b.write_config(f"cold-{i}.yaml", workdir=str(b.root / f"cold-workdir-{i}"))
        return first_line([*b.sky(*one, config=config), *extra], **b.run_kw())

    def warmed(argv: list[str]) -> float:
        # An unmeasured call first, so "warm" is warm whatever the cold call before did: the bundle is in
        # place and (with reuse) the kept connection has a spare worker waiting.
        first_line(argv, **b.run_kw())
        return first_line(argv, **b.run_kw())

    got = interleave(b.repeat, {
        "cold": lambda: cold(),
        "warm": lambda: warmed(warm),
        "cold_noreuse": lambda: cold("--no-reuse"),
        "warm_noreuse": lambda: warmed(warm_noreuse),
    })
    b.baselines["warm"] = "warm `skyctl run` (bundle already in the workdir, one unmeasured call just before), same run"
    b.baselines["warm, --no-reuse"] = "the same warm call with `--no-reuse`"
    b.add(Row("cold", "2. cold time to first value (empty remote workdir) vs warm", "s",
              got["cold"], got["warm"], "warm", "lower", 1.5))
    b.add(Row("cold", "2b. the same, both with `--no-reuse` (informational)", "s",
              got["cold_noreuse"], got["warm_noreuse"], "warm, --no-reuse", "lower", None))


def _rate_rows(b: Bench, runs: dict[str, tuple[list[str], Any]], n: int, busy: bool) -> dict[str, list[Any]]:
    """``drain`` each argv (``name: (argv, stdin)``) ``b.repeat`` times, interleaved, after one warm-up
    each; with ``busy``, everything (warm-up included) runs beside one CPU-bound process per core."""
    with load.busy(busy):
        for argv, stdin in runs.values():
            drain(argv, stdin=stdin, expect_lines=n, **b.run_kw())
        return interleave(b.repeat, {
            name: (lambda argv=argv, stdin=stdin: drain(argv, stdin=stdin, expect_lines=n, **b.run_kw()))
            for name, (argv, stdin) in runs.items()
        })


def _busy_label(busy: bool) -> str:
    return f", busy ({load.cores()} CPU-bound processes)" if busy else ", idle"


def m_output(b: Bench) -> None:
    """3. output rate: a generator yielding N small ints (or dicts) vs remote python printing them."""
    n = 100_000 if b.args.quick else 1_000_000
    sky = b.sky("run", f"{TARGETS}:count", "-a", f"n={n}", "-H", "box")
    ssh = b.ssh(REMOTE_PY, "-c", f"for i in range({n}): print(i)")
    b.baselines["ssh print loop"] = f"`ssh … {REMOTE_PY} -c 'for i in range(N): print(i)'`"
    for busy, key in ((False, "3"), (True, "3c")):
        got = _rate_rows(b, {"sky": (sky, subprocess.DEVNULL), "ssh": (ssh, subprocess.DEVNULL)}, n, busy)
        b.add(Row("output", f"{key}. output rate, {n:,} ints{_busy_label(busy)}, first→last line", "lines/s",
                  [d.stream_rate for d in got["sky"]], [d.stream_rate for d in got["ssh"]], "ssh print loop",
                  "higher", 0.8))
        if not busy:
            b.add(Row("output", "3b. the same, process start→exit (informational)", "lines/s",
                      [d.overall_rate for d in got["sky"]], [d.overall_rate for d in got["ssh"]], "ssh print loop",
                      "higher", None))
    n = 20_000 if b.args.quick else 200_000
    sky = b.sky("run", f"{TARGETS}:dicts", "-a", f"n={n}", "-H", "box")
    ssh = b.ssh(REMOTE_PY, "-c", DICT_LINES.format(n=n))
    b.baselines["ssh json.dumps loop"] = (f"`ssh … {REMOTE_PY} -c 'for i in range(N): print(json.dumps(d))'` "
                                          "with the same dict as `benchmarks/targets.py:dicts`")
    for busy, key in ((False, "3d"), (True, "3e")):
        got = _rate_rows(b, {"sky": (sky, subprocess.DEVNULL), "ssh": (ssh, subprocess.DEVNULL)}, n, busy)
        b.add(Row("output", f"{key}. output rate, {n:,} small dicts{_busy_label(busy)}, first→last line", "lines/s",
                  [d.stream_rate for d in got["sky"]], [d.stream_rate for d in got["ssh"]], "ssh json.dumps loop",
                  "higher", 0.8))


def pipe_sizes(b: Bench) -> int:
    return 200_000 if b.args.quick else 2_000_000


def m_pipe(b: Bench) -> None:
    """4. pipe rate: N short lines through an identity on ``Iterator[str]`` (and ``Iterator[int]``) vs a remote Python line copy."""
    n = pipe_sizes(b)
    seq = ["seq", "1", str(n)]
    ssh = b.ssh(REMOTE_PY, "-c", COPY_LINES)
    b.baselines["ssh line copy"] = f"`seq 1 N | ssh … {REMOTE_PY} -c '<for line in sys.stdin: sys.stdout.write(line)>'`"
    rows = ((f"{TARGETS}:identity", "str", False, "4", 0.9), (f"{TARGETS}:identity", "str", True, "4d", 0.9),
            (f"{TARGETS}:identity_int", "int", False, "4e", 0.8), (f"{TARGETS}:identity_int", "int", True, "4f", 0.8))
    for target, kind, busy, key, goal in rows:
        sky = b.sky("pipe", target, "-H", "box")
        got = _rate_rows(b, {"sky": (sky, seq), "ssh": (ssh, seq)}, n, busy)
        b.add(Row("pipe", f"{key}. pipe rate, {n:,} lines into `Iterator[{kind}]`{_busy_label(busy)}, "
                  "first→last output line", "lines/s",
                  [d.stream_rate for d in got["sky"]], [d.stream_rate for d in got["ssh"]], "ssh line copy",
                  "higher", goal))
        if key == "4":
            b.add(Row("pipe", "4b. the same, process start→exit (informational)", "lines/s",
                      [d.overall_rate for d in got["sky"]], [d.overall_rate for d in got["ssh"]], "ssh line copy",
                      "higher", None))
            b.add(Row("pipe", "4c. the same, steady rate: from 10% to 90% of the lines (informational)", "lines/s",
                      [d.middle_rate for d in got["sky"]], [d.middle_rate for d in got["ssh"]], "ssh line copy",
                      "higher", None))


def _roundtrip_skyctl(b: Bench, items: int, warmup: int, host: str = "box", config: Path | None = None) -> float:
    import skyctl
    from benchmarks import targets

    inbox: queue.Queue[str | None] = queue.Queue()

    def feed():
        while (item := inbox.get()) is not None:
            yield item

    times = []
    with skyctl.host(host, config or b.config) as remote:
        results = skyctl.function(targets.echo)(feed()) >> remote
        with results:
            for i in range(warmup + items):
                started = time.perf_counter()
                inbox.put(str(i))
                value = next(results)
                elapsed = time.perf_counter() - started
                if value != str(i):
                    raise BenchError(f"round trip: sent {i!r}, got {value!r}")
                if i >= warmup:
                    times.append(elapsed)
            inbox.put(None)
            for _ in results:
                pass
    return median(times)


def _roundtrip_ssh(b: Bench, items: int, warmup: int) -> float:
    times = []
    with Run(b.ssh(REMOTE_PY, "-c", ECHO_LINES), stdin=subprocess.PIPE, **b.run_kw()) as run:
        assert run.proc.stdin is not None
        fd_in = run.proc.stdin.fileno()
        pending = bytearray()
        for i in range(warmup + items):
            line = b"%d\n" % i
            started = time.perf_counter()
            os.write(fd_in, line)
            got = read_line(run.stdout_fd, pending)
            elapsed = time.perf_counter() - started
            if got != line:
                raise BenchError(f"ssh echo: sent {line!r}, got {got!r}\n{run.stderr_tail()}")
            if i >= warmup:
                times.append(elapsed)
        run.proc.stdin.close()
        run.finish()
    return median(times)


def _roundtrip_paramiko(b: Bench, items: int, warmup: int) -> float:
    """The ssh echo's loop over a bare paramiko exec channel (what skyctl's SSH transport is built on)."""
    import paramiko

    server = b.server
    transport = paramiko.Transport(("127.0.0.1", server.port))
    try:
        transport.start_client(timeout=30)
        transport.auth_publickey(server.user, paramiko.PKey.from_path(server.identity_file))
        channel = transport.open_session()
        channel.exec_command(shlex.join([REMOTE_PY, "-c", ECHO_LINES]))
        times = []
        for i in range(warmup + items):
            line = b"%d\n" % i
            started = time.perf_counter()
            channel.sendall(line)
            got = b""
            while not got.endswith(b"\n"):
                chunk = channel.recv(4096)
                if not chunk:
                    raise BenchError(f"paramiko echo: the command ended ({got!r})")
                got += chunk
            elapsed = time.perf_counter() - started
            if got != line:
                raise BenchError(f"paramiko echo: sent {line!r}, got {got!r}")
            if i >= warmup:
                times.append(elapsed)
        channel.shutdown_write()
        channel.recv_exit_status()
    finally:
        transport.close()
    return median(times)


def m_roundtrip(b: Bench) -> None:
    """5. one item through a bidirectional function (Python API) vs a raw echo over one ssh session."""
    items, warmup = (50, 10) if b.args.quick else (200, 20)
    got = interleave(b.repeat, {
        "sky": lambda: _roundtrip_skyctl(b, items, warmup),
        "ssh": lambda: _roundtrip_ssh(b, items, warmup),
        "paramiko": lambda: _roundtrip_paramiko(b, items, warmup),
        "direct": lambda: _roundtrip_skyctl(b, items, warmup, host="box-direct"),
    })
    b.baselines["ssh echo"] = (f"one `ssh … {REMOTE_PY} -c '<readline, write, flush loop>'` session: write a line, "
                               "read it back, repeat")
    b.add(Row("roundtrip", f"5. round trip of one item, Python API (median of {items} per session)", "s",
              got["sky"], got["ssh"], "ssh echo", "lower", 2.0))
    b.add(Row("roundtrip", "5b. the ssh echo's loop over a bare paramiko exec channel (informational: "
              "the floor of an SSH transport built on paramiko)", "s",
              got["paramiko"], got["ssh"], "ssh echo", "lower", None))
    b.add(Row("roundtrip", "5c. the same as 5. on a profile with `reuse: false` (informational: the session holds "
              "its own SSH connection, no relay through the kept connection's holder)", "s",
              got["direct"], got["ssh"], "ssh echo", "lower", None))


def _memory_runs(b: Bench) -> tuple[Callable[[int], dict[str, float]], str]:
    """How to measure one memory run: ``benchmarks/pipe_memory.py``'s ``measure``.

    ``measure(skyctl, config, host, nbytes, mb_per_s=, env=)`` returns
    ``client_mb`` and ``worker_mb``; around it we sample the peak of the
    kept-connection holder (``reuse``) that serves our sshd, if there is one.
    """
    import threading

    from benchmarks import memory, pipe_memory

    measure, source = pipe_memory.measure, "benchmarks/pipe_memory.py"

    def run(nbytes: int) -> dict[str, float]:
        done = threading.Event()
        holder = {"kb": 0}

        def sample_holder() -> None:
            pids: list[int] = []
            while not done.wait(0.1):
                pids = pids or memory.holder_pids(b.server.port)
                for pid in pids:
                    holder["kb"] = max(holder["kb"], memory.vmhwm_kb(pid))

        sampler = threading.Thread(target=sample_holder, daemon=True)
        sampler.start()
        try:
            result = dict(measure(b.skyctl, b.config, "box", nbytes, mb_per_s=b.args.memory_rate, env=b.env))
        finally:
            done.set()
            sampler.join(5)
        if not {"client_mb", "worker_mb"} <= set(result):
            raise BenchError(f"{source}: measure() returned {sorted(result)}, expected client_mb and worker_mb")
        result["holder_mb"] = holder["kb"] / 1024
        return result

    return run, source


def m_memory(b: Bench) -> None:
    """6. peak RSS of client and worker: 1 GB through a slow consumer vs 100 MB."""
    big, small = (100_000_000, 10_000_000) if b.args.quick else (1_000_000_000, 100_000_000)
    measure, source = _memory_runs(b)
    log(f"  using {source}; consumer limited to {b.args.memory_rate:g} MB/s")
    got = interleave(b.repeat, {"big": lambda: measure(big), "small": lambda: measure(small)})
    label = f"{small // 1_000_000} MB input"
    b.baselines[label] = (f"the same `skyctl pipe` of {small // 1_000_000} MB (1 KiB lines, consumer ≤ "
                          f"{b.args.memory_rate:g} MB/s), same run; measured by `{source}` (VmHWM from /proc)")
    for who, key in (("client (skyctl)", "client_mb"), ("worker", "worker_mb")):
        b.add(Row("memory", f"6. peak RSS of the {who}, {big // 1_000_000:,} MB piped to a slow consumer", "MiB",
                  [r[key] for r in got["big"]], [r[key] for r in got["small"]], label, "lower", 1.10, limit=100.0))
    if all("in_flight_mb" in r for r in got["big"] + got["small"]):
        b.add(Row("memory", "6b. most input bytes taken by skyctl but not yet consumed (informational)", "MiB",
                  [r["in_flight_mb"] for r in got["big"]], [r["in_flight_mb"] for r in got["small"]], label, "lower", None))
    holder = [r["holder_mb"] for r in got["big"]]
    if any(holder):
        b.add(Row("memory", "6c. peak RSS of the kept-connection holder (`reuse`), over its life so far (informational)",
                  "MiB", holder, [r["holder_mb"] for r in got["small"]], label, "lower", None))


def m_latency(b: Bench) -> None:
    """7. warm time to first value and pipe rate through a +25 ms each way (50 ms RTT) delay proxy."""
    server = b.server
    n = pipe_sizes(b)
    seq = ["seq", "1", str(n)]
    with start_proxy(server.port, ONE_WAY_DELAY) as pport:
        known = b.root / "known_hosts_proxy"
        known.write_text(Path(server.known_hosts).read_text() + f"[127.0.0.1]:{pport} {server.host_public_key}\n")
        slow = dataclasses.replace(server, port=pport, known_hosts=known)
        config = b.write_config("proxy.yaml", server=slow)
        sky_one = b.sky("run", f"{TARGETS}:one", "-H", "box", config=config)
        sky_one_noreuse = [*sky_one, "--no-reuse"]
        ssh_one = b.ssh(REMOTE_PY, "-c", "print(1)", server=slow)
        for argv in (sky_one, sky_one_noreuse, ssh_one):
            first_line(argv, **b.run_kw())
        got = interleave(b.repeat, {
            "sky": lambda: first_line(sky_one, **b.run_kw()),
            "noreuse": lambda: first_line(sky_one_noreuse, **b.run_kw()),
            "ssh": lambda: first_line(ssh_one, **b.run_kw()),
        })
        b.baselines["ssh print(1), 50 ms RTT"] = "`ssh -p PROXYPORT … print(1)` through the same delay proxy"
        b.add(Row("latency", "7. warm time to first value at 50 ms RTT (delay proxy)", "s",
                  got["sky"], got["ssh"], "ssh print(1), 50 ms RTT", "lower", 1.0))
        b.add(Row("latency", "7b. the same with `--no-reuse` (informational)", "s",
                  got["noreuse"], got["ssh"], "ssh print(1), 50 ms RTT", "lower", None))

        sky_pipe_0 = b.sky("pipe", f"{TARGETS}:identity", "-H", "box")
        sky_pipe_50 = b.sky("pipe", f"{TARGETS}:identity", "-H", "box", config=config)
        ssh_pipe_50 = b.ssh(REMOTE_PY, "-c", COPY_LINES, server=slow)
        got = interleave(b.repeat, {
            "sky0": lambda: drain(sky_pipe_0, stdin=seq, expect_lines=n, **b.run_kw()),
            "sky50": lambda: drain(sky_pipe_50, stdin=seq, expect_lines=n, **b.run_kw()),
            "ssh50": lambda: drain(ssh_pipe_50, stdin=seq, expect_lines=n, **b.run_kw()),
        })
        b.baselines["skyctl pipe, 0 ms"] = "the same `skyctl pipe` without the proxy, interleaved with the proxied runs"
        b.baselines["ssh line copy, 50 ms RTT"] = "the ssh line copy of 4. through the same delay proxy"
        b.add(Row("latency", f"7c. pipe rate at 50 ms RTT vs 0 ms, {n:,} lines, first→last line", "lines/s",
                  [d.stream_rate for d in got["sky50"]], [d.stream_rate for d in got["sky0"]], "skyctl pipe, 0 ms",
                  "higher", 0.8))
        b.add(Row("latency", "7d. pipe rate at 50 ms RTT vs the ssh line copy at 50 ms RTT (informational)", "lines/s",
                  [d.stream_rate for d in got["sky50"]], [d.stream_rate for d in got["ssh50"]],
                  "ssh line copy, 50 ms RTT", "higher", None))


def m_local(b: Bench) -> None:
    """8. time to first value on ``local`` vs the same interpreter running print(1)."""
    sky = b.sky("run", f"{TARGETS}:one", "-H", "local")
    py = [sys.executable, "-c", "print(1)"]
    for argv in (sky, py):
        first_line(argv, **b.run_kw())
    got = interleave(b.repeat, {
        "sky": lambda: first_line(sky, **b.run_kw()),
        "py": lambda: first_line(py, **b.run_kw()),
    })
    b.baselines["python print(1)"] = f"`{sys.executable} -c 'print(1)'` (the interpreter skyctl runs on)"
    b.add(Row("local", "8. time to first value on `local` (proposed target)", "s",
              got["sky"], got["py"], "python print(1)", "lower", b.args.local_target))


SLEEPY_LINES = "import sys, time\nfor line in sys.stdin:\n    time.sleep(0.001)\n    sys.stdout.write(line)\n    sys.stdout.flush()\n"


def _many_config(b: Bench, root: Path) -> Path:
    """Four ssh hosts (the bench sshd under four names, each its own workers) and groups of 1, 3 and 4."""
    from tests.helpers import ssh_host_yaml

    text = "default: q1\nhosts:\n  local:\n    type: local\n"
    for i in range(1, 5):
        text += ssh_host_yaml(b.server, name=f"q{i}", python=REMOTE_PY,
                              extra=f"workdir: {b.remote_workdir}\nenv: {{BENCH_HOST: q{i}}}")
    text += "groups:\n  solo: [q1]\n  trio: [q1, q2, q3]\n  quad: [q1, q2, q3, q4]\n"
    path = root / "many.yaml"
    path.write_text(text)
    return path


def _killed_run(b: Bench, argv: list[str], n: int, pid_dir: Path, victim: str) -> float:
    """Seconds from start to exit of ``argv`` (fed ``seq 1 n``) when ``victim``'s worker is SIGKILLed at half the output."""
    import signal

    with Run(argv, stdin=["seq", "1", str(n)], **b.run_kw(timeout=600)) as run:
        lines, killed = 0, False
        while chunk := os.read(run.stdout_fd, 1 << 16):
            lines += chunk.count(b"\n")
            if not killed and lines >= n // 2:
                os.kill(int((pid_dir / f"pid-{victim}").read_text()), signal.SIGKILL)
                killed = True
        run.finish()
        if lines != n or not killed:
            raise BenchError(f"killed run: {lines} of {n} lines, killed={killed}\n{run.stderr_tail()}")
        return time.perf_counter() - run.started


def _client_peak_mib(b: Bench, argv: list[str], nbytes: int) -> float:
    """Peak RSS (VmHWM) of ``skyctl`` while ``nbytes`` of 1 KiB lines are piped through it."""
    import threading

    from benchmarks.memory import vmhwm_kb

    line = b"x" * 1023 + b"\n"
    block = line * 1024
    with Run(argv, stdin=subprocess.PIPE, **b.run_kw(timeout=900)) as run:
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.02):
                peak[0] = max(peak[0], vmhwm_kb(run.proc.pid))

        def produce() -> None:
            fd = run.proc.stdin.fileno()  # type: ignore[union-attr]
            sent = 0
            try:
                while sent < nbytes:
                    view = memoryview(block)[: nbytes - sent]
                    while view:
                        k = os.write(fd, view)
                        view, sent = view[k:], sent + k
            finally:
                run.proc.stdin.close()  # type: ignore[union-attr]

        threads = [threading.Thread(target=f, daemon=True) for f in (sample, produce)]
        for t in threads:
            t.start()
        total = 0
        pending = bytearray()
        while chunk := os.read(run.stdout_fd, 1 << 16):
            pending += chunk
        total = sum(int(v) for v in pending.split())
        run.finish()
        done.set()
        for t in threads:
            t.join(10)
        if total != nbytes - nbytes // 1024:  # every line's bytes but its newline
            raise BenchError(f"memory over many hosts: {total} bytes consumed of {nbytes}\n{run.stderr_tail()}")
        return max(peak[0], vmhwm_kb(run.proc.pid)) / 1024


def m_many(b: Bench) -> None:
    """9. many hosts: 4 hosts vs 1, vs GNU parallel, -j 2 vs -j 1, a host killed half-way, client memory."""
    root = b.root / "many"
    root.mkdir(exist_ok=True)
    config = _many_config(b, root)
    repeat = min(b.repeat, 3)
    n = 2000 if b.args.quick else 8000

    def sky(group: str, *extra: str, target: str = "sleepy") -> list[str]:
        return b.sky("pipe", f"{TARGETS}:{target}", "-H", group, *extra, config=config)

    seq = ["seq", "1", str(n)]
    quad, solo = sky("quad"), sky("solo")  # default chunking (auto)
    for argv in (quad, solo):
        drain(argv, stdin=seq, expect_lines=n, **b.run_kw(timeout=600))
    got = interleave(repeat, {
        "quad": lambda: drain(quad, stdin=seq, expect_lines=n, **b.run_kw(timeout=600)),
        "solo": lambda: drain(solo, stdin=seq, expect_lines=n, **b.run_kw(timeout=600)),
    })
    b.baselines["skyctl pipe, 1 host"] = ("the same `skyctl pipe` (1 ms `time.sleep` per record, default `--chunk auto`) "
                                          "on a group of one host")
    b.add(Row("many", f"9a. I/O-bound pipe (1 ms per record, {n:,} records), 4 hosts vs 1 host: throughput", "lines/s",
              [d.stream_rate for d in got["quad"]], [d.stream_rate for d in got["solo"]], "skyctl pipe, 1 host",
              "higher", 3.8))

    script = root / "sleepcat.py"
    script.write_text(SLEEPY_LINES)
    if shutil.which("parallel"):
        logins = [" ".join(["1/ssh", "-o", f"ServerAliveInterval={60 + i}", *b.server.ssh_argv()[1:]]) for i in range(4)]
        par = ["parallel", "--pipe", "-N", "200", "-j", "1", "--no-notice", *sum((["-S", s] for s in logins), []),
               REMOTE_PY, str(script)]
        drain(par, stdin=seq, expect_lines=n, **b.run_kw(timeout=600))
        got2 = interleave(repeat, {
            "quad": lambda: drain(quad, stdin=seq, expect_lines=n, **b.run_kw(timeout=600)),
            "par": lambda: drain(par, stdin=seq, expect_lines=n, **b.run_kw(timeout=600)),
        })
        b.baselines["GNU parallel, 4 hosts"] = ("`seq 1 N | parallel --pipe -N 200 -j 1 -S <4 ssh logins to the same sshd> "
                                                 f"{REMOTE_PY} sleepcat.py` (the same 1 ms per record)")
        b.add(Row("many", "9b. the same 4 hosts vs GNU parallel `--pipe -S` over them", "lines/s",
                  [d.stream_rate for d in got2["quad"]], [d.stream_rate for d in got2["par"]], "GNU parallel, 4 hosts",
                  "higher", 2.0))
    else:
        b.rows.append(Row("many", "9b. the same 4 hosts vs GNU parallel", "lines/s", [], [], "GNU parallel, 4 hosts",
                          error="GNU parallel is not installed (apt-get install parallel)"))

    cpu_n = 400 if b.args.quick else 2000
    cpu_seq = ["seq", "1", str(cpu_n)]
    j2 = b.sky("pipe", f"{TARGETS}:burn", "-H", "local", "-j", "2", "--chunk", "50")
    j1 = b.sky("pipe", f"{TARGETS}:burn", "-H", "local", "-j", "1", "--chunk", "50")
    got3 = interleave(repeat, {
        "j2": lambda: drain(j2, stdin=cpu_seq, expect_lines=cpu_n, **b.run_kw(timeout=600)),
        "j1": lambda: drain(j1, stdin=cpu_seq, expect_lines=cpu_n, **b.run_kw(timeout=600)),
    })
    b.baselines["skyctl pipe -j 1"] = "the same CPU-bound `skyctl pipe` on `local` with `-j 1` (this machine has 2 cores)"
    b.add(Row("many", f"9c. CPU-bound pipe on `local` ({cpu_n:,} records), `-j 2` vs `-j 1`: throughput", "lines/s",
              [d.stream_rate for d in got3["j2"]], [d.stream_rate for d in got3["j1"]], "skyctl pipe -j 1", "higher", 1.6))

    pid_dir = root / "pids"
    pid_dir.mkdir(exist_ok=True)
    quad_k = sky("quad", "--chunk", "200", "-a", f"pid_dir={pid_dir}")
    trio = sky("trio", "--chunk", "200")
    got4 = interleave(repeat, {
        "killed": lambda: _killed_run(b, quad_k, n, pid_dir, "q4"),
        "trio": lambda: drain(trio, stdin=seq, expect_lines=n, **b.run_kw(timeout=600)).total,
    })
    b.baselines["skyctl pipe, 3 hosts"] = "the same run on a group of 3 hosts (start→exit)"
    b.add(Row("many", "9d. one of 4 hosts killed half-way: time vs the same run on 3 hosts (start→exit)", "s",
              got4["killed"], got4["trio"], "skyctl pipe, 3 hosts", "lower", 1.3))

    big, small = (100_000_000, 10_000_000) if b.args.quick else (1_000_000_000, 100_000_000)
    mem = b.sky("pipe", f"{TARGETS}:byte_count", "-H", "quad", "--chunk", "1000", "-q", config=config)
    got5 = interleave(min(repeat, 2), {"big": lambda: _client_peak_mib(b, mem, big),
                                        "small": lambda: _client_peak_mib(b, mem, small)})
    label = f"{small // 1_000_000} MB over 4 hosts"
    b.baselines[label] = f"the same `skyctl pipe` of {small // 1_000_000} MB (1 KiB lines) over the 4 hosts, same run"
    b.add(Row("many", f"9e. peak RSS of the client, {big // 1_000_000:,} MB piped over 4 hosts", "MiB",
              got5["big"], got5["small"], label, "lower", 1.10, limit=100.0))


#: rows of numpy's umath validation sets, repeated, for 12c (the size of issue 22's experiment)
CSV_ROWS = 1_064_400


def _validation_csv(root: Path, rows: int) -> Path:
    """numpy's umath validation CSVs (from the numpy installed here) as one CSV of ``rows`` rows, repeated."""
    import importlib.util

    spec = importlib.util.find_spec("numpy")
    if spec is None or spec.origin is None:
        raise BenchError("12c needs numpy's umath validation CSVs: pip install numpy")
    sets = sorted((Path(spec.origin).parent / "_core" / "tests" / "data").glob("umath-validation-set-*.csv"))
    if not sets:
        raise BenchError(f"no umath-validation-set-*.csv under {Path(spec.origin).parent}")
    data = [line for path in sets for line in path.read_text().splitlines()
            if line and not line.startswith(("dtype", "#", "$"))]
    out = root / "umath-validation.csv"
    with out.open("w") as f:
        f.write("dtype,input,output,ulperrortol\n")
        for i in range(rows):
            f.write(data[i % len(data)] + "\n")
    return out


def _from_file(path: Path) -> Callable[[], Any]:
    """A fresh stdin for each run: the file opened anew."""
    return lambda: path.open("rb")


def m_chunks(b: Bench) -> None:
    """12. chunks that cost nothing: a cheap function over a group of one and of four hosts, and the CSV case."""
    root = b.root / "chunks"
    root.mkdir(exist_ok=True)
    config = _many_config(b, root)
    repeat = min(b.repeat, 3)
    n = 200_000 if b.args.quick else 1_000_000
    seq = ["seq", "0", str(n - 1)]

    def sky(where: str, *extra: str, target: str = "identity_int") -> list[str]:
        return b.sky("pipe", f"{TARGETS}:{target}", "-H", where, *extra, config=config)

    def rate(argv: list[str], stdin: Any = seq, lines: int = n) -> float:
        """Records per second, start→exit (a group's connects and its chunking, all of it)."""
        opened = stdin() if callable(stdin) else stdin
        try:
            return drain(argv, stdin=opened, expect_lines=lines, **b.run_kw(timeout=600)).overall_rate
        finally:
            if callable(stdin):
                opened.close()

    plain, solo, quad = sky("q1"), sky("solo", "-q"), sky("quad", "-q")
    for argv in (plain, solo, quad):
        rate(argv)
    got = interleave(repeat, {"plain": lambda: rate(plain), "solo": lambda: rate(solo), "quad": lambda: rate(quad)})
    b.baselines["skyctl pipe, no group"] = ("the same `skyctl pipe` (`identity(Iterator[int])`) on that one host "
                                            "without a group: one call, no chunks (start→exit)")
    b.add(Row("chunks", f"12a. CPU-cheap pipe ({n:,} ints), a group of one host, default chunking, vs no group: "
              "throughput start→exit", "lines/s", got["solo"], got["plain"], "skyctl pipe, no group", "higher", 0.9))
    b.add(Row("chunks", f"12b. the same over a group of 4 hosts (2 cores) vs one host without a group", "lines/s",
              got["quad"], got["plain"], "skyctl pipe, no group", "higher", 0.9))

    rows = CSV_ROWS // 10 if b.args.quick else CSV_ROWS
    csv = _validation_csv(root, rows)
    fixed = {size: sky("quad", "-q", "--format", "csv", "--chunk", str(size), target="csv_rows")
             for size in (1000, 5000, 20000, 100000)}
    auto = sky("quad", "-q", "--format", "csv", target="csv_rows")
    stdin = _from_file(csv)
    rate(auto, stdin, rows)
    runs: dict[str, Callable[[], Any]] = {"auto": lambda: rate(auto, stdin, rows)}
    for size, argv in fixed.items():
        runs[str(size)] = lambda argv=argv: rate(argv, stdin, rows)
    got2 = interleave(repeat, runs)
    best = max((str(size) for size in fixed), key=lambda k: median(got2[k]))
    b.baselines["best fixed --chunk"] = ("the same pipe with the best of `--chunk 1000`, `5000`, `20000`, `100000` by "
                                         "median, in the same rounds (" + ", ".join(
                                             f"{k}: {median(got2[k]) / 1e3:.0f} k rows/s" for k in map(str, fixed))
                                         + f"; best: {best})")
    b.add(Row("chunks", f"12c. {rows:,} CSV rows (numpy's umath validation sets, repeated) over 4 hosts, defaults "
              "vs the best fixed `--chunk`: throughput start→exit", "lines/s", got2["auto"], got2[best],
              "best fixed --chunk", "higher", 0.95))


def _joblog_run(argv: list[str], n: int, results: Path, joblog: Path, b: Bench) -> float:
    """One ``pipe --joblog J --results R`` (nothing on stdout): its start→exit rate, R's lines checked."""
    for path in (results, joblog):
        path.unlink(missing_ok=True)
    with Run(argv, stdin=["seq", "1", str(n)], **b.run_kw(timeout=600)) as run:
        os.read(run.stdout_fd, 1 << 20)  # EOF: nothing is written to stdout
        run.finish()
        total = time.perf_counter() - run.started
    with results.open("rb") as f:
        lines = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
    if lines != n:
        raise BenchError(f"--results: {lines} lines, expected {n}\n{run.stderr_tail()}")
    return n / total


def m_joblog(b: Bench) -> None:
    """9f. a distributed pipe with `--joblog J --results R` vs the same pipe to stdout (start→exit)."""
    root = b.root / "joblog"
    root.mkdir(exist_ok=True)
    config = _many_config(b, root)
    n = 200_000 if b.args.quick else 1_000_000
    seq = ["seq", "1", str(n)]
    plain = b.sky("pipe", f"{TARGETS}:identity", "-H", "quad", "--chunk", "1000", "--keep-order", "-q", config=config)
    results, joblog = root / "results.out", root / "job.log"
    logged = [*plain[:-2], "--joblog", str(joblog), "--results", str(results), *plain[-2:]]
    drain(plain, stdin=seq, expect_lines=n, **b.run_kw(timeout=600))
    got = interleave(b.repeat, {
        "logged": lambda: _joblog_run(logged, n, results, joblog, b),
        "plain": lambda: n / drain(plain, stdin=seq, expect_lines=n, **b.run_kw(timeout=600)).total,
    })
    b.baselines["skyctl pipe to stdout, 4 hosts"] = ("the same `skyctl pipe … -H quad --chunk 1000 --keep-order` "
                                                     "(4 ssh hosts) writing to stdout, no job log")
    b.add(Row("joblog", f"9f. `--joblog J --results R` (fsync'd per group of chunks), {n:,} lines over 4 hosts, "
                        "start→exit", "lines/s", got["logged"], got["plain"], "skyctl pipe to stdout, 4 hosts",
              "higher", 0.9))
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):  # the same with J and R on tmpfs: what fsync to a disk costs
        where = Path(tempfile.mkdtemp(prefix="skyctl-joblog-", dir=shm))
        try:
            on_shm = [*plain[:-2], "--joblog", str(where / "job.log"), "--results", str(where / "results.out"),
                      *plain[-2:]]
            got2 = interleave(b.repeat, {
                "shm": lambda: _joblog_run(on_shm, n, where / "results.out", where / "job.log", b),
                "plain": lambda: n / drain(plain, stdin=seq, expect_lines=n, **b.run_kw(timeout=600)).total,
            })
        finally:
            shutil.rmtree(where, ignore_errors=True)
        b.add(Row("joblog", "9g. the same with J and R on tmpfs (`/dev/shm`: fsync costs nothing) (informational)",
                  "lines/s", got2["shm"], got2["plain"], "skyctl pipe to stdout, 4 hosts", "higher"))


def m_command(b: Bench) -> None:
    """10. `type: command` through the OpenSSH client (`shell: true`) vs the built-in SSH transport, same sshd."""
    import yaml

    server = b.server
    control = b.root / "cm-%C"  # ssh's ControlPath: %C, a hash, keeps the socket path short
    recipe = ["ssh", "-T", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
              "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null",
              "-o", f"UserKnownHostsFile={server.known_hosts}", "-p", str(server.port),
              "-i", str(server.identity_file)]  # fmt: skip
    mux = ["-o", "ControlMaster=auto", "-o", f"ControlPath={control}", "-o", "ControlPersist=60"]
    dest = f"{server.user}@{server.host}"
    common = {"type": "command", "shell": True, "python": REMOTE_PY, "workdir": b.remote_workdir}
    config = b.write_config("command.yaml")
    data = yaml.safe_load(config.read_text())
    data["hosts"]["cmd"] = {**common, "argv": [*recipe, dest]}
    data["hosts"]["cmdmux"] = {**common, "argv": [*recipe, *mux, dest]}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    label = "skyctl, built-in SSH"
    b.baselines[label] = "the same `skyctl` call to the same sshd through the built-in SSH transport (`host:` profile, reuse on)"
    b.baselines[f"{label}, --no-reuse"] = "the same, with `--no-reuse` (a new connection per call, as the OpenSSH client makes)"
    try:
        one = {name: b.sky("run", f"{TARGETS}:one", "-H", name, config=config) for name in ("box", "cmd", "cmdmux")}
        one["box_noreuse"] = [*one["box"], "--no-reuse"]
        for argv in one.values():  # warm-up: bundle in place, kept connection and ControlMaster up
            first_line(argv, **b.run_kw())
        got = interleave(b.repeat, {name: (lambda argv=argv: first_line(argv, **b.run_kw())) for name, argv in one.items()})
        b.add(Row("command", "10. warm time to first value, `type: command` + OpenSSH client (new connection "
                  "each call) (informational)", "s", got["cmd"], got["box"], label, "lower", None))
        b.add(Row("command", "10b. the same vs the built-in transport with `--no-reuse` (informational)", "s",
                  got["cmd"], got["box_noreuse"], f"{label}, --no-reuse", "lower", None))
        b.add(Row("command", "10c. the OpenSSH client with ControlMaster/ControlPersist (informational)", "s",
                  got["cmdmux"], got["box"], label, "lower", None))

        n = 100_000 if b.args.quick else 1_000_000
        count = {name: b.sky("run", f"{TARGETS}:count", "-a", f"n={n}", "-H", name, config=config)
                 for name in ("box", "cmd")}
        got = _rate_rows(b, {name: (argv, subprocess.DEVNULL) for name, argv in count.items()}, n, False)
        b.add(Row("command", f"10d. output rate, {n:,} ints, `type: command` + OpenSSH client, first→last line "
                  "(informational)", "lines/s", [d.stream_rate for d in got["cmd"]],
                  [d.stream_rate for d in got["box"]], label, "higher", None))

        items, warmup = (50, 10) if b.args.quick else (200, 20)
        got = interleave(b.repeat, {
            "cmd": lambda: _roundtrip_skyctl(b, items, warmup, host="cmd", config=config),
            "box": lambda: _roundtrip_skyctl(b, items, warmup, host="box", config=config),
        })
        b.add(Row("command", f"10e. round trip of one item, Python API, `type: command` + OpenSSH client "
                  f"(median of {items} per session) (informational)", "s", got["cmd"], got["box"], label,
                  "lower", None))
    finally:  # the ControlPersist master, by its control socket
        subprocess.run([*recipe, "-o", f"ControlPath={control}", "-O", "exit", dest],
                       capture_output=True, timeout=30, env=b.env)


RAY_DRIVER = ("import ray\nray.init(address={address!r}, logging_level='ERROR')\n"
              "print(ray.get(ray.remote(lambda: 1).options(max_retries=0).remote()), flush=True)")


def m_ray(b: Bench) -> None:
    """11. ``type: ray``: time to first value vs a plain Ray driver; pipe rate through Ray tasks vs local workers."""
    from tests.rayhead import RAY_ENV, RayUnavailable, ray_python, start_ray_head

    try:
        head = start_ray_head(ray_python())
    except RayUnavailable as exc:
        raise BenchError(f"the ray measurement needs a Python with ray: {exc}") from None
    try:
        workers = 2
        env = "env: {" + ", ".join(f"{k}: '{v}'" for k, v in RAY_ENV.items()) + "}"
        config = b.root / "ray.yaml"
        config.write_text(f"default: local\nhosts:\n  local:\n    type: local\n"
                          f"  head:\n    type: local\n    python: {head.python}\n    {env}\n"
                          f"  cluster:\n    type: ray\n    via: head\n    address: {head.address}\n"
                          f"    workers: {workers}\n")
        ray_kw = {**b.run_kw(), "env": {**b.env, **RAY_ENV}}
        sky = b.sky("run", f"{TARGETS}:one", "-H", "cluster", config=config)
        driver = [head.python, "-c", RAY_DRIVER.format(address=head.address)]
        # each run of skyctl leaves spare drivers (warm, for the next runs): every measurement, skyctl's and the
        # baseline's, starts once they are listening (a run takes one and leaves one; the pipe's slots take two
        # and leave two) and the machine is quiet: the spares of the other rows' commands count as listening
        # too, so their number alone lets a run start beside one still warming up (or a driver still leaving
        # its Ray job), which slows whichever side runs then
        def settled(run: Callable[[], Any], count: int = 1) -> Any:
            _spares_listening(b, count)
            load.quiet()
            return run()

        first_line(sky, **ray_kw)
        settled(lambda: first_line(driver, **ray_kw))
        got = interleave(b.repeat, {
            "sky": lambda: settled(lambda: first_line(sky, **ray_kw)),
            "driver": lambda: settled(lambda: first_line(driver, **ray_kw)),
        })
        b.baselines["ray driver"] = ("a new Ray driver attached to the same running head printing one task's value: "
                                     "`python -c 'import ray; ray.init(address=…); "
                                     "print(ray.get(ray.remote(lambda: 1).remote()))'` with the cluster's python "
                                     "(`ray job submit` needs the dashboard, which the head runs without)")
        b.add(Row("ray", "11. time to first value, `skyctl run` on `type: ray` (warm, driver on a local via host)", "s",
                  got["sky"], got["driver"], "ray driver", "lower", 1.2))
        n = 100_000 if b.args.quick else 500_000
        seq = ["seq", "1", str(n)]
        through_ray = b.sky("pipe", f"{TARGETS}:identity", "-H", "cluster", config=config)
        local_group = b.sky("pipe", f"{TARGETS}:identity", "-H", "local", "-j", str(workers), config=config)
        drains = {"ray": (through_ray, seq), "group": (local_group, seq)}
        for argv, stdin in drains.values():
            settled(lambda: drain(argv, stdin=stdin, expect_lines=n, **b.run_kw()))
        got = interleave(b.repeat, {
            name: (lambda argv=argv, stdin=stdin: settled(lambda: drain(argv, stdin=stdin, expect_lines=n,
                                                                           **b.run_kw()), workers))
            for name, (argv, stdin) in drains.items()
        })
        b.baselines[f"local group -j {workers}"] = (f"`skyctl pipe … -H local -j {workers}`: the same pipe, "
                                                    f"default chunking, on {workers} local worker processes")
        b.add(Row("ray", f"11b. pipe rate through Ray tasks ({workers} chunk tasks in flight), {n:,} lines, "
                  "first→last line", "lines/s", [d.stream_rate for d in got["ray"]],
                  [d.stream_rate for d in got["group"]], f"local group -j {workers}", "higher", 0.8))
        # 11c: many short chunks of a slow-ish function, where a gap between two chunks would show
        m = 1000 if b.args.quick else 4000
        short = ["seq", "1", str(m)]
        gaps = {"ray": b.sky("pipe", f"{TARGETS}:sleepy", "-H", "cluster", "--chunk", "20", config=config),
                "group": b.sky("pipe", f"{TARGETS}:sleepy", "-H", "local", "-j", str(workers), "--chunk", "20",
                               config=config)}
        for argv in gaps.values():
            settled(lambda: drain(argv, stdin=short, expect_lines=m, **b.run_kw()))
        got = interleave(b.repeat, {
            name: (lambda argv=argv: settled(lambda: drain(argv, stdin=short, expect_lines=m, **b.run_kw()), workers))
            for name, argv in gaps.items()
        })
        b.baselines[f"local group -j {workers}, --chunk 20"] = (f"`skyctl pipe … -H local -j {workers} --chunk 20`: "
                                                                "1 ms of sleep per record, chunks of 20 records")
        b.add(Row("ray", f"11c. short chunks through Ray tasks (1 ms per record, `--chunk 20`, {m:,} records): "
                  "throughput", "lines/s", [d.stream_rate for d in got["ray"]], [d.stream_rate for d in got["group"]],
                  f"local group -j {workers}, --chunk 20", "higher", 0.9))
    finally:
        head.stop()


def _spares_listening(b: Bench, count: int, deadline: float = 60.0) -> None:
    """Wait (at most ``deadline`` s) until ``count`` spare drivers listen: those the last run left."""
    from skyctl.remote.spare import alive, name_pid
    from skyctl.transports.spare import spares_dir

    directory = Path(spares_dir(b.env))

    def listening() -> int:  # by the pid in their names (a spare killed with its cluster leaves its socket)
        pids = [name_pid(path.name) for path in directory.glob("*.sock")]
        return sum(1 for pid in pids if pid is not None and alive(pid))

    end = time.monotonic() + deadline
    while listening() < count and time.monotonic() < end:
        time.sleep(0.05)  # polling files against a deadline: nothing to wait on


RUNNERS: dict[str, Callable[[Bench], None]] = {
    "warm": m_warm, "cold": m_cold, "output": m_output, "pipe": m_pipe, "roundtrip": m_roundtrip,
    "memory": m_memory, "latency": m_latency, "local": m_local, "many": m_many, "joblog": m_joblog, "command": m_command,
    "ray": m_ray, "chunks": m_chunks,
}


# --------------------------------------------------------------------------
# the report


def report(b: Bench, info: dict[str, str], notes: list[str], minutes: float) -> str:
    order = {key: i for i, key in enumerate(MEASUREMENTS)}
    rows = sorted(b.rows, key=lambda r: order[r.key])
    labels = {label: i + 1 for i, label in enumerate(dict.fromkeys(r.baseline_label for r in rows))}
    out = [
        "# skyctl benchmarks",
        "",
        "Generated by `python benchmarks/run.py`"
        + (f" (`--repeat {b.repeat}`{', --quick' if b.args.quick else ''}"
           f"{', --only ' + ','.join(b.args.only) if b.args.only else ''})")
        + f" in {minutes:.1f} minutes. Each value is the median of {b.repeat} runs; skyctl and its baseline "
        "run interleaved, round by round, in the same process tree against the same sshd, so the **ratio** is the "
        "result and absolute times are only what this machine did at that moment.",
        "",
        "| metric | skyctl: median (min – max) | baseline: median (min – max) | ratio | worst run | target | result |",
        "|---|---:|---:|---:|---:|:---:|:---:|",
    ]
    for r in rows:
        if r.error:
            out.append(f"| {r.metric} | — | — | — | — | {r.target_text} | error |")
            continue
        out.append(f"| {r.metric} | {fmt(r.sky_median, r.unit)} ({fmt(min(r.skyctl), r.unit)} – "
                   f"{fmt(max(r.skyctl), r.unit)}) | {fmt(r.base_median, r.unit)} ({fmt(min(r.baseline), r.unit)} – "
                   f"{fmt(max(r.baseline), r.unit)}) [{labels[r.baseline_label]}] | {r.ratio:.2f} | "
                   f"{r.worst_ratio:.2f} | {r.target_text} | {r.verdict} |")
    out += [
        "",
        "Ratios are skyctl ÷ baseline: for times and memory lower is better, for rates higher is better. "
        "\"ratio\" is median ÷ median; \"worst run\" is skyctl's worst run (its slowest time, its lowest rate, "
        "its largest memory) ÷ the baseline's median, and a row passes only if its worst run meets the target. "
        "\"busy\" rows run skyctl and the baseline alike beside one CPU-bound process per core "
        "(`benchmarks/load.py`), warm-up included. "
        "\"first→last line\" rates count lines between the first and the last output bytes (start-up is "
        "measured by the time-to-first-value rows); \"start→exit\" rates include it. Time to first value is "
        "from just before the process is spawned until its first stdout line has been read from the pipe. "
        "MiB = 2²⁰ bytes.",
        "",
        "Baselines:",
        "",
    ]
    for label, i in labels.items():
        out.append(f"{i}. **{label}**: {b.baselines.get(label, label)}")
    errors = [r for r in rows if r.error]
    if errors:
        out += ["", "Errors:", ""] + [f"- {r.metric}: `{r.error.splitlines()[0]}`" for r in errors]
    out += ["", "## Machine", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in info.items()]
    out += ["", "The \"remote\" host is an OpenSSH sshd on 127.0.0.1 of the same machine: client, sshd, worker "
            "and baseline share its cores, and the network is loopback (0 ms) or the delay proxy "
            "(`benchmarks/proxy.py`: +25 ms each way, order and throughput preserved)."]
    out += [f"skyctl was run as `{' '.join(b.skyctl)}` (the console script itself, not a version-manager shim), "
            "with compiled bytecode cached as after a normal install (a private `PYTHONPYCACHEPREFIX`"
            + ("; this environment's `PYTHONDONTWRITEBYTECODE=1` was removed for skyctl and the baselines alike"
               if os.environ.get("PYTHONDONTWRITEBYTECODE") else "") + ")."]
    if notes:
        out += ["", "Notes on this run:", ""] + [f"- {n}" for n in notes]
    out += [
        "",
        "## How to reproduce",
        "",
        "```",
        "pip install -e '.[test]'       # plus OpenSSH server and client (apt-get install openssh-server),",
        "                               # GNU parallel for 9b (apt-get install parallel), and for 11 a Python with ray",
        "                               # (SKYCTL_TEST_RAY_PYTHON, as .ci/run makes it)",
        "python benchmarks/run.py       # ~10-20 minutes; --quick for a smaller run, --only NAME for one measurement",
        "```",
        "",
        f"Measurements (`--only`): {', '.join(MEASUREMENTS)}.",
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------


#: what follows this line in the report file belongs to other scripts (``benchmarks/lab_rows.py``,
#: ``benchmarks/chaos.py``: they need root) and is kept when this script rewrites the file
KEPT_FROM = "<!-- kept by benchmarks/run.py: sections from other scripts -->"


def kept_sections(path: Path) -> str:
    """The part of the existing report from ``KEPT_FROM`` on, to be written again after the new report."""
    try:
        old = path.read_text()
    except OSError:
        return ""
    at = old.find(KEPT_FROM)
    return "\n" + old[at:] if at >= 0 else ""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--repeat", type=int, default=None, help="runs per measurement and side (default 5; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="inputs 10x smaller; the report is not written unless --out")
    parser.add_argument("--only", action="append", default=[],
                        help=f"run only these (comma-separated or repeated): {', '.join(MEASUREMENTS)}")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the report (default: docs/benchmarks.md for a full run)")
    parser.add_argument("--note", action="append", default=[], help="a line for the report's notes (repeatable)")
    parser.add_argument("--memory-rate", type=float, default=25.0, help="the slow consumer's limit, MB/s (default 25)")
    parser.add_argument("--local-target", type=float, default=4.0,
                        help="target ratio for `local` time to first value (default 4.0, proposed)")
    args = parser.parse_args(argv)
    args.only = [name.strip() for item in args.only for name in item.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in MEASUREMENTS]
    if unknown:
        parser.error(f"unknown measurement {', '.join(unknown)}; choose from {', '.join(MEASUREMENTS)}")
    if args.repeat is None:
        args.repeat = 3 if args.quick else 5
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.out is None and not args.quick and not args.only:
        args.out = REPO / "docs" / "benchmarks.md"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tests.helpers import clean_env
    from tests.sshd import SshdUnavailable, start_sshd

    chosen = [name for name in RUN_ORDER if not args.only or name in args.only]
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="skyctl-bench-"))
    root.chmod(0o755)
    try:
        server = start_sshd(root)
    except SshdUnavailable as exc:
        log(f"benchmarks need an sshd: {exc}")
        shutil.rmtree(root, ignore_errors=True)
        return 1
    # Byte-compiled modules are cached, as after a normal `pip install`: this machine's environment may set
    # PYTHONDONTWRITEBYTECODE (then every skyctl start compiles its own sources); a private prefix keeps
    # the cache out of the source tree. The baselines get the same environment.
    env = clean_env({"PYTHONPYCACHEPREFIX": str(root / "pycache")})
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    bench = Bench(args, root, server, Path(), skyctl_argv(), env)
    bench.config = bench.write_config("skyward.yaml")
    info = machine.describe(REPO, REMOTE_PY)
    log(f"skyctl benchmarks: sshd on 127.0.0.1:{server.port}, {args.repeat} runs each, {', '.join(chosen)}")
    failed = False
    try:
        for name in chosen:
            log(f"[{name}] {RUNNERS[name].__doc__.splitlines()[0]}")
            t = time.monotonic()
            try:
                RUNNERS[name](bench)
            except Exception as exc:  # report it and go on with the others
                failed = True
                log(traceback.format_exc())
                bench.rows.append(Row(name, f"{name}: did not complete", "s", [], [], name, error=f"{type(exc).__name__}: {exc}"))
                bench.baselines.setdefault(name, "—")
            log(f"  ({time.monotonic() - t:.0f} s)")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    info["load average at end"] = machine.loadavg()
    text = report(bench, info, args.note, (time.monotonic() - started) / 60)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + kept_sections(args.out))
        log(f"wrote {args.out}")
    else:
        log("report not written (partial run); pass --out PATH to write it")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
