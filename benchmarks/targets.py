"""The functions the benchmarks ship to a host.

Stdlib only and nothing from ``benchmarks``: this module travels by value
(cloudpickle) like a user's own module does.
"""

from __future__ import annotations

from typing import Iterator


def one():
    """Time to first value: one value, as soon as possible."""
    yield 1


def count(n: int):
    """Output rate: ``n`` small ints."""
    yield from range(n)


def identity(lines: Iterator[str]):
    """Pipe rate: every stdin line straight back."""
    yield from lines


def echo(items: Iterator[str]):
    """Round trip: each item back as soon as it arrives (Python API)."""
    for item in items:
        yield item


def dicts(n: int):
    """Output rate of small dicts (a metrics stream): ``n`` of them."""
    for i in range(n):
        yield {"step": i, "loss": 1.0 / (i + 1), "tag": "train"}


def identity_int(numbers: Iterator[int]):
    """Pipe rate into ``Iterator[int]``: every stdin line parsed as an int, and back."""
    yield from numbers


def sleepy(records: Iterator[int], pid_dir: str = ""):
    """I/O-bound: 1 ms of sleep per record (many hosts). Writes its pid under ``pid_dir`` (named by host)."""
    import os
    import time

    if pid_dir:  # written whole (a rename), never seen empty by the benchmark reading it mid-run
        path = os.path.join(pid_dir, "pid-" + os.environ.get("BENCH_HOST", "?"))
        with open(f"{path}.{os.getpid()}.tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(f"{path}.{os.getpid()}.tmp", path)
    for x in records:
        time.sleep(0.001)
        yield x


def burn(records: Iterator[int]):
    """CPU-bound: a few ms of arithmetic per record (``-j`` on ``local``)."""
    for x in records:
        total = 0
        for i in range(20_000):
            total += i * i
        yield x


def byte_count(lines: Iterator[bytes]) -> int:
    """Memory over many hosts: the bytes of a chunk, consumed as they come."""
    return sum(map(len, lines))


def csv_rows(rows: Iterator[dict]):
    """A CSV row at a time (``--format csv``): its function and tolerance, as a check might read them."""
    for row in rows:
        yield f"{row['dtype']} {row['ulperrortol']}"


def paced(numbers: Iterator[int], every: int = 20, pause: float = 0.001):
    """A long-running pipe (the chaos soak): every number back, with ``pause`` seconds of sleep every ``every``."""
    import time

    for i, x in enumerate(numbers):
        if i % every == 0:
            time.sleep(pause)
        yield x
