"""Functions for the ``type: ray`` tests (``tests/test_ray_host.py``): stdlib only, they travel by value
and run inside Ray tasks (``ray`` itself is importable there, from the cluster's Python)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator

from gates import wait_for  # a sibling module: this folder is on sys.path for a file target and the tests


def in_task() -> bool:
    """Whether this runs inside a Ray task (not in the driver)."""
    import ray

    return ray.get_runtime_context().get_task_id() is not None


def gated(workdir: str) -> Iterator[str]:
    """Yields once, then waits for ``workdir/go`` (the test creates it after reading that value)."""
    yield f"first in_task={in_task()}"
    wait_for(Path(workdir, "go"))
    yield "second"


def count(n: int) -> Iterator[int]:
    yield from range(n)


def boom(n: int = 2) -> Iterator[int]:
    yield from range(n)
    raise ValueError(f"boom after {n}")


def add(a: int, b: int) -> int:
    return a + b


def forever(workdir: str) -> Iterator[str]:
    """Yields once, then waits; its ``finally`` writes how it ended (a cancel is a KeyboardInterrupt)."""
    how = "returned"
    try:
        yield f"started {os.getpid()}"
        while True:
            time.sleep(0.05)
    except BaseException as exc:
        how = type(exc).__name__
        raise
    finally:
        Path(workdir, "finally").write_text(how)


def double(records: Iterator[int]) -> Iterator[int]:
    for x in records:
        yield x * 2


def double_with_gate(records: Iterator[int], gate_at: int, workdir: str) -> Iterator[int]:
    """Each record doubled. At record ``gate_at`` the Ray worker process running the chunk writes its
    pid to ``workdir/blocked-<pid>`` and waits for ``workdir/gate``: the test kills it there."""
    work = Path(workdir)
    for x in records:
        if x == gate_at:
            (work / f"blocked-{os.getpid()}").write_text("")
            wait_for(work / "gate")
        yield x * 2


def chunk_sum(records: Iterator[int]) -> int:
    return sum(records)


def first_seen(records: Iterator[int], workdir: str) -> Iterator[int]:
    """Each record doubled; the first record of each call leaves ``first-<record>`` in ``workdir``."""
    first = True
    for x in records:
        if first:
            Path(workdir, f"first-{x}").write_text("seen")
            first = False
        yield 2 * x


def task_of_chunk(records: Iterator[int]) -> Iterator[str]:
    """One line per chunk: the Ray task it ran in and its first record."""
    import ray

    first = next(records)
    for _ in records:
        pass
    yield f"{ray.get_runtime_context().get_task_id()} {first}"


def hold_at(records: Iterator[int], gate_at: int, workdir: str) -> Iterator[int]:
    """Each record doubled; at record ``gate_at`` it writes ``workdir/blocked`` and waits for ever. Its
    ``finally`` writes how it ended to ``workdir/finally-<gate_at>``."""
    how = "returned"
    try:
        for x in records:
            if x == gate_at:
                Path(workdir, "blocked").write_text("")
                while True:
                    time.sleep(0.05)
            yield x * 2
    except BaseException as exc:
        how = type(exc).__name__
        raise
    finally:
        Path(workdir, f"finally-{gate_at}").write_text(how)


def link_family() -> str:
    """How this task reached its driver: the family of its open link's socket (raycall's ``_Link``)."""
    import gc
    import socket

    families = set()
    for obj in gc.get_objects():
        sock = getattr(obj, "_sock", None) if type(obj).__name__ == "_Link" else None
        if isinstance(sock, socket.socket) and sock.fileno() != -1:
            families.add("unix" if sock.family == socket.AF_UNIX else "tcp")
    return ",".join(sorted(families)) or "none"
