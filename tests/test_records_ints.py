"""``records.lines.ints``: the fast path for a block of ``Iterator[int]`` lines takes
exactly what ``int()`` per line takes, with the same values, and leaves the rest to it."""

from __future__ import annotations

import random
import sys

import pytest

from skyctl.records.lines import ints


def slow(data: bytes) -> list[int] | type[Exception]:
    """What ``int()`` line by line gives: the values, or the exception type it raises."""
    try:
        return list(map(int, data.split(b"\n")))
    except ValueError:
        return ValueError


def fast(data: bytes) -> list[int] | type[Exception]:
    try:
        values = ints(data)
    except ValueError:
        return ValueError
    assert all(type(v) is int for v in values)
    return values


#: pieces a line is made of: what JSON and ``int()`` agree on, and what only one of them takes
PIECES = [b"0", b"7", b"12", b"-", b"-3", b"007", b"00", b" ", b"\t", b"\r", b"\x0b", b"\x0c", b"+", b"_", b"1_000",
          b"1.5", b"1e5", b"E", b".", b",", b"[", b"]", b"\"", b"true", b"null", b"NaN", b"Infinity", b"\xd9\xa3",
          b"\xff", b"\x00", b"9" * 30, b"-0", b"", b"{}", b"/", b"\\"]


@pytest.mark.parametrize("data", [
    b"", b" ", b"\t\r", b"\n", b"5\n", b"\n5", b"5", b"-5", b"-0", b"--5", b"5-", b"007", b"0x10", b" 42 ", b"42\r",
    b"1\n2\n3", b"1\n\n3", b"1,2", b"[1]", b"1 2", b"+5", b"1_000", b"\xd9\xa3", b"1.0", b"1e3", b"true", b"\x0b5",
    b"5\x0c", b"-", b"9" * 5000, b"1\n" + b"9" * 5000,
])
def test_ints_takes_what_int_takes(data: bytes) -> None:
    assert fast(data) == slow(data)


def test_ints_fuzz_against_int_per_line() -> None:
    rng = random.Random(20261207)
    for _ in range(20000):
        lines = [b"".join(rng.choices(PIECES, k=rng.randint(0, 3))) for _ in range(rng.randint(1, 6))]
        data = b"\n".join(lines)
        assert fast(data) == slow(data), data


def test_ints_plain_block_is_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A block of plain integers never reaches ``int()`` (the point of the fast path)."""
    data = b"\n".join(str(i).encode() for i in range(-50, 5000))
    calls = []
    real_int = int

    class Counting(int):
        def __new__(cls, *args: object) -> int:  # type: ignore[misc]
            calls.append(args)
            return real_int(*args)

    monkeypatch.setattr(sys.modules["skyctl.records.lines"], "int", Counting, raising=False)
    assert ints(data) == list(range(-50, 5000))
    assert calls == []


@pytest.mark.parametrize("item_type", [int, float, bool])
@pytest.mark.parametrize("data", [b"1\n2\n3\n", b"1\n\n3\n4", b"1\nx\n3\n", b"7", b"1\r\n2\r\n"])
def test_lines_span_of_a_converted_block(item_type: type, data: bytes) -> None:
    """A block's physical line range is the same whether it converted at once or line by line:
    from its first line to the one its newlines say."""
    import io

    from skyctl.records import RecordReader

    def reader() -> RecordReader:
        return RecordReader(io.BufferedReader(io.BytesIO(data)), item_type, on_bad_line="skip", warn=lambda _: None)

    expected = [(first, first + block.count(b"\n")) for first, block in reader()._line_chunks(decode=False, whole=True)]
    got = []
    r = reader()
    for batch in r.batches():
        got.append(r.lines_span)
    # a block that gave no value (all blank or bad) is not handed on: compare those handed on
    assert set(got) <= set(expected) and got == sorted(got)
    assert got == [span for span in expected if span in got]
    assert got or item_type is bool, "every case has a good int and float value"
