"""stdin bytes → typed records for ``pipe``: framing, line numbers, bad-record policy.

Owns how one stdin record becomes a ``T`` (``--format lines|csv|tsv|jsonl``,
``--column``, ``--no-header``, ``--on-bad-line``); the per-value type rules
come from ``skyctl.coerce``. Imports only the stdlib and skyctl's own
``errors``/``coerce``/``flow`` (for ``LineBatch``).

Two properties matter more than anything else here:

- liveness: input is read with ``stream.readline()`` one record at a time, so
  a line written to stdin becomes a value at once, without waiting for more
  input or EOF (``BufferedReader.readline`` returns as soon as a newline is
  buffered);
- speed and flat memory: the converter is chosen once per reader, the plain
  ``str`` path is a tight loop, and nothing is ever accumulated.
"""

from __future__ import annotations

import collections.abc as cabc
import csv
import difflib
import json
import json.scanner
import pathlib
import sys
import typing
from itertools import chain, islice
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from skyctl.coerce import (
    CoercionError,
    is_any,
    is_record_class,
    json_converter,
    parse_bool,
    record_fields,
    strip_annotation,
    text_converter,
    type_name,
)
from skyctl.errors import BadRecord, UsageError, did_you_mean
from skyctl.flow import LineBatch

__all__ = ["FORMATS", "RecordReader", "print_to_stderr"]

#: the values of ``--format``
FORMATS = ("lines", "csv", "tsv", "jsonl")
#: the values of ``--on-bad-line``
BAD_LINE_POLICIES = ("fail", "skip")
#: bad records warned about in full under ``--on-bad-line skip``; the rest are only counted
SHOWN_BAD_RECORDS = 5
#: longest record text quoted in a message; longer ones are cut with an ellipsis
_SHOW_CHARS = 100

_BOM = b"\xef\xbb\xbf"
NoneType = type(None)
_UNION_ORIGINS = (typing.Union, type(int | None))
_MAPPING_ORIGINS = (dict, cabc.Mapping, cabc.MutableMapping)
_SEQUENCE_ORIGINS = (list, tuple, set, frozenset, cabc.Sequence, cabc.MutableSequence, cabc.Set, cabc.MutableSet)


def print_to_stderr(message: str) -> None:
    """Default ``warn``: one line on stderr (the CLI passes its own renderer)."""
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()


#: what ``RecordReader._record`` gives for a line that is not a record (blank, or bad and skipped)
_NO_VALUE = object()


class _Skip(Exception):
    """A blank record where blank lines are not records: dropped silently."""


class _BadAfter(Exception):
    """A bad record (``--on-bad-line fail``) part-way through a chunk: the
    records before it in the chunk, which are handed on before ``bad`` is raised."""

    def __init__(self, lines: list[object], bad: BadRecord) -> None:
        super().__init__(bad)
        self.lines = lines
        self.bad = bad


class _RowError(ValueError):
    """A CSV/TSV row that is not a ``T``, told by the field to blame rather than the whole row.

    ``where`` follows "stdin line N" in the message: ``", column 'value':
    cannot read 'x' as float …"`` or ``": 4 fields, the header has 3: extra
    field 'extra'"``; ``reason`` goes to the hint.
    """

    def __init__(self, where: str, reason: str | None = None) -> None:
        super().__init__(where)
        self.where = where
        self.reason = reason


_scan_json = json.scanner.make_scanner(json.JSONDecoder())


def _json_value(line: str) -> object:
    """One JSON value filling the whole line (blanks around allowed): ``json.loads`` minus its per-call overhead.

    Calling the decoder's scanner directly is ~3x faster per short line and
    raises the same ``JSONDecodeError``s.
    """
    text = line.strip()
    try:
        value, end = _scan_json(text, 0)
    except StopIteration as stop:
        raise json.JSONDecodeError("Expecting value", text, stop.value) from None
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def _show(text: str) -> str:
    return repr(text) if len(text) <= _SHOW_CHARS else repr(text[:_SHOW_CHARS]) + "…"


def _noun(count: int, noun: str) -> str:
    return noun if count == 1 else noun + "s"


def _listed(shown: Iterable[str], most: int = 3) -> str:
    """The first ``most`` of ``shown``, comma-separated, with "…" when there are more."""
    items = list(islice(shown, most + 1))
    return ", ".join(items[:most]) + (", …" if len(items) > most else "")


def _is_utf8(block: bytes) -> bool:
    if block.isascii():
        return True
    try:
        block.decode()
    except UnicodeDecodeError:
        return False
    return True


def _strip_terminator(line: str) -> str:
    """Exactly one ``\r\n`` or ``\n`` off the end (a final line may have neither; a stray ``\r`` stays)."""
    return line.removesuffix("\r\n").removesuffix("\n")


def _kind(item_type: object) -> str:
    """How a record maps to ``T``: "any", "str", "bytes", "scalar", or (whole rows / JSON lines) "mapping", "record", "sequence"."""
    if is_any(item_type) or item_type is None:
        return "any"
    if item_type is str:
        return "str"
    if item_type is bytes:
        return "bytes"
    if is_record_class(item_type):
        return "record"
    origin = typing.get_origin(item_type) or item_type
    if origin in _MAPPING_ORIGINS:
        return "mapping"
    if origin in _SEQUENCE_ORIGINS:
        return "sequence"
    return "scalar"


def _record_type(item_type: object) -> object:
    """``T`` as records see it: ``Annotated`` stripped, and ``Optional[container]`` read as the container.

    A stdin record is never "no value", so ``Iterator[dict | None]`` reads dicts.
    """
    item_type = strip_annotation(item_type)
    if typing.get_origin(item_type) in _UNION_ORIGINS:
        members = [a for a in typing.get_args(item_type) if a is not NoneType]
        if len(members) == 1 and _kind(strip_annotation(members[0])) in ("mapping", "record", "sequence"):
            return strip_annotation(members[0])
    return item_type


class RecordReader:
    """Reads stdin records lazily and yields them as values of the stream parameter's type.

    Args:
        stream: a binary stream (``sys.stdin.buffer``); only ``readline()`` is used.
        item_type: ``T`` of the ``Iterator[T]`` parameter (``Any`` or unannotated reads lines as ``str``).
        fmt: one of ``FORMATS`` (``--format``), default ``"lines"``.
        column: ``--column``: which CSV/TSV column a one-value ``T`` reads
            (a header name; with ``header=False``, a 1-based number).
        header: False for ``--no-header``: the first CSV/TSV row is data.
        param: the parameter's name, for messages.
        on_bad_line: ``"fail"`` raises ``BadRecord``; ``"skip"`` drops the record,
            ``warn``-ing about the first few and counting the rest.
        warn: where skip-mode warnings go (default: a line on stderr).

    Options that cannot work together are a ``UsageError`` here, before any
    input is read; CSV header problems (a missing column) are one on the
    first ``next()``.
    """

    def __init__(
        self,
        stream: BinaryIO,
        item_type: object,
        *,
        fmt: str = "lines",
        column: str | None = None,
        header: bool = True,
        param: str = "data",
        on_bad_line: str = "fail",
        warn: Callable[[str], None] = print_to_stderr,
    ) -> None:
        if fmt not in FORMATS:
            hint = did_you_mean(fmt, FORMATS) or f"use one of: {', '.join(FORMATS)}"
            raise UsageError(f"unknown --format {fmt!r}", hint=hint)
        if on_bad_line not in BAD_LINE_POLICIES:
            hint = did_you_mean(on_bad_line, BAD_LINE_POLICIES) or f"use one of: {', '.join(BAD_LINE_POLICIES)}"
            raise UsageError(f"unknown --on-bad-line {on_bad_line!r}", hint=hint)
        self._stream = stream
        self._type = _record_type(item_type)
        self._name = type_name(item_type)
        self._kind = _kind(self._type)
        self._fmt = fmt
        self._column = column
        self._header = header
        self._param = param
        self._fail = on_bad_line == "fail"
        self._warn = warn
        #: records turned into values so far
        self.read = 0
        #: bad records skipped so far (``on_bad_line="skip"``)
        self.skipped = 0
        #: the first and last physical line of the batch ``batches()`` gave last (None: not known),
        #: for the stdin line range of a distributed pipe's chunk
        self.lines_span: tuple[int, int] | None = None
        #: the CSV/TSV header names once read (None before, and without a header)
        self.columns: list[str] | None = None
        #: the batch just handed on is followed by a bad record (the next one raises ``BadRecord``, reading nothing)
        self.failing = False
        self._check_options()

    @property
    def stream(self) -> BinaryIO:
        """The bytes records are read from (a ``joblog.CutStream`` when a pipe with a job log cuts stdin)."""
        return self._stream

    def _check_options(self) -> None:
        tabular = self._fmt in ("csv", "tsv")
        if self._column is not None and not tabular:
            raise UsageError(
                f"--column {self._column!r} needs --format csv or tsv, got --format {self._fmt}",
                hint="add --format csv (or tsv), or drop --column",
            )
        if tabular and self._column is not None and self._kind in ("mapping", "record", "sequence", "any"):
            raise UsageError(
                f"--column {self._column!r} picks one value per record, but parameter '{self._param}' takes {self._name}",
                hint="drop --column (whole rows fill it), or annotate the parameter with a one-value type like Iterator[float]",
            )
        if tabular and not self._header and self._kind == "mapping":
            raise UsageError(
                f"--no-header leaves no names for the {self._name} records of parameter '{self._param}'",
                hint="drop --no-header so the first row names the keys, or annotate Iterator[list[str]]",
            )

    # ------------------------------------------------------------------ public

    def __iter__(self) -> Iterator[object]:
        """The ``T`` values, one per record, read only as they are asked for."""
        if self._fmt in ("csv", "tsv"):
            return self._iter_table()
        if self._fmt == "jsonl":
            return self._iter_converted(self._jsonl_converter())
        if self._kind in ("str", "any"):
            return self._iter_str()
        if self._kind == "bytes":
            return self._iter_bytes()
        return self._iter_converted(self._line_converter())

    def batches(self) -> Iterator[list[object] | LineBatch]:
        """The same values as ``__iter__``, a list (or a ``LineBatch`` of
        ``str`` lines) at a time: whatever stdin has ready.

        ``lines`` into ``str``/``bytes`` (the bulk case) is read a chunk at a
        time with ``read1`` (never waiting for more than is available, so a
        lone line still goes at once); every other format gives one value per list.
        """
        if not hasattr(self._stream, "read1"):
            return ([value] for value in self)
        if self._fmt == "lines" and self._kind in ("str", "any", "bytes"):
            return self._line_chunks(decode=self._kind != "bytes")
        if self._fmt == "jsonl":
            return self._converted_chunks(self._jsonl_converter())
        if self._fmt == "lines":
            return self._converted_chunks(self._line_converter())
        return ([value] for value in self)

    def _converted_chunks(self, convert: Callable[[str], object]) -> Iterator[list[object]]:
        """``_iter_converted``'s records, a chunk of stdin at a time: the
        chunk's lines go through ``convert`` in one C-level ``map``; only a
        chunk with a blank or bad line is redone line by line (for its line
        numbers and the bad-record policy)."""
        for first_line, data in self._line_chunks(decode=False, whole=True):
            self.lines_span = (first_line, first_line + data.count(b"\n"))
            values: list[object] = []
            try:
                if convert is int:
                    values = _ints(data)
                elif convert is float:  # it parses ASCII bytes as it parses text (blanks and "\r" too);
                    values = list(map(float, data.split(b"\n")))  # anything else fails: line by line
                else:
                    text = data.decode()
                    lines = text.split("\n")
                    if "\r" in text:
                        lines = [line.removesuffix("\r") for line in lines]
                    values = list(map(convert, lines))
            except Exception:
                values = []
                try:
                    self._convert_one_by_one(data, first_line, convert, values)
                except BadRecord:  # the records before it still reach the function
                    if values:
                        self.read += len(values)
                        self.failing = True
                        yield values
                    raise
            self.read += len(values)
            if values:
                yield values

    def _convert_one_by_one(self, data: bytes, first_line: int, convert: Callable[[str], object],
                            values: list[object]) -> None:
        """Append each line's value to ``values``; blank lines skipped, bad ones to ``_bad``."""
        for number, raw in enumerate(data.split(b"\n"), first_line):
            value = self._record(number, raw + b"\n", convert)
            if value is not _NO_VALUE:
                values.append(value)

    def _record(self, number: int, raw: bytes, convert: Callable[[str], object]) -> object:
        """Physical line ``number`` (its terminator included) as a value; ``_NO_VALUE``
        for a blank line, or a bad one that ``_bad`` did not raise for."""
        try:
            line = _strip_terminator(raw.decode())
        except UnicodeDecodeError as exc:
            self._bad(number, _strip_terminator(raw.decode("utf-8", "backslashreplace")), _utf8_reason(exc))
            return _NO_VALUE
        try:
            return convert(line)
        except _Skip:
            return _NO_VALUE
        except ValueError as exc:  # CoercionError and JSONDecodeError are ValueErrors
            if line and not line.isspace():
                self._bad(number, line, _reason(exc))
        except RecursionError:
            self._bad(number, line, "nested too deeply")
        return _NO_VALUE

    def _line_chunks(self, decode: bool, whole: bool = False) -> Iterator[Any]:
        """Whole lines as stdin has them ready; ``whole``: as ``(first line
        number, bytes)`` blocks (lines joined by b"\\n") for a converter."""
        read1 = self._stream.read1  # type: ignore[attr-defined]
        pending = b""
        bom_checked = False
        lineno = 0  # physical lines consumed
        while True:
            chunk = read1(1 << 16)
            data = pending + chunk if pending else chunk
            if not bom_checked and data:
                if chunk and len(data) < len(_BOM) and _BOM.startswith(data):
                    pending = data
                    continue
                data = data.removeprefix(_BOM)
                bom_checked = True
            if not chunk:  # EOF: a final line without newline is a record
                if data:
                    lineno += 1
                    if whole:
                        yield lineno, data
                        return
                    try:
                        batch = self._decode_lines(data, lineno, decode, strip_cr=False)
                    except _BadAfter as after:
                        if after.lines:
                            yield after.lines
                        raise after.bad from None
                    if batch:
                        self.lines_span = (lineno, lineno)
                        yield batch
                return
            end = data.rfind(b"\n")
            if end < 0:
                pending = data
                continue
            pending = data[end + 1 :]
            block = data[:end]
            if whole:
                yield lineno + 1, block
                lineno += block.count(b"\n") + 1
                continue
            try:
                batch = self._decode_lines(block, lineno + 1, decode, strip_cr=b"\r" in data)
            except _BadAfter as after:
                if after.lines:
                    yield after.lines
                raise after.bad from None
            self.lines_span = (lineno + 1, lineno + block.count(b"\n") + 1)
            lineno = self.lines_span[1]
            if batch:
                yield batch

    def _decode_lines(self, block: bytes, first_line: int, decode: bool, strip_cr: bool) -> list[object] | LineBatch:
        """Physical lines joined by b"\\n" → records (bad UTF-8 lines handled as bad records).

        Valid UTF-8 lines into ``str`` stay one ``LineBatch``: no str per line
        here, the worker splits the text (see ``flow.pack_batch``)."""
        lines: list[Any]
        if decode and not strip_cr and _is_utf8(block):  # the bulk case: the text travels as it is
            text = LineBatch(block)
            self.read += len(text)
            return text
        if not decode:
            lines = block.split(b"\n")
        else:
            try:
                lines = block.decode().split("\n")
            except UnicodeDecodeError:
                lines = []
                for offset, one in enumerate(block.split(b"\n")):
                    try:
                        lines.append(one.decode())
                    except UnicodeDecodeError as exc:
                        try:
                            self._bad(first_line + offset, _strip_terminator(one.decode("utf-8", "backslashreplace")), _utf8_reason(exc))
                        except BadRecord as bad:  # the lines before it are records all the same: hand them on first
                            raise _BadAfter(self._finish_lines(lines, strip_cr, decode), bad) from None
        return self._finish_lines(lines, strip_cr, decode)

    def _finish_lines(self, lines: list[Any], strip_cr: bool, decode: bool) -> list[object]:
        """Decoded (or raw) lines as records: a trailing ``\\r`` dropped where the input has CRLFs; counted as read."""
        if strip_cr:
            cr = "\r" if decode else b"\r"
            lines = [line[:-1] if line.endswith(cr) else line for line in lines]
        self.read += len(lines)
        return lines

    def summary(self) -> str | None:
        """For skip mode, at the end: how many bad records were dropped; None when there were none."""
        if not self.skipped:
            return None
        noun = "record" if self.skipped == 1 else "records"
        text = f"skipped {self.skipped} bad stdin {noun}"
        if self.skipped > SHOWN_BAD_RECORDS:
            text += f" ({SHOWN_BAD_RECORDS} shown above)"
        return text

    # ------------------------------------------------------------------ reading

    def _raw_lines(self) -> Iterator[bytes]:
        """Physical lines as bytes with terminators, the leading BOM dropped; never reads ahead.

        ``iter(readline, b"")`` keeps the per-line loop in C.
        """
        readline = self._stream.readline
        first = readline()
        if first.startswith(_BOM):
            first = first[len(_BOM):]
        if not first:
            return iter(())
        return chain((first,), iter(readline, b""))

    def _bad(self, line: int, text: str, reason: str | None = None) -> None:
        """A record that does not become a ``T``: raise (fail) or warn/count (skip)."""
        self._report(line, f"stdin line {line}: cannot read {_show(text)} as {self._name} for parameter '{self._param}'", reason)

    def _report(self, line: int, message: str, reason: str | None) -> None:
        """``_bad`` with the message made: raise ``BadRecord`` (fail) or warn/count (skip)."""
        if self._fail:
            advice = "pass --on-bad-line skip to drop bad records and go on"
            raise BadRecord(message, hint=f"{reason}; {advice}" if reason else advice, line=line)
        self.skipped += 1
        if self.skipped <= SHOWN_BAD_RECORDS:
            self._warn(message + (f" ({reason})" if reason else ""))

    def _iter_str(self) -> Iterator[str]:
        # The hot path (benchmarks push millions of short lines): one decode and
        # two C-level removesuffix calls per line; the line number is derived
        # (every line is a record or a bad one) rather than counted.
        count = 0
        bad = 0
        for raw in self._raw_lines():
            try:
                line = raw.decode().removesuffix("\r\n").removesuffix("\n")
            except UnicodeDecodeError as exc:
                bad += 1
                self._bad(count + bad, _strip_terminator(raw.decode("utf-8", "backslashreplace")), _utf8_reason(exc))
                continue
            count += 1
            self.read = count
            yield line

    def _iter_bytes(self) -> Iterator[bytes]:
        count = 0
        for raw in self._raw_lines():
            count += 1
            self.read = count
            yield raw.removesuffix(b"\r\n").removesuffix(b"\n")

    def _iter_converted(self, convert: Callable[[str], object]) -> Iterator[object]:
        """One record per line through ``convert``; blank lines are skipped silently.

        ``convert`` fails on a blank line (or raises ``_Skip``), so the blank
        test costs nothing for the lines that do convert.
        """
        count = 0
        number = 0
        for raw in self._raw_lines():
            number += 1
            value = self._record(number, raw, convert)
            if value is _NO_VALUE:
                continue
            count += 1
            self.read = count
            yield value

    # ------------------------------------------------------------------ converters

    def _line_converter(self) -> Callable[[str], object]:
        """``--format lines`` for a non-str ``T``: chosen once per reader.

        Blank lines must fail conversion (they are then skipped by the loop).
        """
        item_type = self._type
        if item_type is int:
            return int  # int() ignores surrounding blanks itself
        if item_type is float:
            return float
        if item_type is bool:
            return parse_bool
        if self._kind in ("mapping", "record", "sequence"):
            return self._jsonl_converter()
        convert = text_converter(item_type)
        keep_blanks = isinstance(item_type, type) and issubclass(item_type, (str, pathlib.PurePath))

        def scalar(line: str) -> object:
            stripped = line.strip()
            if not stripped:
                raise _Skip
            return convert(line if keep_blanks else stripped)

        return scalar

    def _jsonl_converter(self) -> Callable[[str], object]:
        """One JSON value per line, checked against ``T`` (the line must not be blank)."""
        if self._kind == "any":
            return _json_value
        check = json_converter(self._type)

        def convert(line: str) -> object:
            return check(_json_value(line))

        return convert

    # ------------------------------------------------------------------ csv / tsv

    def _iter_table(self) -> Iterator[object]:
        """CSV/TSV rows: header handling, record line numbers, then rows → ``T``."""
        state = _LineTracker(self._raw_lines())
        rows = self._rows(state)
        convert: Callable[[list[str]], object] | None = None
        if self._header:
            row = next(rows, None)
            if row is None:
                return
            self.columns = [name.strip() for name in row]
            convert = self._row_converter(len(row))
        count = 0
        for row in rows:
            if convert is None:  # --no-header: the first data row decides the shape
                convert = self._row_converter(len(row))
            try:
                value = convert(row)
            except _RowError as exc:
                self._report(state.start, f"stdin line {state.start}{exc.where}", exc.reason)
                continue
            except ValueError as exc:  # the record as a whole (a class's own validation)
                self._bad(state.start, state.record_text(), _reason(exc))
                continue
            count += 1
            self.read = count
            self.lines_span = (state.start, state.number)
            yield value

    def _rows(self, state: _LineTracker) -> Iterator[list[str]]:
        """Non-blank rows, with ``state`` pointing at each one's lines; unreadable rows are bad records."""
        reader = csv.reader(state, dialect="excel" if self._fmt == "csv" else "excel-tab", strict=True)
        while True:
            state.begin()
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # a stray quote, a quoted field never closed
                self._bad(state.start, state.record_text(), f"malformed {self._fmt.upper()}: {exc}")
                continue
            if not row or (len(row) == 1 and row[0].isspace() and state.record_text().isspace()):
                continue  # a blank line (a quoted blank field is data)
            if state.bad_utf8:
                self._bad(state.start, state.record_text(), state.bad_utf8)
                continue
            yield row

    def _row_converter(self, width: int) -> Callable[[list[str]], object]:
        """Rows → ``T``, decided once from the header (or the first row's width without one)."""
        kind = self._kind
        if kind == "any":
            kind = "mapping" if self.columns is not None else "sequence"
        if kind == "mapping":
            return self._mapping_row()
        if kind == "record":
            return self._record_row()
        if kind == "sequence":
            return self._sequence_row()
        return self._scalar_row(self._column_index(width))

    def _column_index(self, width: int) -> int:
        columns = self.columns
        if self._column is not None:
            if columns is not None:
                if self._column in columns:
                    return columns.index(self._column)
                raise UsageError(
                    f"--column {self._column!r} is not a column of stdin (columns: {', '.join(columns)})",
                    hint=did_you_mean(self._column, columns) or f"use one of: {', '.join(columns)}",
                )
            if self._column.isdigit() and 1 <= int(self._column) <= width:
                return int(self._column) - 1
            raise UsageError(
                f"--column {self._column!r} with --no-header must be a column number from 1 to {width}",
                hint=f"pass --column 1 … --column {width}, or drop --no-header to pick by name",
            )
        if width == 1:
            return 0
        if columns is not None:
            raise UsageError(
                f"stdin has {width} columns ({', '.join(columns)}) but parameter '{self._param}' takes one {self._name} per record",
                hint=f"pick one with --column, e.g. --column {columns[0]} (columns: {', '.join(columns)})",
            )
        raise UsageError(
            f"stdin has {width} columns but parameter '{self._param}' takes one {self._name} per record",
            hint=f"pick one with --column N (1 to {width})",
        )

    def _scalar_row(self, index: int) -> Callable[[list[str]], object]:
        convert = _field_converter(self._type)
        width = len(self.columns) if self.columns is not None else None

        def scalar(row: list[str]) -> object:
            if width is not None and len(row) != width:
                raise self._width_error(row, width)
            if index >= len(row):
                raise _RowError(f": {len(row)} {_noun(len(row), 'field')}, no field {index + 1}")
            try:
                return convert(row[index])
            except ValueError as exc:
                raise self._field_error(row, index, self._name, exc) from None

        return scalar

    def _check_width(self, row: list[str]) -> None:
        """With a header, every row has its number of fields (more or fewer is a bad record)."""
        if self.columns is not None and len(row) != len(self.columns):
            raise self._width_error(row, len(self.columns))

    def _width_error(self, row: list[str], width: int, has: str | None = None) -> _RowError:
        """A row of the wrong width, told by the fields too many (quoted) or the columns left empty.

        ``has``: what sets the width (default ``the header has 3``).
        """
        if len(row) > width:
            extra = row[width:]
            detail = f"extra {_noun(len(extra), 'field')} {_listed(map(_show, extra))}"
        elif self.columns is not None:
            missing = self.columns[len(row):width]
            detail = f"no value for {_noun(len(missing), 'column')} {_listed(map(repr, missing))}"
        else:
            detail = f"no field {len(row) + 1}"
        return _RowError(f": {len(row)} {_noun(len(row), 'field')}, {has or f'the header has {width}'}: {detail}")

    def _field_error(self, row: list[str], index: int, expected: str, exc: ValueError) -> _RowError:
        """Field ``index`` of ``row`` is not an ``expected``: the message quotes that field (and names
        its column when the row has several), not the whole row."""
        where = ""
        if len(row) > 1:
            where = f", column {self.columns[index]!r}" if self.columns is not None and index < len(self.columns) else f", field {index + 1}"
        message = f"{where}: cannot read {_show(row[index])} as {expected} for parameter '{self._param}'"
        return _RowError(message, _reason(exc))

    def _mapping_row(self) -> Callable[[list[str]], object]:
        columns = self.columns or []
        args = typing.get_args(self._type)
        key_type, value_type = args if len(args) == 2 else (Any, Any)
        keys = [_field_converter(key_type)(name) if not is_any(key_type) else name for name in columns]
        convert = _field_converter(value_type)
        expected = f"{type_name(value_type)} (in {self._name})"

        def mapping(row: list[str]) -> object:
            self._check_width(row)
            try:
                return {key: convert(value) for key, value in zip(keys, row)}
            except ValueError:
                raise self._first_bad_field(row, convert, expected) from None

        return mapping

    def _first_bad_field(self, row: list[str], convert: Callable[[str], object], expected: str) -> _RowError:
        """After a row failed: the error for its first field that ``convert`` refuses (looked for only then)."""
        for index, value in enumerate(row):
            try:
                convert(value)
            except ValueError as exc:
                return self._field_error(row, index, expected, exc)
        return _RowError(f": cannot read the row as {self._name} for parameter '{self._param}'")

    def _record_row(self) -> Callable[[list[str]], object]:
        """Fields by header name (extra columns ignored); with ``--no-header``, by position."""
        cls = self._type
        fields = record_fields(cls)  # type: ignore[arg-type]
        if self.columns is not None:
            positions = {name: i for i, name in enumerate(self.columns)}
            for field in fields:
                if field.required and field.name not in positions:
                    close = difflib.get_close_matches(field.name, self.columns, n=1, cutoff=0.6)
                    names = ", ".join(f.name for f in fields)
                    raise UsageError(
                        f"stdin's header has no column for field '{field.name}' of {self._name} (columns: {', '.join(self.columns)})",
                        hint=f"should column '{close[0]}' be '{field.name}'? the header must name the fields: {names}"
                        if close
                        else f"the header must name the fields: {names}",
                    )
        else:
            positions = {field.name: i for i, field in enumerate(fields)}
        plan = [(f.name, positions[f.name], f.required, _field_converter(f.annotation), f"{type_name(f.annotation)} ({self._name}.{f.name})")
                for f in fields if f.name in positions]
        build: Callable[..., object] = dict if typing.is_typeddict(cls) else cls  # type: ignore[assignment]
        headerless = self.columns is None

        def record(row: list[str]) -> object:
            self._check_width(row)
            if headerless and len(row) > len(plan):
                raise self._width_error(row, len(plan), f"{self._name} has {len(plan)}")
            values = {}
            for name, index, required, convert, expected in plan:
                if index >= len(row):  # only without a header: trailing fields left to their defaults
                    if required:
                        raise _RowError(f": {len(row)} {_noun(len(row), 'field')}, no value for field '{name}' of {self._name}")
                    continue
                try:
                    values[name] = convert(row[index])
                except ValueError as exc:
                    raise self._field_error(row, index, expected, exc) from None
            try:
                return build(**values)
            except Exception as exc:  # the class's own validation (__post_init__)
                raise ValueError(f"{type(exc).__name__}: {exc}") from None

        return record

    def _sequence_row(self) -> Callable[[list[str]], object]:
        item_type = self._type
        origin = typing.get_origin(item_type) or item_type
        args = typing.get_args(item_type)
        fixed = origin is tuple and bool(args) and not (len(args) == 2 and args[1] is Ellipsis)
        if fixed:
            converters = [_field_converter(a) for a in args]

            def fixed_row(row: list[str]) -> object:
                self._check_width(row)
                if len(row) != len(converters):
                    raise self._width_error(row, len(converters), f"{self._name} needs {len(converters)}")
                try:
                    return tuple([convert(value) for convert, value in zip(converters, row)])
                except ValueError:
                    for index, (convert, value) in enumerate(zip(converters, row)):
                        try:
                            convert(value)
                        except ValueError as exc:
                            raise self._field_error(row, index, f"{type_name(args[index])} (in {self._name})", exc) from None
                    raise

            return fixed_row
        convert = _field_converter(args[0] if args else str)
        build: Callable[[Iterable[object]], object] = {tuple: tuple, set: set, frozenset: frozenset, cabc.Set: set, cabc.MutableSet: set}.get(origin, list)  # type: ignore[call-overload]

        expected = f"{type_name(args[0] if args else str)} (in {self._name})"

        def row_values(row: list[str]) -> object:
            self._check_width(row)
            try:
                return build([convert(value) for value in row])
            except ValueError:
                raise self._first_bad_field(row, convert, expected) from None

        return row_values


class _LineTracker:
    """Feeds ``csv.reader`` decoded physical lines, remembering where each record starts.

    ``csv`` needs the terminators kept (a quoted field may span lines); invalid
    UTF-8 is decoded with replacement and flagged, so the row it ends up in is
    a bad record.
    """

    def __init__(self, raw_lines: Iterator[bytes]) -> None:
        self._raw = raw_lines
        self.number = 0  #: physical lines read so far
        self.start = 0  #: first line of the current record
        self.lines: list[str] = []  #: the current record's lines (one, unless a quoted field spans lines)
        self.bad_utf8: str | None = None

    def __iter__(self) -> _LineTracker:
        return self

    def __next__(self) -> str:
        raw = next(self._raw)
        self.number += 1
        try:
            line = raw.decode()
        except UnicodeDecodeError as exc:
            line = raw.decode("utf-8", "backslashreplace")
            self.bad_utf8 = self.bad_utf8 or _utf8_reason(exc)
        self.lines.append(line)
        return line

    def begin(self) -> None:
        self.start = self.number + 1
        self.lines.clear()
        self.bad_utf8 = None

    def record_text(self) -> str:
        return _strip_terminator("".join(self.lines))


def _ints(data: bytes) -> list[object]:
    """``int()`` of each line of ``data`` (lines joined by b"\\n"); raises as ``int()`` does.

    A block of plain decimal integers (the common case) goes through the json
    module's C scanner as one array, about a fifth faster than ``int()`` per
    line. The result is used only when it is exactly one ``int`` per line: a
    line holding anything but one JSON integer (a comma, a bracket, a string,
    "+5", "1_000", "007", a blank) makes it fail or miscount, and then
    ``int()`` decides, line by line as before. A JSON integer is a valid
    ``int()`` literal of the same value, and JSON's whitespace is ``int()``'s too.
    """
    try:
        values = json.loads("[%s]" % data.decode("ascii").replace("\n", ","))  # str: no encoding guessed
    except (ValueError, RecursionError):  # not ASCII, JSONDecodeError, over the int digits limit; "[[[…"
        pass
    else:
        if type(values) is list and len(values) == data.count(b"\n") + 1 and list(map(type, values)).count(int) == len(values):
            return values
    return list(map(int, data.split(b"\n")))


def _field_converter(annotation: object) -> Callable[[str], object]:
    """One CSV field → ``annotation``: ``str`` as is; an empty field is None for an Optional type."""
    annotation = strip_annotation(annotation)
    if is_any(annotation) or annotation is str:
        return str
    convert = text_converter(annotation)
    if typing.get_origin(annotation) in _UNION_ORIGINS and NoneType in typing.get_args(annotation):

        def optional(value: str) -> object:
            return None if value == "" else convert(value)

        return optional
    return convert


def _reason(exc: BaseException) -> str | None:
    """What to add to a bad-record message: our own explanation, never Python's ``invalid literal`` text."""
    if isinstance(exc, CoercionError):
        return exc.detail
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc.msg} at column {exc.colno}"
    if type(exc) is ValueError and not str(exc).startswith(("invalid literal", "could not convert")):
        return str(exc)
    return None


def _utf8_reason(exc: UnicodeDecodeError) -> str:
    return f"not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at column {exc.start + 1})"

