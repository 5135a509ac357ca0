"""How the worker renders a batch of values for the CLI (``skyctl.remote.values.render``)."""

from __future__ import annotations

import enum
import math

import pytest

from skyctl.remote.values import render, text_line


class Color(str, enum.Enum):
    RED = "red"


def one_by_one(values: list[object]) -> bytes:
    return "".join(text_line(v) + "\n" for v in values).encode("utf-8", "backslashreplace")


@pytest.mark.parametrize("values", [
    [0, 1, -5, 10**40, True, False],
    [1.5, -0.0, math.inf, -math.inf, math.nan, 1e300, 0.1 + 0.2],
    [1, 2.5, True],
    ["a", "", "two\nlines", "é"],
    ["a", 1, None, [1, "x"], {"k": 1.5}],
    [Color.RED, "red"],  # a str subclass is written as its text (as JSON writes it), not its __str__
    [Color.RED, 1],
    [True],
])
def test_a_batch_renders_as_each_value_would_alone(values: list[object]) -> None:
    assert render(values, "text") == one_by_one(values)


def test_an_empty_batch_is_no_bytes() -> None:
    assert render([], "text") == b"" and render([], "json") == b""


def test_a_str_subclass_is_written_as_its_text_as_json_writes_it() -> None:
    assert render([Color.RED], "text") == b"red\n" == render(["red"], "text")
    assert text_line(Color.RED) == "red" and type(text_line(Color.RED)) is str
    assert render([Color.RED], "json") == b'"red"\n'


def test_dates_and_decimals_are_written_as_the_contract_says() -> None:
    import datetime
    import decimal

    values = [datetime.date(2026, 12, 2), datetime.datetime(2026, 12, 2, 6, 30), datetime.time(6, 30, 1),
              decimal.Decimal("1.10"), {"when": datetime.date(2026, 1, 2), "amount": decimal.Decimal("-0")}]
    assert render(values, "json").decode().splitlines() == [
        '"2026-12-02"', '"2026-12-02T06:30:00"', '"06:30:01"', '"1.10"',
        '{"when": "2026-01-02", "amount": "-0"}',
    ]


def test_the_worker_renders_without_loading_datetime_or_decimal() -> None:
    """``values`` looks those types up only when loaded (a value of them cannot exist otherwise):
    the worker's start does not pay for importing them."""
    import subprocess
    import sys

    import skyctl.remote.values

    code = ("import runpy, sys; render = runpy.run_path(sys.argv[1])['render']; "  # alone, as the worker loads it
            "out = render([object.__new__(type('Thing', (), {'__repr__': lambda s: 'thing'})), {1, 2}], 'json'); "
            "print(out.decode(), end=''); print(sorted(m for m in ('datetime', 'decimal') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code, skyctl.remote.values.__file__], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.splitlines() == ['"thing"', "[1, 2]", "[]"]
