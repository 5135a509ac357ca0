"""``run`` on a group: the call on every host at once, values tagged by host, a summary line per host."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ..errors import ExitStatus
from ..render import Stderr, ValueWriter
from .group import as_output, host_for, report_hosts
from .state import track
from .stdout import silence_stdout, when_stdout_reader_leaves


def broadcast(fn: Any, kwargs: dict[str, Any], group: Any, config: Path | None, no_reuse: bool, output: str,
              stderr: Stderr, *, tag: bool, fail_fast: bool, quiet: bool, calls: Any = None) -> int:
    """Run the call on every host of ``group``; returns the first failed host's exit status, else 0.
    ``calls`` (``--joblog``) logs a line per host's call."""
    from ..api import start_call
    from ..many import HostStats, plural
    from ..many import broadcast as broadcast_on

    env = stderr.env
    writer = ValueWriter(env.stdout, output, guard=stderr.guard_for(env.stdout))
    lock = threading.Lock()
    hosts = [host_for(p, config, no_reuse, stderr) for p in group.profiles]
    reader_gone = threading.Event()
    when_stdout_reader_leaves(env.stdout, reader_gone.set)

    def emit(name: str, batch: Any) -> None:
        batch = as_output(batch, name, output, tag)
        with lock:
            writer.write_batch(batch)

    def start(host: Any) -> Any:
        return start_call(host, fn, (), kwargs, render=output)

    stderr.phase(f"running on {len(hosts)} hosts")
    live: dict[str, Any] = {p.name: HostStats(p.name) for p in group.profiles}
    track("broadcast", live.values)
    stderr.watch(lambda: (0, writer.written),
                 lambda: ", ".join(f"{n} {s.values}{'✗' if s.error else ''}" for n, s in live.items()) + " values")
    try:
        stats = broadcast_on(hosts, start, emit, fail_fast=fail_fast, stop=reader_gone, stats=live)
    except KeyboardInterrupt:
        stderr.stop()
        return ExitStatus.INTERRUPTED
    finally:
        if calls is not None:  # --joblog: a line per host's call
            calls.hosts(live.values())
    if reader_gone.is_set():
        silence_stdout()
        return ExitStatus.OK
    failed = [s for s in stats.values() if s.status]  # a host cancelled by --fail-fast did not fail
    report_hosts(stderr, stats.values(), show=bool(failed) or not quiet,
                 parts=lambda s: [plural(s.values, "value"), f"{s.seconds:.2f} s"])
    return failed[0].status if failed else ExitStatus.OK
