"""Target functions for the ``--arg`` tests: each returns what it received, typed.

``show`` renders a value as ``TYPE VALUE`` (containers with their items' types),
so a test can tell ``1`` from ``1.0``, ``'1'`` and ``True``.
"""

from __future__ import annotations

import collections.abc
import enum
from pathlib import Path
from typing import Iterator, Literal, Optional


def show(value: object) -> str:
    if isinstance(value, (set, frozenset)):
        return f"{type(value).__name__} {sorted(value)!r}"
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    return f"{type(value).__name__} {value!r}"


class Color(enum.Enum):
    RED = "red"
    GREEN = 2


def f_int(value: int) -> str:
    return show(value)


def f_float(value: float) -> str:
    return show(value)


def f_str(value: str) -> str:
    return show(value)


def f_path(value: Path) -> str:
    return f"{isinstance(value, Path)} {value}"


def f_bool(value: bool) -> str:
    return show(value)


def f_optional(value: Optional[int]) -> str:
    return show(value)


def f_union_none(value: float | None) -> str:
    return show(value)


def f_list(value: list[int]) -> str:
    return show(value)


def f_tuple(value: tuple[float, ...]) -> str:
    return show(value)


def f_set(value: set[int]) -> str:
    return show(value)


def f_iterator(value: Iterator[int]) -> str:
    return f"{isinstance(value, collections.abc.Iterator)} {list(value)!r}"


def f_dict(value: dict[str, int]) -> str:
    return show(value)


def f_literal(value: Literal["fast", "slow", 3]) -> str:
    return show(value)


def f_enum(value: Color) -> str:
    return show(value)


def f_any(value) -> str:  # unannotated
    return show(value)


def defaults(a: int, b: str = "bee", c: Optional[list[int]] = None, d: float = 0.5) -> str:
    return f"{show(a)} | {show(b)} | {show(c)} | {show(d)}"


def required(count: int, name: str) -> str:
    return f"{count} {name}"
