"""Target functions for the ``skyctl pipe`` end-to-end tests (``tests/test_pipe*.py``).

The ``echo_*`` functions yield each record unchanged after checking, on the
remote, that it arrived as exactly the annotated type (a float that arrives
as an int, or a field left a string, raises ``TypeError`` → exit 1).

Functions that leave traces write them under the directory named by the
``marks`` argument, so a test can wait for an event (a file appearing)
instead of sleeping, and can check that a ``finally`` ran.
"""

import dataclasses
import os
import time
from collections.abc import Iterable
from typing import Iterator, Optional, TypedDict


@dataclasses.dataclass
class Reading:
    sensor: str
    value: float
    ok: bool = True


class Point(TypedDict):
    x: int
    y: float
    label: str


def _exact(value, cls):
    if type(value) is not cls:
        raise TypeError(f"expected {cls.__name__}, got {type(value).__name__}: {value!r}")
    return value


def echo_str(data: Iterator[str]) -> Iterator[str]:
    for x in data:
        yield _exact(x, str)


def echo_bytes(data: Iterator[bytes]) -> Iterator[bytes]:
    for x in data:
        yield _exact(x, bytes)


def echo_int(data: Iterator[int]) -> Iterator[int]:
    for x in data:
        yield _exact(x, int)


def echo_float(data: Iterator[float]) -> Iterator[float]:
    for x in data:
        yield _exact(x, float)


def echo_bool(data: Iterator[bool]) -> Iterator[bool]:
    for x in data:
        yield _exact(x, bool)


def echo_dict(data: Iterator[dict]) -> Iterator[dict]:
    for x in data:
        yield _exact(x, dict)


def echo_dict_int(data: Iterator[dict[str, int]]) -> Iterator[dict]:
    for x in data:
        for v in _exact(x, dict).values():
            _exact(v, int)
        yield x


def echo_list(data: Iterator[list]) -> Iterator[list]:
    for x in data:
        yield _exact(x, list)


def echo_list_float(data: Iterator[list[float]]) -> Iterator[list]:
    for x in data:
        for v in _exact(x, list):
            _exact(v, float)
        yield x


def echo_pair(data: Iterator[tuple[int, str]]) -> Iterator[tuple]:
    x: tuple
    for x in data:
        _exact(x, tuple)
        _exact(x[0], int)
        _exact(x[1], str)
        yield x


def echo_reading(data: Iterator[Reading]) -> Iterator[Reading]:
    for r in data:
        if type(r).__name__ != "Reading":
            raise TypeError(f"expected Reading, got {type(r).__name__}")
        _exact(r.sensor, str)
        _exact(r.value, float)
        _exact(r.ok, bool)
        yield r


def echo_point(data: Iterator[Point]) -> Iterator[dict]:
    for p in data:
        _exact(p, dict)
        if sorted(p) != ["label", "x", "y"]:
            raise TypeError(f"expected the keys of Point, got {sorted(p)}")
        _exact(p["x"], int)
        _exact(p["y"], float)
        _exact(p["label"], str)
        yield p


def echo_iterable(data: Iterable[str]) -> Iterator[str]:
    """``Iterable[T]`` is a stream parameter too."""
    yield from data


def take3(data: Iterator[str]) -> Iterator[str]:
    """Returns after three records, however much more stdin holds (``yes | ... take3``)."""
    for i, x in enumerate(data):
        if i == 3:
            return
        yield x


def count(data: Iterator[str]) -> int:
    """A plain function: its return value prints once."""
    return sum(1 for _ in data)


def scaled(data: Iterator[float], factor: float, offset: int = 0) -> Iterator[float]:
    """Other parameters come from ``--arg`` alongside the stream."""
    for x in data:
        yield x * factor + offset


def two_streams(left: Iterator[int], right: Iterator[int] = (), scale: int = 1) -> Iterator[int]:
    """Two stream parameters: ``pipe`` needs ``--param``; the other one keeps its default."""
    for x in left:
        yield x * scale
    for y in right:
        yield -y * scale


def no_stream(n: int = 3) -> Iterator[int]:
    yield from range(n)


def optional_stream(data: Optional[Iterator[int]] = None) -> Iterator[int]:
    yield from data or ()


def guarded(data: Iterator[float], marks: str) -> Iterator[float]:
    """Identity over floats; its ``finally`` leaves ``marks/closed`` (did the close reach it?)."""
    try:
        for x in data:
            yield x
    finally:
        _mark(marks, "closed", "finally ran")


def progress(data: Iterator[str], marks: str) -> Iterator[str]:
    """Writes ``marks/pid`` once running and ``marks/seen-N`` after each record; ``finally`` → ``marks/closed``."""
    _mark(marks, "pid", str(os.getpid()))
    try:
        for i, x in enumerate(data, 1):
            _mark(marks, "seen", str(i))
            yield x
    finally:
        _mark(marks, "closed", "finally ran")


def slow(data: Iterator[bytes], every: int = 1000, pause: float = 0.01, marks: str = "", stall_at: int = 0) -> Iterator[int]:
    """A slow consumer: sleeps ``pause`` per ``every`` records; yields the running count each ``every``.

    With ``marks``: writes ``marks/pid`` (the worker's pid) when it starts, and,
    given ``stall_at``, after that many records writes ``marks/stalled`` and
    waits (up to 5 minutes) for ``marks/go`` to appear before going on.
    """
    if marks:
        _mark(marks, "pid", str(os.getpid()))
    n = 0
    for _ in data:
        n += 1
        if n == stall_at and marks:
            _mark(marks, "stalled", str(n))
            deadline = time.monotonic() + 300
            while not os.path.exists(os.path.join(marks, "go")) and time.monotonic() < deadline:
                time.sleep(0.05)
        if n % every == 0:
            time.sleep(pause)
            yield n
    yield n


def _mark(directory: str, name: str, text: str) -> None:
    """Write ``directory/name`` atomically (a reader never sees it half written)."""
    path = os.path.join(directory, name)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
