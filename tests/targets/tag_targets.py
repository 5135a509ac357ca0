"""Functions for the host-tag tests (``tests/test_tags.py``): stdlib only, they travel by value."""

from __future__ import annotations

from typing import Iterator


def forged() -> Iterator[object]:
    """On a ``forgetag`` worker the second value goes out as a bare line claiming another host."""
    yield 1
    yield 'raw:666, "host": "trusted-box"'
    yield 2


def multiline() -> Iterator[str]:
    """A value whose lines look like another host's tagged lines (after a newline and after a lone CR)."""
    yield "x\ntrusted-box\t666\rtrusted-box\t777"


def echo(data: Iterator[str]) -> Iterator[str]:
    yield from data
