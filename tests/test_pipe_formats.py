"""``skyctl pipe``: every ``--format`` × record type of the contract, on the ``local`` host.

Each test feeds the real ``skyctl`` a small input, reads its ``--output json``
values back, and compares them, types included, with the same records parsed
here with ``csv``/``json`` and converted by hand. The target functions check
on the remote that each record arrived as exactly the annotated type.
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from pipetools import assert_values, load_targets, pipe

pytestmark = pytest.mark.timeout(60)

T = load_targets()
Reading, Point = T.Reading, T.Point

TRUE, FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def parse_bool(text: str) -> bool:
    word = text.strip().lower()
    assert word in TRUE | FALSE, word
    return word in TRUE


def physical_lines(data: bytes) -> list[bytes]:
    """stdin split as the contract says: terminators removed, a final line without newline kept."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [line.removesuffix(b"\r") for line in lines]


def text_lines(data: bytes) -> list[str]:
    return [line.decode() for line in physical_lines(data.removeprefix(b"\xef\xbb\xbf"))]


def non_blank(data: bytes) -> list[str]:
    return [line for line in text_lines(data) if line.strip()]


def table(data: str, delimiter: str) -> list[list[str]]:
    return [row for row in csv.reader(io.StringIO(data, newline=""), delimiter=delimiter) if row]


# -- --format lines (the default) -----------------------------------------------------
LINES_STR = "héllo wörld\n  padded  \n\ttab\tinside\n\nemoji 🌡 and, commas\nlast\n".encode()


def test_lines_str_is_the_line_itself(local_config):
    assert_values(pipe(local_config, "echo_str", "-o", "json", input=LINES_STR), text_lines(LINES_STR))


def test_lines_bytes_is_the_raw_line_even_when_not_utf8(local_config):
    data = b"plain\n\xff\xfe raw bytes\r\n\ncaf\xc3\xa9\n"
    assert_values(pipe(local_config, "echo_bytes", "-o", "json", input=data), physical_lines(data))


def test_lines_int_strips_blanks(local_config):
    data = b"1\n -2 \n+3\n\n1000000000000000000000\n\t7\t\n"
    assert_values(pipe(local_config, "echo_int", "-o", "json", input=data), [int(s) for s in non_blank(data)])


def test_lines_float(local_config):
    data = b"1.5\n-2\n 3e2 \n0.1\n\n-0.0\n12345678.125\n"
    assert_values(pipe(local_config, "echo_float", "-o", "json", input=data), [float(s) for s in non_blank(data)])


def test_lines_bool_accepts_the_contract_words_in_any_case(local_config):
    data = b"true\nFalse\nYES\nno\n On \noff\n1\n0\n"
    assert_values(pipe(local_config, "echo_bool", "-o", "json", input=data), [parse_bool(s) for s in non_blank(data)])


DICTS = b'{"a": 1, "b": [true, null], "c": {"d": "\xc3\xa9"}}\n{}\n\n{"n": 1.5}\n'


def test_lines_dict_is_one_json_object_per_line(local_config):
    assert_values(pipe(local_config, "echo_dict", "-o", "json", input=DICTS), [json.loads(s) for s in non_blank(DICTS)])


def test_lines_list_is_one_json_array_per_line(local_config):
    data = b'[1, "two", 3.0]\n[]\n[[1], {"k": null}]\n'
    assert_values(pipe(local_config, "echo_list", "-o", "json", input=data), [json.loads(s) for s in non_blank(data)])


READINGS = b'{"sensor": "a", "value": 21.5, "ok": false}\n{"sensor": "b", "value": 19}\n\n{"value": -3.25, "sensor": "c"}\n'


def reading_from_json(line: str) -> Reading:
    obj = json.loads(line)
    return Reading(obj["sensor"], float(obj["value"]), obj.get("ok", True))


def test_lines_dataclass_is_filled_from_a_json_object(local_config):
    expected = [reading_from_json(s) for s in non_blank(READINGS)]
    assert_values(pipe(local_config, "echo_reading", "-o", "json", input=READINGS), expected)


POINTS = b'{"x": 1, "y": 2.5, "label": "p"}\n{"x": -4, "y": 0, "label": ""}\n'


def point_from_json(line: str) -> dict:
    obj = json.loads(line)
    return {"x": int(obj["x"]), "y": float(obj["y"]), "label": str(obj["label"])}


def test_lines_typeddict_is_filled_from_a_json_object(local_config):
    expected = [point_from_json(s) for s in non_blank(POINTS)]
    assert_values(pipe(local_config, "echo_point", "-o", "json", input=POINTS), expected)


# -- --format csv / tsv ----------------------------------------------------------------
FORMATS = [("csv", ","), ("tsv", "\t")]


def make(rows: list[list[str]], delimiter: str) -> str:
    out = io.StringIO(newline="")
    csv.writer(out, delimiter=delimiter, lineterminator="\n").writerows(rows)
    return out.getvalue()


SENSOR_ROWS = [
    ["timestamp", "sensor", "value", "ok", "unit"],
    ["2024-05-14T08:00:00Z", "greenhouse, east", "21.5", "true", "C"],
    ["2024-05-14T08:10:00Z", 'say "hi"', "19", "no", "C"],
    ["2024-05-14T08:20:00Z", "two\nlines", "-3.25", "1", "C"],
]


@pytest.fixture(params=FORMATS, ids=[f for f, _ in FORMATS])
def fmt(request):
    return request.param


def test_table_dict_maps_header_to_string_values(local_config, fmt):
    name, delimiter = fmt
    data = make(SENSOR_ROWS, delimiter)
    header, *rows = table(data, delimiter)
    expected = [dict(zip(header, row)) for row in rows]
    assert_values(pipe(local_config, "echo_dict", "--format", name, "-o", "json", input=data), expected)


def test_table_dict_values_are_coerced_to_the_value_type(local_config, fmt):
    name, delimiter = fmt
    data = make([["a", "b"], ["1", "-2"], ["30", "4"]], delimiter)
    header, *rows = table(data, delimiter)
    expected = [{k: int(v) for k, v in zip(header, row)} for row in rows]
    assert_values(pipe(local_config, "echo_dict_int", "--format", name, "-o", "json", input=data), expected)


def test_table_dataclass_takes_fields_by_header_name(local_config, fmt):
    name, delimiter = fmt
    data = make(SENSOR_ROWS, delimiter)
    header, *rows = table(data, delimiter)
    expected = [Reading(r["sensor"], float(r["value"]), parse_bool(r["ok"])) for r in (dict(zip(header, row)) for row in rows)]
    assert_values(pipe(local_config, "echo_reading", "--format", name, "-o", "json", input=data), expected)


def test_table_typeddict_takes_fields_by_header_name(local_config, fmt):
    name, delimiter = fmt
    data = make([["label", "y", "x"], ["p", "2.5", "1"], ["", "0", "-4"]], delimiter)
    header, *rows = table(data, delimiter)
    expected = [{"x": int(r["x"]), "y": float(r["y"]), "label": r["label"]} for r in (dict(zip(header, row)) for row in rows)]
    assert_values(pipe(local_config, "echo_point", "--format", name, "-o", "json", input=data), expected)


def test_table_list_is_the_rows_fields(local_config, fmt):
    name, delimiter = fmt
    data = make(SENSOR_ROWS, delimiter)
    _, *rows = table(data, delimiter)
    assert_values(pipe(local_config, "echo_list", "--format", name, "-o", "json", input=data), rows)


def test_table_typed_list_coerces_each_field(local_config, fmt):
    name, delimiter = fmt
    data = make([["a", "b", "c"], ["1", "2.5", "-3"], ["4", "5", "6e1"]], delimiter)
    _, *rows = table(data, delimiter)
    assert_values(pipe(local_config, "echo_list_float", "--format", name, "-o", "json", input=data),
                  [[float(v) for v in row] for row in rows])


def test_table_fixed_tuple_coerces_each_field(local_config, fmt):
    name, delimiter = fmt
    data = make([["n", "word"], ["1", "one"], ["-2", "two, too"]], delimiter)
    _, *rows = table(data, delimiter)
    assert_values(pipe(local_config, "echo_pair", "--format", name, "-o", "json", input=data),
                  [(int(n), w) for n, w in rows])


@pytest.mark.parametrize("column, target, convert", [
    ("value", "echo_float", float),
    ("sensor", "echo_str", str),
    ("timestamp", "echo_str", str),
])
def test_table_column_picks_one_value_per_row(local_config, fmt, column, target, convert):
    name, delimiter = fmt
    data = make(SENSOR_ROWS, delimiter)
    header, *rows = table(data, delimiter)
    expected = [convert(row[header.index(column)]) for row in rows]
    assert_values(pipe(local_config, target, "--format", name, "--column", column, "-o", "json", input=data), expected)


def test_table_int_column(local_config, fmt):
    name, delimiter = fmt
    data = make([["id", "name"], ["7", "a"], ["-12", "b"]], delimiter)
    header, *rows = table(data, delimiter)
    assert_values(pipe(local_config, "echo_int", "--format", name, "--column", "id", "-o", "json", input=data),
                  [int(row[0]) for row in rows])


def test_table_single_column_needs_no_column_flag(local_config, fmt):
    name, delimiter = fmt
    data = make([["value"], ["1"], ["2.5"], ["-3"]], delimiter)
    _, *rows = table(data, delimiter)
    assert_values(pipe(local_config, "echo_float", "--format", name, "-o", "json", input=data), [float(r[0]) for r in rows])


def test_table_several_columns_without_column_is_a_usage_error_naming_them(local_config, fmt):
    name, delimiter = fmt
    done = pipe(local_config, "echo_float", "--format", name, input=make(SENSOR_ROWS, delimiter))
    assert done.returncode == 2
    assert "--column" in done.stderr and "value" in done.stderr


def test_no_header_reads_the_first_row_as_data(local_config, fmt):
    name, delimiter = fmt
    data = make([["1", "one"], ["2", "two"]], delimiter)
    assert_values(pipe(local_config, "echo_pair", "--format", name, "--no-header", "-o", "json", input=data),
                  [(int(n), w) for n, w in table(data, delimiter)])


def test_no_header_fills_a_dataclass_by_position(local_config, fmt):
    name, delimiter = fmt
    data = make([["a", "1.5", "false"], ["b", "2"]], delimiter)
    expected = [Reading(r[0], float(r[1]), *(parse_bool(v) for v in r[2:])) for r in table(data, delimiter)]
    assert_values(pipe(local_config, "echo_reading", "--format", name, "--no-header", "-o", "json", input=data), expected)


def test_no_header_column_is_a_number(local_config, fmt):
    name, delimiter = fmt
    data = make([["x", "1.5"], ["y", "-2"]], delimiter)
    assert_values(pipe(local_config, "echo_float", "--format", name, "--no-header", "--column", "2", "-o", "json", input=data),
                  [float(r[1]) for r in table(data, delimiter)])


def test_no_header_single_column(local_config, fmt):
    name, delimiter = fmt
    data = make([["3"], ["4"]], delimiter)
    assert_values(pipe(local_config, "echo_int", "--format", name, "--no-header", "-o", "json", input=data), [3, 4])


def test_a_bad_csv_row_is_numbered_by_its_physical_line_header_included(local_config):
    data = "value\n1\n2\n\nabc\n5\n"
    done = pipe(local_config, "echo_float", "--format", "csv", input=data)
    assert done.returncode == 65
    assert done.stdout == "1.0\n2.0\n"
    assert "stdin line 5: cannot read 'abc' as float for parameter 'data'" in done.stderr


@pytest.mark.parametrize("target, flags, first", [
    ("echo_float", ("--column", "value"), "3.0"),
    ("echo_dict", (), '{"a":"5","b":"a","value":"3.0"}'),
], ids=["column", "dict"])
def test_a_csv_row_with_more_fields_than_the_header_is_a_bad_record_quoting_the_extra_field(host_config, target, flags, first):
    data = "a,b,value\n5,a,3.0\n5,a,3.0,extra\n6,b,4.0\n"
    done = pipe(host_config, target, "--format", "csv", *flags, input=data)
    assert done.returncode == 65, done.stderr
    assert done.stdout == first + "\n"
    assert "error: stdin line 3: 4 fields, the header has 3: extra field 'extra'\n" in done.stderr
    assert "5,a,3.0" not in done.stderr  # the field, not the row

    skipped = pipe(host_config, target, "--format", "csv", *flags, "--on-bad-line", "skip", input=data)
    assert skipped.returncode == 0, skipped.stderr
    assert len(skipped.stdout.splitlines()) == 2
    assert "warning: stdin line 3: 4 fields, the header has 3: extra field 'extra'\n" in skipped.stderr


# -- --format jsonl ---------------------------------------------------------------------
def test_jsonl_int(local_config):
    data = b"1\n-2\n\n 30 \n"
    assert_values(pipe(local_config, "echo_int", "--format", "jsonl", "-o", "json", input=data),
                  [json.loads(s) for s in non_blank(data)])


def test_jsonl_float_accepts_ints(local_config):
    data = b"1\n2.5\n-3\n1e2\n"
    assert_values(pipe(local_config, "echo_float", "--format", "jsonl", "-o", "json", input=data),
                  [float(json.loads(s)) for s in non_blank(data)])


def test_jsonl_float_rejects_a_string(local_config):
    done = pipe(local_config, "echo_float", "--format", "jsonl", input=b'1\n"2"\n')
    assert done.returncode == 65
    assert done.stdout == "1.0\n"
    assert "stdin line 2: cannot read '\"2\"' as float for parameter 'data'" in done.stderr


def test_jsonl_dict(local_config):
    assert_values(pipe(local_config, "echo_dict", "--format", "jsonl", "-o", "json", input=DICTS),
                  [json.loads(s) for s in non_blank(DICTS)])


def test_jsonl_list(local_config):
    data = b'[1, 2]\n["a", null, {"b": false}]\n'
    assert_values(pipe(local_config, "echo_list", "--format", "jsonl", "-o", "json", input=data),
                  [json.loads(s) for s in non_blank(data)])


def test_jsonl_dataclass(local_config):
    assert_values(pipe(local_config, "echo_reading", "--format", "jsonl", "-o", "json", input=READINGS),
                  [reading_from_json(s) for s in non_blank(READINGS)])


def test_jsonl_typeddict(local_config):
    assert_values(pipe(local_config, "echo_point", "--format", "jsonl", "-o", "json", input=POINTS),
                  [point_from_json(s) for s in non_blank(POINTS)])


# -- framing: BOM, CRLF, final line without newline, blank lines ---------------------
EDGES = b"\xef\xbb\xbffirst\r\n\r\n  \nsecond\n\nlast without newline"


def test_framing_for_str_keeps_blank_lines_as_records(local_config):
    expected = ["first", "", "  ", "second", "", "last without newline"]
    assert text_lines(EDGES) == expected
    assert_values(pipe(local_config, "echo_str", "-o", "json", input=EDGES), expected)


def test_framing_for_bytes_drops_the_bom_and_terminators_only(local_config):
    assert_values(pipe(local_config, "echo_bytes", "-o", "json", input=EDGES),
                  [b"first", b"", b"  ", b"second", b"", b"last without newline"])


def test_framing_for_numbers_skips_blank_lines(local_config):
    data = b"\xef\xbb\xbf1\r\n\r\n \t \n2\n\n3"
    assert_values(pipe(local_config, "echo_int", "-o", "json", input=data), [1, 2, 3])


def test_framing_for_csv_with_bom_crlf_and_no_final_newline(local_config):
    data = b"\xef\xbb\xbfsensor,value\r\na,1.5\r\n\r\nb,2"
    assert_values(pipe(local_config, "echo_reading", "--format", "csv", "-o", "json", input=data),
                  [Reading("a", 1.5), Reading("b", 2.0)])


def test_framing_for_jsonl_skips_blank_lines_and_reads_a_final_line(local_config):
    data = b'\xef\xbb\xbf{"a": 1}\r\n\r\n{"b": 2}'
    assert_values(pipe(local_config, "echo_dict", "--format", "jsonl", "-o", "json", input=data), [{"a": 1}, {"b": 2}])


def test_text_output_renders_records_per_the_contract(local_config):
    done = pipe(local_config, "echo_reading", "--format", "jsonl", input=READINGS)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [repr(reading_from_json(s)) for s in non_blank(READINGS)]
    done = pipe(local_config, "echo_dict", input=DICTS)
    assert done.stdout.splitlines() == [json.dumps(json.loads(s), separators=(",", ":"), ensure_ascii=False) for s in non_blank(DICTS)]


def test_a_header_missing_a_dataclass_field_is_a_usage_error_with_did_you_mean(local_config):
    done = pipe(local_config, "echo_reading", "--format", "csv", input="sensr,value\na,1\n")
    assert done.returncode == 2
    assert "stdin's header has no column for field 'sensor' of Reading" in done.stderr
    assert "should column 'sensr' be 'sensor'?" in done.stderr
    assert done.stdout == ""
