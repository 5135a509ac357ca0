#!/usr/bin/env python3
"""Chaos soak on the fault lab: a distributed pipe under random faults, its output checked line by line.

    python benchmarks/chaos.py                       # 4 minutes, 1,000,000 records per run
    python benchmarks/chaos.py --duration 60 --seed 7

Starts a lab of 4 hosts (``tests/lab.py``: each a network namespace with its
own address, link and sshd), then runs ``skyctl pipe`` of ``--records``
numbered lines over the 4 of them, again and again, for ``--duration``
seconds, while a thread injects faults at random (one every 1-4 s):

- partition: a host's link goes down, healed 1-8 s later (longer than the keepalive bound, 3-4 s, or not);
- worker kill: SIGKILL to every Python process calls run on a host (its workers and spares);
- sshd stop: SIGSTOP to a host's sshd, SIGCONT 1-5 s later (new connections hang);
- rate change: ``tc tbf`` at 500 kbit/s, 1 or 5 Mbit/s on a host's link, removed 2-8 s later.

At most two hosts are partitioned or have their sshd stopped at a time (a
pipe with no host left fails by design, exit 4/6, which would say nothing).
Each run's output is compared with its input: every number must come out
exactly once (``lines lost`` and ``lines duplicated`` must both be 0; a run
that ends with an error may lose lines, never duplicate one). The report
(markdown) goes to stdout, progress to stderr. Needs root (see ``tests/lab.py``).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(REPO / "tests") not in sys.path:  # tests/ modules import their siblings by name (pytest's pythonpath)
    sys.path.insert(0, str(REPO / "tests"))

from benchmarks.run import log, skyctl_argv  # noqa: E402
from tests.lab import Lab, start_lab  # noqa: E402

PROFILE = "keepalive: 1\nkeepalive_count: 3\nconnect_timeout: 5"
#: at most this many hosts cut off or with a stopped sshd at once
MAX_DOWN = 2
RATES = ("500kbit", "1mbit", "5mbit")
#: seconds between two faults (uniform)
GAP = (1.0, 4.0)


@dataclass
class RunResult:
    number: int
    exit_status: int | None
    seconds: float
    lines_out: int
    lost: int
    duplicated: int
    reruns: int
    warnings: int
    stderr_tail: str = ""


@dataclass
class Chaos:
    """The fault injector: faults now, their undoing later, counted by kind."""

    lab: Lab
    rng: random.Random
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    #: (when, description, undo) for faults still in force
    pending: list[tuple[float, str, Callable[[], None]]] = field(default_factory=list)
    down: set[int] = field(default_factory=set)
    events: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)

    def note(self, text: str) -> None:
        self.events.append(f"{time.monotonic() - self.started:7.2f}s {text}")

    def run(self) -> None:
        while not self.stop.is_set():
            self.undo_due(time.monotonic())
            if self.stop.wait(self.rng.uniform(*GAP)):
                break
            self.undo_due(time.monotonic())
            with contextlib.suppress(Exception):
                self.inject()
        self.undo_due(float("inf"))

    def undo_due(self, now: float) -> None:
        for item in sorted(self.pending, key=lambda p: p[0]):
            if item[0] <= now:
                self.pending.remove(item)
                with contextlib.suppress(Exception):
                    item[2]()
                self.note(f"undo {item[1]}")

    def inject(self) -> None:
        kind = self.rng.choice(("partition", "worker kill", "sshd stop", "rate change"))
        i = self.rng.randrange(len(self.lab.hosts))
        name = self.lab.hosts[i].name
        now = time.monotonic()
        if kind in ("partition", "sshd stop"):
            if i in self.down or len(self.down) >= MAX_DOWN:
                return
            self.down.add(i)
            if kind == "partition":
                self.lab.partition(i)
                undo = self._undo(i, self.lab.heal)
                lasts = self.rng.uniform(1, 8)
            else:
                self.lab.stop_sshd(i)
                undo = self._undo(i, self.lab.cont_sshd)
                lasts = self.rng.uniform(1, 5)
            self.pending.append((now + lasts, f"{kind} {name}", undo))
        elif kind == "worker kill":
            if not self.lab.signal_workers(i, signal.SIGKILL):
                return
        else:
            if self.lab.hosts[i].rated:
                return
            rate = self.rng.choice(RATES)
            self.lab.rate(i, rate)
            self.pending.append((now + self.rng.uniform(2, 8), f"rate {rate} {name}",
                                 lambda: self.lab.unrate(i)))
        self.counts[kind] += 1
        self.note(f"{kind} {name}")

    def _undo(self, i: int, action: Callable[[int], None]) -> Callable[[], None]:
        def undo() -> None:
            try:
                action(i)
            finally:
                self.down.discard(i)
        return undo


def check_output(path: Path, n: int) -> tuple[int, int, int]:
    """(lines out, lost, duplicated) of a run's output against 1..n, each expected exactly once."""
    seen = bytearray(n + 1)
    lines = 0
    extra = 0
    with open(path, "rb") as f:
        for line in f:
            lines += 1
            try:
                v = int(line)
            except ValueError:
                extra += 1
                continue
            if 1 <= v <= n:
                if seen[v] < 255:
                    seen[v] += 1
            else:
                extra += 1
    lost = seen.count(0) - 1  # index 0 is never a record
    duplicated = sum(c - 1 for c in seen if c > 1) + extra
    return lines, lost, duplicated


def one_run(number: int, config: Path, input_file: Path, out_file: Path, n: int, env: dict[str, str],
            chunk: int, pace: int, timeout: float) -> RunResult:
    argv = [*skyctl_argv(), "pipe", "benchmarks/targets.py:paced", "-a", f"every={pace}", "-H", "lab",
            "--chunk", str(chunk), "--retries", "100", "-c", str(config)]
    started = time.monotonic()
    with open(input_file, "rb") as stdin, open(out_file, "wb") as stdout:
        proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, cwd=REPO, env=env)
        try:
            _, err = proc.communicate(timeout=timeout)
            status: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            status = None
    seconds = time.monotonic() - started
    stderr = err.decode(errors="replace")
    lines, lost, duplicated = check_output(out_file, n)
    reruns = sum(int(m) for m in re.findall(r"(\d+) re-runs?\b", stderr))
    warnings = sum(1 for line in stderr.splitlines() if line.startswith("warning: "))
    return RunResult(number, status, seconds, lines, lost, duplicated, reruns, warnings,
                     "\n".join(stderr.strip().splitlines()[-8:]))


def stop_holders(run_dir: Path) -> None:
    """SIGTERM the kept-connection holders started with ``XDG_RUNTIME_DIR=run_dir`` (each by its pid, once checked)."""
    for pid_file in run_dir.glob("skyctl/*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text())
            if b"skyctl.holder" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGTERM)


def report(args: argparse.Namespace, results: list[RunResult], chaos: Chaos, seconds: float) -> str:
    statuses = collections.Counter("hung" if r.exit_status is None else str(r.exit_status) for r in results)
    ok = [r for r in results if r.exit_status == 0]
    lines = [
        f"Chaos soak (`benchmarks/chaos.py --duration {args.duration:g} --records {args.records} --seed {args.seed}`): "
        f"{len(results)} runs of a distributed `skyctl pipe` of {args.records:,} records over 4 lab hosts "
        f"(`--chunk {args.chunk}`, 1 ms of sleep every {args.pace} records, keepalive 1 s × 3, connect_timeout 5 s) "
        f"in {seconds / 60:.1f} min, "
        "faults injected at random throughout.",
        "",
        "| | |",
        "|---|---|",
        f"| runs | {len(results)} ({', '.join(f'exit {k}: {v}' for k, v in sorted(statuses.items()))}) |",
        *(f"| faults: {kind} | {chaos.counts.get(kind, 0)} |"
          for kind in ("partition", "worker kill", "sshd stop", "rate change")),
        f"| faults, total | {sum(chaos.counts.values())} |",
        f"| lines lost (exit-0 runs) | {sum(r.lost for r in ok)} |",
        f"| lines lost (all runs) | {sum(r.lost for r in results)} |",
        f"| lines duplicated (all runs) | {sum(r.duplicated for r in results)} |",
        f"| chunk re-runs | {sum(r.reruns for r in results)} |",
        f"| host warnings | {sum(r.warnings for r in results)} |",
        f"| run time | {min(r.seconds for r in results):.1f}–{max(r.seconds for r in results):.1f} s "
        f"(median {sorted(r.seconds for r in results)[len(results) // 2]:.1f} s) |" if results else "| run time | — |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=240.0, help="seconds of soak (default 240)")
    parser.add_argument("--records", type=int, default=1_000_000, help="records per run (default 1,000,000)")
    parser.add_argument("--chunk", type=int, default=5000, help="records per chunk (default 5,000)")
    parser.add_argument("--pace", type=int, default=50,
                        help="the function sleeps 1 ms every this many records, so runs last long enough for "
                             "faults to land mid-chunk (default 50)")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000, help="random seed")
    parser.add_argument("--run-timeout", type=float, default=600.0, help="a run taking longer counts as hung")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="skyctl-chaos-"))
    run_dir = root / "run"
    run_dir.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYCTL_")}
    env["XDG_RUNTIME_DIR"] = str(run_dir)
    input_file = root / "input.txt"
    with open(input_file, "w") as f:
        f.write("".join(f"{i}\n" for i in range(1, args.records + 1)))
    lab = start_lab(4, root)
    chaos = Chaos(lab, random.Random(args.seed))
    results: list[RunResult] = []
    started = time.monotonic()
    try:
        config = root / "skyward.yaml"
        config.write_text(lab.config_yaml(extra=f"{PROFILE}\nworkdir: {root / 'remote-workdir'}"))
        log(f"chaos: lab slot {lab.slot}, {args.duration:g} s, {args.records:,} records per run, seed {args.seed}")
        injector = threading.Thread(target=chaos.run, name="chaos", daemon=True)
        injector.start()
        number = 0
        while time.monotonic() - started < args.duration:
            number += 1
            result = one_run(number, config, input_file, root / "out.txt", args.records, env, args.chunk,
                             args.pace, args.run_timeout)
            results.append(result)
            log(f"  run {number}: exit {result.exit_status}, {result.seconds:.1f} s, {result.lines_out:,} lines, "
                f"lost {result.lost}, duplicated {result.duplicated}, re-runs {result.reruns}, "
                f"warnings {result.warnings}, faults so far {sum(chaos.counts.values())}")
            if result.exit_status != 0 or result.lost or result.duplicated:
                log("    " + result.stderr_tail.replace("\n", "\n    "))
        chaos.stop.set()
        injector.join(timeout=30)
    finally:
        chaos.stop.set()
        lab.reset()
        stop_holders(run_dir)
        lab.close()
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    seconds = time.monotonic() - started
    print(report(args, results, chaos, seconds))
    bad = [r for r in results if r.duplicated or (r.exit_status == 0 and r.lost) or r.exit_status is None]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
