"""skyctl.records: stdin → typed records, one test per rule of the contract's "How one record becomes a T".

Liveness is tested on a real ``os.pipe()``: a value must come out while the
write end is still open (a thread and a queue timeout, never a sleep).
"""

from __future__ import annotations

import dataclasses
import enum
import io
import os
import queue
import threading
from collections.abc import Iterator
from typing import Any, Optional, TypedDict

import pytest

from skyctl.errors import BadRecord, ExitStatus, UsageError
from skyctl.records import FORMATS, RecordReader


@dataclasses.dataclass
class Point:
    x: int
    y: float
    label: str = ""


class Row(TypedDict):
    name: str
    score: float


class Color(enum.Enum):
    RED = "red"


def read(data: bytes, item_type: object, **options: Any) -> list[object]:
    return list(RecordReader(io.BufferedReader(io.BytesIO(data)), item_type, **options))


def bad(data: bytes, item_type: object, **options: Any) -> BadRecord:
    with pytest.raises(BadRecord) as caught:
        read(data, item_type, **options)
    return caught.value


def test_formats() -> None:
    assert FORMATS == ("lines", "csv", "tsv", "jsonl")


# --------------------------------------------------------------------------- liveness and laziness


def _next_in_thread(iterator: Iterator[object]) -> queue.Queue[object]:
    results: queue.Queue[object] = queue.Queue()

    def pull() -> None:
        try:
            results.put(next(iterator))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            results.put(exc)

    threading.Thread(target=pull, daemon=True).start()
    return results


@pytest.mark.parametrize(
    ("fmt", "item_type", "first_write", "value"),
    [
        ("lines", str, b"hello\n", "hello"),
        ("lines", float, b"1.5\n", 1.5),
        ("jsonl", dict, b'{"a": 1}\n', {"a": 1}),
        ("csv", Point, b"x,y\n1,2\n", Point(1, 2.0)),
    ],
)
def test_a_line_becomes_a_value_while_stdin_is_still_open(fmt: str, item_type: object, first_write: bytes, value: object) -> None:
    read_fd, write_fd = os.pipe()
    with open(read_fd, "rb") as reader_end, open(write_fd, "wb", buffering=0) as writer_end:
        records = iter(RecordReader(reader_end, item_type, fmt=fmt))
        writer_end.write(first_write)
        assert _next_in_thread(records).get(timeout=10) == value
        later = _next_in_thread(records)
        writer_end.write(first_write.splitlines(keepends=True)[-1])
        assert later.get(timeout=10) == value


class EndlessStdin:
    """``yes | skyctl pipe``: a stream that never ends, counting the lines taken from it."""

    def __init__(self) -> None:
        self.lines_given = 0

    def readline(self) -> bytes:
        self.lines_given += 1
        return b"y\n"


def test_records_are_read_lazily_one_at_a_time() -> None:
    stream = EndlessStdin()
    records = iter(RecordReader(stream, str))  # type: ignore[arg-type]
    assert [next(records) for _ in range(3)] == ["y", "y", "y"]
    assert stream.lines_given == 3


# --------------------------------------------------------------------------- --format lines


def test_lines_str_removes_lf_and_crlf_terminators_only() -> None:
    assert read(b"a\nb\r\nc\r\r\n", str) == ["a", "b", "c\r"]


def test_final_line_without_newline_is_a_record() -> None:
    assert read(b"a\nlast", str) == ["a", "last"]
    assert read(b"1\n2", int) == [1, 2]


def test_leading_bom_is_dropped() -> None:
    assert read(b"\xef\xbb\xbfhello\nworld\n", str) == ["hello", "world"]
    assert read(b"\xef\xbb\xbf1\n", int) == [1]
    assert read(b"\xef\xbb\xbfa,b\n1,2\n", dict, fmt="csv") == [{"a": "1", "b": "2"}]


def test_bom_only_at_the_start() -> None:
    assert read(b"a\n\xef\xbb\xbfb\n", str) == ["a", "\ufeffb"]


def test_input_is_utf8() -> None:
    assert read("héllo\n日本\n".encode(), str) == ["héllo", "日本"]


def test_blank_lines_are_records_for_str_and_bytes() -> None:
    assert read(b"a\n\n  \nb\n", str) == ["a", "", "  ", "b"]
    assert read(b"a\n\r\nb\n", bytes) == [b"a", b"", b"b"]


@pytest.mark.parametrize("item_type", [int, float, bool, dict, Point, Color, Optional[int]])
def test_blank_lines_are_skipped_for_other_types(item_type: object) -> None:
    data = {int: b"1\n\n 2 \n   \n", float: b"1\n\n2\n", bool: b"yes\n\nno\n", dict: b'{"a":1}\n\n{}\n',
            Point: b'{"x":1,"y":2}\n\n', Color: b"red\n\t\n", Optional[int]: b"1\n\nnull\n"}[item_type]
    values = read(data, item_type)
    assert len(values) == {int: 2, float: 2, bool: 2, dict: 2, Point: 1, Color: 1, Optional[int]: 2}[item_type]


def test_bytes_is_the_raw_line() -> None:
    assert read(b"\xff\xfe raw\r\nnext", bytes) == [b"\xff\xfe raw", b"next"]


@pytest.mark.parametrize(
    ("data", "item_type", "values"),
    [
        (b" 10 \n-3\t\n", int, [10, -3]),
        (b" 2.5\n1e3 \n", float, [2.5, 1000.0]),
        (b" TRUE \noff\n1\n", bool, [True, False, True]),
    ],
)
def test_numbers_and_bools_are_parsed_after_stripping_blanks(data: bytes, item_type: object, values: list[object]) -> None:
    assert read(data, item_type) == values


@pytest.mark.parametrize(
    ("data", "item_type", "values"),
    [
        (b'{"a": 1}\n', dict, [{"a": 1}]),
        (b"[1, 2]\n", list, [[1, 2]]),
        (b"[1, 2]\n", list[float], [[1.0, 2.0]]),
        (b'{"x": 1, "y": 2}\n', Point, [Point(1, 2.0)]),
        (b'{"name": "a", "score": 1}\n', Row, [{"name": "a", "score": 1.0}]),
    ],
)
def test_lines_of_containers_are_json(data: bytes, item_type: object, values: list[object]) -> None:
    assert read(data, item_type) == values


@pytest.mark.parametrize("item_type", [Any, object])
def test_any_reads_lines_as_str(item_type: object) -> None:
    assert read(b"1\n[2]\n", item_type) == ["1", "[2]"]


def test_enum_by_value_per_line() -> None:
    assert read(b"red\n", Color) == [Color.RED]


# --------------------------------------------------------------------------- bad records


def test_bad_record_message_is_the_contracts() -> None:
    data = b"".join(b"%d.5\n" % i for i in range(16)) + b"abc\n1\n"
    error = bad(data, float)
    assert error.message == "stdin line 17: cannot read 'abc' as float for parameter 'data'"
    assert error.line == 17
    assert error.exit_status == ExitStatus.BAD_RECORD
    assert "--on-bad-line skip" in (error.hint or "")


def test_bad_record_names_the_parameter_and_type() -> None:
    error = bad(b"x\n", list[int], param="rows")
    assert error.message == "stdin line 1: cannot read 'x' as list[int] for parameter 'rows'"


def test_line_numbers_count_blank_lines() -> None:
    assert bad(b"1\n\n\n2\nx\n", int).line == 5


def test_values_before_a_bad_record_are_produced() -> None:
    records = iter(RecordReader(io.BufferedReader(io.BytesIO(b"1\n2\nx\n")), int))
    assert [next(records), next(records)] == [1, 2]
    with pytest.raises(BadRecord):
        next(records)


def test_invalid_utf8_is_a_bad_record() -> None:
    error = bad(b"ok\n\xff\xfebad\n", str)
    assert error.message == "stdin line 2: cannot read '\\\\xff\\\\xfebad' as str for parameter 'data'"
    assert "UTF-8" in (error.hint or "")


def test_long_records_are_cut_in_messages() -> None:
    error = bad(b"x" * 5000 + b"\n", int)
    assert len(error.message) < 200 and error.message.endswith("… as int for parameter 'data'")


def test_skip_mode_warns_about_the_first_five_and_counts_the_rest() -> None:
    warnings: list[str] = []
    data = b"".join(b"bad%d\n1\n" % i for i in range(12))
    reader = RecordReader(io.BufferedReader(io.BytesIO(data)), int, on_bad_line="skip", warn=warnings.append)
    assert list(reader) == [1] * 12
    assert warnings == [f"stdin line {2 * i + 1}: cannot read 'bad{i}' as int for parameter 'data'" for i in range(5)]
    assert (reader.read, reader.skipped) == (12, 12)
    assert reader.summary() == "skipped 12 bad stdin records (5 shown above)"


def test_summary_is_none_without_skips_and_plain_when_all_were_shown() -> None:
    reader = RecordReader(io.BufferedReader(io.BytesIO(b"1\nx\n")), int, on_bad_line="skip", warn=lambda _: None)
    assert list(reader) == [1]
    assert reader.summary() == "skipped 1 bad stdin record"
    clean = RecordReader(io.BufferedReader(io.BytesIO(b"1\n")), int, on_bad_line="skip")
    list(clean)
    assert clean.summary() is None


def test_read_counts_values_produced() -> None:
    reader = RecordReader(io.BufferedReader(io.BytesIO(b"a\nb\nc\n")), str)
    records = iter(reader)
    next(records)
    assert reader.read == 1
    list(records)
    assert reader.read == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fmt": "cvs"}, "unknown --format 'cvs'"),
        ({"on_bad_line": "skipp"}, "unknown --on-bad-line 'skipp'"),
        ({"column": "a"}, "--column 'a' needs --format csv or tsv, got --format lines"),
    ],
)
def test_option_errors_are_usage_errors_before_reading(options: dict[str, Any], message: str) -> None:
    class Unreadable:
        def readline(self) -> bytes:
            raise AssertionError("read before the options were checked")

    with pytest.raises(UsageError) as caught:
        RecordReader(Unreadable(), int, **options)  # type: ignore[arg-type]
    assert caught.value.message == message


def test_unknown_format_suggests_the_closest() -> None:
    with pytest.raises(UsageError) as caught:
        RecordReader(io.BytesIO(), int, fmt="cvs")
    assert caught.value.hint == "did you mean 'csv'?"


# --------------------------------------------------------------------------- csv / tsv

POINTS_CSV = b"label,y,x,extra\nfirst,2.5,1,e\nsecond,3,4,e\n"


def test_csv_dataclass_fields_by_header_name() -> None:
    assert read(POINTS_CSV, Point, fmt="csv") == [Point(1, 2.5, "first"), Point(4, 3.0, "second")]


def test_csv_typeddict_fields_by_header_name() -> None:
    assert read(b"score,name\n1.5,a\n", Row, fmt="csv") == [{"name": "a", "score": 1.5}]


def test_csv_dict_maps_header_to_value() -> None:
    assert read(b"a,b\n1,x\n", dict, fmt="csv") == [{"a": "1", "b": "x"}]
    assert read(b"a,b\n1,2\n", dict[str, int], fmt="csv") == [{"a": 1, "b": 2}]


def test_csv_list_and_tuple_take_the_row_fields_coerced() -> None:
    assert read(b"a,b\n1,2\n", list[int], fmt="csv") == [[1, 2]]
    assert read(b"a,b\n1,x\n", tuple[int, str], fmt="csv") == [(1, "x")]
    assert read(b"a,b\n1,x\n", list, fmt="csv") == [["1", "x"]]


def test_csv_scalar_reads_the_only_column() -> None:
    assert read(b"price\n1.5\n2\n", float, fmt="csv") == [1.5, 2.0]


def test_csv_scalar_reads_the_column_named_by_column() -> None:
    assert read(b"a,price\nx,1.5\n", float, fmt="csv", column="price") == [1.5]
    assert read(b"a,price\nx,1.5\n", str, fmt="csv", column="a") == ["x"]


def test_csv_several_columns_without_column_is_a_usage_error_listing_them() -> None:
    with pytest.raises(UsageError) as caught:
        read(b"a,price\nx,1.5\n", float, fmt="csv")
    assert caught.value.message == "stdin has 2 columns (a, price) but parameter 'data' takes one float per record"
    assert caught.value.hint == "pick one with --column, e.g. --column a (columns: a, price)"


def test_csv_unknown_column_suggests_the_closest() -> None:
    with pytest.raises(UsageError) as caught:
        read(b"a,price\nx,1.5\n", float, fmt="csv", column="prise")
    assert caught.value.message == "--column 'prise' is not a column of stdin (columns: a, price)"
    assert caught.value.hint == "did you mean 'price'?"


def test_csv_header_without_a_dataclass_field_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as caught:
        read(b"x,yy\n1,2\n", Point, fmt="csv")
    assert caught.value.message == "stdin's header has no column for field 'y' of Point (columns: x, yy)"
    assert caught.value.hint == "should column 'yy' be 'y'? the header must name the fields: x, y, label"


def test_csv_header_is_line_one() -> None:
    error = bad(b"price\n1\noops\n", float, fmt="csv")
    assert error.message == "stdin line 3: cannot read 'oops' as float for parameter 'data'"


def test_csv_multiline_quoted_field_is_one_record_numbered_by_its_first_line() -> None:
    data = b'label,y,x\n"two\nlines",1,2\nbad,z,3\n'
    records = iter(RecordReader(io.BufferedReader(io.BytesIO(data)), Point, fmt="csv"))
    assert next(records) == Point(2, 1.0, "two\nlines")
    with pytest.raises(BadRecord) as caught:
        next(records)
    assert caught.value.line == 4
    # the field that failed is quoted, under its column, not the whole row
    assert caught.value.message == "stdin line 4, column 'y': cannot read 'z' as float (Point.y) for parameter 'data'"


def test_csv_record_line_numbers_after_blank_lines_and_crlf() -> None:
    data = b"price\r\n1\r\n\r\n2\r\noops\r\n"
    assert bad(data, float, fmt="csv").line == 5


@dataclasses.dataclass
class Sample:
    a: int
    b: str
    value: float


#: ``T`` (with its options) for every way a CSV row is read: one rule for all of them
ROW_READERS = [
    pytest.param(float, {"column": "value"}, id="float-column"),
    pytest.param(str, {"column": "b"}, id="str-column"),
    pytest.param(dict, {}, id="dict"),
    pytest.param(dict[str, str], {}, id="dict-str-str"),
    pytest.param(Any, {}, id="any"),
    pytest.param(Sample, {}, id="dataclass"),
    pytest.param(list[str], {}, id="list"),
    pytest.param(tuple[int, str, float], {}, id="tuple"),
]


@pytest.mark.parametrize("item_type, options", ROW_READERS)
def test_csv_row_with_more_fields_than_the_header_is_a_bad_record_quoting_the_extra_field(item_type: object, options: dict[str, Any]) -> None:
    data = b"a,b,value\n5,a,3.0\n5,a,3.0,extra\n6,b,4.0\n"
    error = bad(data, item_type, fmt="csv", **options)
    assert (error.line, error.message) == (3, "stdin line 3: 4 fields, the header has 3: extra field 'extra'")
    assert error.exit_status == ExitStatus.BAD_RECORD

    warnings: list[str] = []
    values = read(data, item_type, fmt="csv", on_bad_line="skip", warn=warnings.append, **options)
    assert len(values) == 2
    assert warnings == ["stdin line 3: 4 fields, the header has 3: extra field 'extra'"]


@pytest.mark.parametrize("item_type, options", ROW_READERS)
def test_csv_row_with_fewer_fields_than_the_header_is_a_bad_record_naming_the_empty_column(item_type: object, options: dict[str, Any]) -> None:
    error = bad(b"a,b,value\n5,a\n", item_type, fmt="csv", **options)
    assert error.message == "stdin line 2: 2 fields, the header has 3: no value for column 'value'"


def test_csv_row_with_many_extra_fields_quotes_the_first_three() -> None:
    error = bad(b"a\n1,x,y,z,w\n", int, fmt="csv", column="a")
    assert error.message == "stdin line 2: 5 fields, the header has 1: extra fields 'x', 'y', 'z', …"


@pytest.mark.parametrize("item_type, options, message", [
    (float, {"column": "value"}, "stdin line 2, column 'value': cannot read 'x' as float for parameter 'data'"),
    (dict[str, float], {}, "stdin line 2, column 'value': cannot read 'x' as float (in dict[str, float]) for parameter 'data'"),
    (Sample, {}, "stdin line 2, column 'value': cannot read 'x' as float (Sample.value) for parameter 'data'"),
    (tuple[int, str, float], {}, "stdin line 2, column 'value': cannot read 'x' as float (in tuple[int, str, float]) for parameter 'data'"),
    (list[float], {"header": False}, "stdin line 2, field 1: cannot read 'a' as float (in list[float]) for parameter 'data'"),
])
def test_a_bad_csv_field_is_quoted_alone_with_its_column(item_type: object, options: dict[str, Any], message: str) -> None:
    data = b"a,b,value\n5,6,x\n" if options.get("header", True) else b"1,2\na,2\n"
    assert bad(data, item_type, fmt="csv", **options).message == message


def test_csv_malformed_quoting_is_a_bad_record_and_reading_goes_on() -> None:
    warnings: list[str] = []
    values = read(b'a,b\n"x"y,1\nok,2\n', dict, fmt="csv", on_bad_line="skip", warn=warnings.append)
    assert values == [{"a": "ok", "b": "2"}]
    assert warnings and warnings[0].startswith("stdin line 2: ")


def test_csv_empty_field_is_none_for_optional_fields() -> None:
    @dataclasses.dataclass
    class Reading:
        sensor: str
        value: Optional[float]

    assert read(b"sensor,value\na,\nb,2\n", Reading, fmt="csv") == [Reading("a", None), Reading("b", 2.0)]


def test_tsv_is_tab_separated() -> None:
    assert read(b"x\ty\tlabel\n1\t2\ta b,c\n", Point, fmt="tsv") == [Point(1, 2.0, "a b,c")]


def test_no_header_first_row_is_data() -> None:
    assert read(b"1,2\n3,4\n", list[int], fmt="csv", header=False) == [[1, 2], [3, 4]]
    assert read(b"5\n6\n", int, fmt="csv", header=False) == [5, 6]


def test_no_header_column_by_number_and_dataclass_by_position() -> None:
    assert read(b"x,1.5\n", float, fmt="csv", header=False, column="2") == [1.5]
    assert read(b"1,2\n3,4,c\n", Point, fmt="csv", header=False) == [Point(1, 2.0), Point(3, 4.0, "c")]


def test_no_header_several_columns_without_column_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        read(b"1,2\n", int, fmt="csv", header=False)


def test_no_header_dict_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        RecordReader(io.BytesIO(), dict, fmt="csv", header=False)


def test_csv_any_gives_dicts_with_a_header_and_lists_without() -> None:
    assert read(b"a,b\n1,2\n", Any, fmt="csv") == [{"a": "1", "b": "2"}]
    assert read(b"1,2\n", Any, fmt="csv", header=False) == [["1", "2"]]


def test_csv_empty_input_gives_no_records() -> None:
    assert read(b"", Point, fmt="csv") == []
    assert read(b"x,y\n", Point, fmt="csv") == []


# --------------------------------------------------------------------------- jsonl


def test_jsonl_an_int_is_a_valid_float() -> None:
    values = read(b"1\n2.5\n", float, fmt="jsonl")
    assert values == [1.0, 2.5] and all(type(v) is float for v in values)


def test_jsonl_object_fills_a_dataclass_and_a_typeddict() -> None:
    assert read(b'{"x": 1, "y": 2}\n', Point, fmt="jsonl") == [Point(1, 2.0)]
    assert read(b'{"name": "a", "score": 2}\n', Row, fmt="jsonl") == [{"name": "a", "score": 2.0}]


def test_jsonl_value_of_the_wrong_type_is_a_bad_record_saying_why() -> None:
    error = bad(b'{"x": 1, "y": 2}\n{"x": "a", "y": 2}\n', Point, fmt="jsonl")
    assert error.message == """stdin line 2: cannot read '{"x": "a", "y": 2}' as Point for parameter 'data'"""
    assert error.hint is not None and error.hint.startswith("""field 'x': expected int, got "a";""")


def test_jsonl_values_are_checked_not_converted_from_strings() -> None:
    assert bad(b'"5"\n', int, fmt="jsonl").line == 1
    assert read(b'"5"\n', str, fmt="jsonl") == ["5"]


def test_jsonl_invalid_json_is_a_bad_record() -> None:
    error = bad(b"{oops\n", dict, fmt="jsonl")
    assert error.message == "stdin line 1: cannot read '{oops' as dict for parameter 'data'"
    assert error.hint is not None and error.hint.startswith("not valid JSON: ")


def test_jsonl_blank_lines_are_skipped_and_any_is_the_json_value() -> None:
    assert read(b'1\n\n"a"\n[1]\n', Any, fmt="jsonl") == [1, "a", [1]]


def test_a_dataclass_refusing_its_values_is_a_bad_record() -> None:
    @dataclasses.dataclass
    class Positive:
        n: int

        def __post_init__(self) -> None:
            assert self.n > 0, "n must be positive"

    assert bad(b"n\n1\n-1\n", Positive, fmt="csv").line == 3
    assert bad(b'{"n": -1}\n', Positive, fmt="jsonl").hint.startswith("AssertionError: n must be positive")  # type: ignore[union-attr]


class TestBatchesMatchIteration:
    """``batches()`` (the chunked fast path the pipe feeder uses) yields exactly what iteration does."""

    CASES = [
        b"a\nb\nc\n",
        b"a\r\nb\r\n\r\nlast",
        b"\xef\xbb\xbfbom\nx\n",
        b"\xef\xbb",
        b"",
        b"\n\n\n",
        b"a\r\r\nb\rc\n",
        b"good\n\xff\xfe bad\nafter\n",
        "caf\u00e9\n\u00fc\n".encode(),
    ]

    @pytest.mark.parametrize("data", CASES)
    @pytest.mark.parametrize("item_type", [str, bytes])
    def test_same_values(self, data: bytes, item_type: type) -> None:
        import io

        warnings: list[str] = []
        expected = list(RecordReader(io.BytesIO(data), item_type, on_bad_line="skip", warn=warnings.append))
        got_warnings: list[str] = []
        reader = RecordReader(io.BufferedReader(io.BytesIO(data), buffer_size=2), item_type, on_bad_line="skip", warn=got_warnings.append)
        got = [v for batch in reader.batches() for v in batch]
        assert got == expected
        assert got_warnings == warnings
        assert reader.read == len(expected)

    NUMBER_CASES = [
        b"1\n2\n3\n",
        b"1\r\n 2 \r\n\r\n-3\n",
        "\uff11\n\u0662\n7\n".encode(),  # digits beyond ASCII: int("\uff11") is 1, int(b"...") refuses
        b"1_000\n+5\n0x10\n",
        b"4\n\xff\n5\n",
        b"1.5\nnan\n-inf\n1e3\n",
        b"1\x1c\n2\n",  # a separator str.strip() removes and bytes.strip() does not
        # what a JSON array of the lines would read differently from int() line by line
        b"1,2\n3\n",  # a comma: two JSON numbers on one line
        b"[1\n2]\n",  # brackets: one nested array
        b"1]\n[2\n",
        b"007\n-0\n 8\t\n",  # leading zeros are not JSON; -0; JSON's whitespace
        b"true\nnull\n\"4\"\n1.0\n",  # JSON values that are not ints
        b"\x00\n1\n",  # what would make json guess UTF-16 from bytes
        b"[" * 5000 + b"\n1\n",  # deeper than the JSON decoder recurses
        b"9" * 5000 + b"\n1\n",  # over int()'s digit limit
    ]

    @pytest.mark.parametrize("data", NUMBER_CASES)
    @pytest.mark.parametrize("item_type", [int, float])
    def test_same_numbers(self, data: bytes, item_type: type) -> None:
        import io

        warnings: list[str] = []
        expected = list(RecordReader(io.BytesIO(data), item_type, on_bad_line="skip", warn=warnings.append))
        got_warnings: list[str] = []
        reader = RecordReader(io.BytesIO(data), item_type, on_bad_line="skip", warn=got_warnings.append)
        got = [v for batch in reader.batches() for v in batch]
        assert repr(got) == repr(expected)
        assert got_warnings == warnings
        assert reader.read == len(expected)

    def test_a_line_comes_out_before_more_input(self) -> None:
        import os
        import threading

        r, w = os.pipe()
        reader = RecordReader(os.fdopen(r, "rb"), str)
        batches = reader.batches()
        os.write(w, b"first\n")
        result: list[object] = []
        t = threading.Thread(target=lambda: result.append(next(batches)), daemon=True)
        t.start()
        t.join(10)
        os.close(w)
        assert [list(batch) for batch in result] == [["first"]]


class TestABadLineAfterGoodOnes:
    """Under ``--on-bad-line fail`` every record before the bad one is handed on, then ``BadRecord``:
    in one chunk of stdin or many, for every format (the ``LineBatch`` path for ``str`` too)."""

    @staticmethod
    def _until_bad(data: bytes, item_type: object, **options: Any) -> tuple[list[object], BadRecord]:
        reader = RecordReader(io.BytesIO(data), item_type, **options)
        values: list[object] = []
        with pytest.raises(BadRecord) as caught:
            for batch in reader.batches():
                values.extend(batch)
        assert reader.read == len(values)
        return values, caught.value

    @pytest.mark.parametrize("good", [0, 2, 20_000])
    @pytest.mark.parametrize("item_type, fmt, header", [
        (str, "lines", b""), (int, "lines", b""), (float, "lines", b""), (int, "jsonl", b""), (int, "csv", b"n\n"),
    ])
    def test_every_record_before_a_bad_utf8_line_comes_out(self, good: int, item_type: type, fmt: str, header: bytes) -> None:
        lines = [str(i).encode() for i in range(good)]
        data = header + b"\n".join(lines + [b"\xff", b"7"]) + b"\n"
        values, error = self._until_bad(data, item_type, fmt=fmt)
        expected = [item_type(line.decode()) for line in lines]
        assert len(values) == good and values == expected  # (no diff of 20,000 values on failure)
        assert error.line == good + 1 + bool(header)
        assert "UTF-8" in (error.hint or "")

    def test_in_the_last_line_without_a_newline(self) -> None:
        values, error = self._until_bad(b"a\nb\n\xff", str)
        assert (values, error.line) == (["a", "b"], 3)


class TestLineChunks:
    """``lines`` into ``str``: a chunk of valid UTF-8 travels as it was read, without a str per line."""

    def _batches(self, data: bytes) -> list[object]:
        import io

        return list(RecordReader(io.BytesIO(data), str).batches())

    def test_valid_utf8_lines_come_as_one_line_batch(self) -> None:
        from skyctl.remote.flow import LineBatch

        (batch,) = self._batches("a\nü\n\nlast\n".encode())
        assert type(batch) is LineBatch
        assert list(batch) == ["a", "ü", "", "last"]

    @pytest.mark.parametrize("data, expected", [(b"a\r\nb\r\n", ["a", "b"]), (b"ok\n\xff\nfine\n", ["ok", "fine"])])
    def test_crlf_or_bad_utf8_fall_back_to_lists(self, data: bytes, expected: list[str]) -> None:
        import io

        reader = RecordReader(io.BytesIO(data), str, on_bad_line="skip", warn=lambda message: None)
        batches = list(reader.batches())
        assert all(type(batch) is list for batch in batches)
        assert [v for batch in batches for v in batch] == expected


class ReadlineOnly:
    """A stream without ``read1`` (a wrapped or custom stdin): records come a ``readline()`` at a time."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)

    def readline(self) -> bytes:
        return self._stream.readline()


@pytest.mark.parametrize("item_type, fmt", [(str, "lines"), (bytes, "lines"), (int, "lines"), (float, "lines"), (int, "jsonl"), (Any, "jsonl")])
@pytest.mark.parametrize("data", [b"1\n2\r\n\n x \n3", b"\xef\xbb\xbf7\n\xff\n8\n", b""])
def test_a_stream_without_read1_gives_what_a_buffered_one_does(item_type: object, fmt: str, data: bytes) -> None:
    """One read path: ``batches()`` (and so iteration) reads such a stream by lines, with the same
    values, warnings, counts and line numbers as the chunked read of a buffered stream."""
    outcomes = []
    for stream in (ReadlineOnly(data), io.BufferedReader(io.BytesIO(data), buffer_size=4)):
        warnings: list[str] = []
        reader = RecordReader(stream, item_type, fmt=fmt, on_bad_line="skip", warn=warnings.append)  # type: ignore[arg-type]
        values = [value for batch in reader.batches() for value in batch]
        outcomes.append((repr(values), warnings, reader.read, reader.skipped))
    assert outcomes[0] == outcomes[1]
    iterated = list(RecordReader(ReadlineOnly(data), item_type, fmt=fmt, on_bad_line="skip", warn=lambda _: None))  # type: ignore[arg-type]
    assert repr(iterated) == outcomes[0][0]
