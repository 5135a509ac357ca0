#!/usr/bin/env python3
"""Where one round trip's time goes: measurement 5 cut into its four legs.

    python benchmarks/roundtrip_trace.py             # local and a test sshd on 127.0.0.1, 3 sessions each
    python benchmarks/roundtrip_trace.py --items 500 --sessions 5

The same bidirectional call as the runner's round trip (an ``Iterator[str]``
fed from a ``queue.Queue`` by the caller, one item at a time), with a function
that yields each item together with the moment it received it. Every clock is
``time.perf_counter`` (CLOCK_MONOTONIC, shared by all processes of this
machine, where the "remote" also runs). Per item it prints the medians of:

- caller → feeder: ``queue.put`` until the feeder thread has the item
  (a hand-over between two threads of the client);
- feeder → function: the item framed, through the transport, read by the
  worker's reader thread and handed to the function's thread;
- function → client reader: the value framed, back through the transport,
  read by the client's reader thread (``Inbox.push``, timed by a wrapper);
- reader → caller: handed to the caller's thread.

A profiling aid, not a measurement of record (``benchmarks/run.py`` is).
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(REPO / "tests") not in sys.path:  # tests/ modules import their siblings by name (pytest's pythonpath)
    sys.path.insert(0, str(REPO / "tests"))

LEGS = ("caller → feeder", "feeder → function", "function → client reader", "reader → caller", "total")


def stamped_echo(items: Iterator[str]) -> Iterator[tuple[str, float]]:
    """Each item back, with the moment the function received it."""
    for item in items:
        yield item, time.perf_counter()


def trace(host_name: str, config: Path, items: int, warmup: int) -> list[float]:
    """Median of each leg (and the total) over ``items`` round trips, in seconds."""
    import skyctl
    from skyctl.remote import flow

    arrivals: list[float] = []
    push = flow.Inbox.push

    def timed_push(self: Any, payload: bytes) -> None:
        arrivals.append(time.perf_counter())
        push(self, payload)

    inbox: queue.Queue[str | None] = queue.Queue()
    fed: list[float] = []

    def feed() -> Iterator[str]:
        while (item := inbox.get()) is not None:
            fed.append(time.perf_counter())
            yield item

    legs: list[tuple[float, ...]] = []
    flow.Inbox.push = timed_push  # type: ignore[method-assign]
    try:
        with skyctl.host(host_name, config) as host:
            with skyctl.function(stamped_echo)(feed()) >> host as results:
                for i in range(warmup + items):
                    started = time.perf_counter()
                    inbox.put(str(i))
                    value, received = next(results)
                    done = time.perf_counter()
                    if value != str(i):
                        raise RuntimeError(f"sent {i!r}, got {value!r}")
                    if i >= warmup:
                        legs.append((fed[-1] - started, received - fed[-1], arrivals[-1] - received,
                                     done - arrivals[-1], done - started))
                inbox.put(None)
                for _ in results:
                    pass
    finally:
        flow.Inbox.push = push  # type: ignore[method-assign]
    return [statistics.median(leg[k] for leg in legs) for k in range(len(LEGS))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=300, help="round trips per session (default 300)")
    parser.add_argument("--sessions", type=int, default=3, help="sessions per host (default 3)")
    args = parser.parse_args(argv)

    from tests.helpers import ssh_host_yaml
    from tests.sshd import start_sshd

    root = Path(tempfile.mkdtemp(prefix="skyctl-rt-"))
    root.chmod(0o755)
    server = start_sshd(root)
    try:
        config = root / "skyward.yaml"
        config.write_text("default: box\nhosts:\n  local:\n    type: local\n"
                          + ssh_host_yaml(server, python="/usr/bin/python3", extra=f"workdir: {root / 'workdir'}"))
        os.chdir(REPO)  # this module travels by value from under the current directory
        print("| host | " + " | ".join(LEGS) + " |")
        print("|---|" + "---:|" * len(LEGS))
        for _ in range(args.sessions):
            for host_name in ("local", "box"):
                medians = trace(host_name, config, args.items, warmup=50)
                print(f"| {host_name} | " + " | ".join(f"{m * 1e6:.0f} µs" for m in medians) + " |", flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
