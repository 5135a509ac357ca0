"""How the worker drives a generator: without a wrapper only when its return value can only be None."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from skyctl.remote.worker import _returns_only_none


def yields_from(items: Iterator[Any]):
    yield from items


def loops(items: Iterator[Any]):
    for item in items:
        yield item


def bare_return(items: Iterator[Any]):
    yield 1
    if items:
        return
    yield 2


def returns_none_in_finally():
    try:
        yield 1
    finally:
        return None  # noqa: B012


def returns_a_constant():
    yield 1
    return 5


def returns_what_it_delegated_to(items: Iterator[Any]):
    result = yield from items
    return result


def returns_a_or_none(flag: bool, a: object):
    yield 1
    return a if flag else None  # one RETURN_VALUE that a jump lands on, after LOAD_CONST None


@pytest.mark.parametrize("fn", [yields_from, loops, bare_return, returns_none_in_finally])
def test_a_generator_that_returns_only_none_is_driven_as_it_is(fn) -> None:
    assert _returns_only_none(fn.__code__) is True


@pytest.mark.parametrize("fn", [returns_a_constant, returns_what_it_delegated_to, returns_a_or_none])
def test_a_generator_that_may_return_a_value_keeps_the_wrapper(fn) -> None:
    assert _returns_only_none(fn.__code__) is False
