"""Functions for the trust-boundary tests (``tests/test_trust.py``): stdlib only, they travel by value."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import math
import operator
import subprocess  # a shipped module's imports: a remote must never reach a class through them
import sys
from typing import Iterator


@dataclasses.dataclass
class Point:
    x: float
    y: float


class Label:
    """A plain class of a shipped module: the API rebuilds it from the client's own copy."""

    def __init__(self, text: str) -> None:
        self.text = text


def one():
    yield 1


def add(a: int, b: int) -> int:
    return a + b


def fails() -> int:
    raise ValueError("remote failure")


def metrics():
    """A metrics stream with parts JSON cannot hold."""
    yield {"step": 1, "loss": math.nan}
    yield {"step": 2, "loss": math.inf, "best": -math.inf}
    yield {"when": datetime.date(2026, 12, 2), "at": datetime.datetime(2026, 12, 2, 8, 30),
           "amount": decimal.Decimal("1.10"), "point": Point(1.0, math.nan), "tags": {"a"}, "pair": (1, 2)}
    yield [math.nan, 1.5]


def controls():
    """Remote text with terminal control sequences in a value and on stderr."""
    print("\x1b[2Jcleared?", file=sys.stderr, flush=True)
    yield "\x1b]0;pwned\x07title"


def echo_str(data: Iterator[str]):
    yield from data


def make_point() -> Point:
    return Point(1.5, 2.5)


def make_values():
    yield Label("shipped")
    yield {"when": datetime.datetime(2026, 1, 2, 3, 4), "amount": decimal.Decimal("3.14"), "pair": (1, 2)}


def sorted_points(points: list[Point]) -> list[Point]:
    return sorted(points, key=operator.attrgetter("x"))


def git_version() -> str:
    return subprocess.run(["git", "--version"], capture_output=True, text=True).stdout


def exits() -> int:
    """A remote ``SystemExit``: it must not end the client's script."""
    raise SystemExit(0)


def interrupted():
    yield 1
    raise KeyboardInterrupt
