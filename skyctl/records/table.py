"""CSV/TSV stdin (``--format csv|tsv``, ``--column``, ``--no-header``) → ``T`` values.

A row fills a whole record (dict, dataclass/TypedDict/NamedTuple, list or
tuple) or gives one field to a one-value ``T``; a row that does not fit is a
bad record told by the field to blame. Rows are read a physical line at a time
(a quoted field may span lines), so a row becomes a value as soon as it is
complete. Stdlib and skyctl's ``errors``/``coerce`` only.
"""

from __future__ import annotations

import collections.abc as cabc
import csv
import dataclasses
import difflib
import typing
from itertools import chain, islice
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from skyctl.coerce import is_any, record_fields, strip_annotation, text_converter, type_name
from skyctl.errors import UsageError, did_you_mean
from skyctl.records.badlines import BadLines, reason, show, utf8_reason
from skyctl.records.lines import BOM, strip_terminator

NoneType = type(None)
_UNION_ORIGINS = (typing.Union, type(int | None))


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



def _noun(count: int, noun: str) -> str:
    return noun if count == 1 else noun + "s"


def _listed(shown: Iterable[str], most: int = 3) -> str:
    """The first ``most`` of ``shown``, comma-separated, with "…" when there are more."""
    items = list(islice(shown, most + 1))
    return ", ".join(items[:most]) + (", …" if len(items) > most else "")



def raw_lines(stream: BinaryIO) -> Iterator[bytes]:
    """Physical lines as bytes with terminators, the leading BOM dropped; never reads ahead.

    ``iter(readline, b"")`` keeps the per-line loop in C.
    """
    readline = stream.readline
    first = readline()
    if first.startswith(BOM):
        first = first[len(BOM):]
    if not first:
        return iter(())
    return chain((first,), iter(readline, b""))


@dataclasses.dataclass(eq=False)
class TableReader:
    """The rows of CSV/TSV stdin as ``T`` values, read only as they are asked for.

    ``kind`` is how a record maps to ``T`` (see ``reader._kind``); ``columns``
    holds the header's names once read, and ``lines_span`` the physical lines
    of the row given last.
    """

    raw: Iterator[bytes]
    item_type: object
    kind: str
    fmt: str
    column: str | None
    header: bool
    name: str
    param: str
    bad_lines: BadLines
    #: the header names once read (None before, and without a header)
    columns: list[str] | None = dataclasses.field(default=None, init=False)
    #: the first and last physical line of the row given last
    lines_span: tuple[int, int] | None = dataclasses.field(default=None, init=False)

    def __iter__(self) -> Iterator[object]:
        """Header handling, record line numbers, then rows → ``T``."""
        state = _LineTracker(self.raw)
        rows = self._rows(state)
        convert: Callable[[list[str]], object] | None = None
        if self.header:
            row = next(rows, None)
            if row is None:
                return
            self.columns = [name.strip() for name in row]
            convert = self._row_converter(len(row))
        for row in rows:
            if convert is None:  # --no-header: the first data row decides the shape
                convert = self._row_converter(len(row))
            try:
                value = convert(row)
            except _RowError as exc:
                self.bad_lines.report(state.start, f"stdin line {state.start}{exc.where}", exc.reason)
                continue
            except ValueError as exc:  # the record as a whole (a class's own validation)
                self.bad_lines.bad(state.start, state.record_text(), reason(exc))
                continue
            self.lines_span = (state.start, state.number)
            yield value

    def _rows(self, state: _LineTracker) -> Iterator[list[str]]:
        """Non-blank rows, with ``state`` pointing at each one's lines; unreadable rows are bad records."""
        reader = csv.reader(state, dialect="excel" if self.fmt == "csv" else "excel-tab", strict=True)
        while True:
            state.begin()
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # a stray quote, a quoted field never closed
                self.bad_lines.bad(state.start, state.record_text(), f"malformed {self.fmt.upper()}: {exc}")
                continue
            if not row or (len(row) == 1 and row[0].isspace() and state.record_text().isspace()):
                continue  # a blank line (a quoted blank field is data)
            if state.bad_utf8:
                self.bad_lines.bad(state.start, state.record_text(), state.bad_utf8)
                continue
            yield row

    def _row_converter(self, width: int) -> Callable[[list[str]], object]:
        """Rows → ``T``, decided once from the header (or the first row's width without one)."""
        kind = self.kind
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
        if self.column is not None:
            if columns is not None:
                if self.column in columns:
                    return columns.index(self.column)
                raise UsageError(
                    f"--column {self.column!r} is not a column of stdin (columns: {', '.join(columns)})",
                    hint=did_you_mean(self.column, columns) or f"use one of: {', '.join(columns)}",
                )
            if self.column.isdigit() and 1 <= int(self.column) <= width:
                return int(self.column) - 1
            raise UsageError(
                f"--column {self.column!r} with --no-header must be a column number from 1 to {width}",
                hint=f"pass --column 1 … --column {width}, or drop --no-header to pick by name",
            )
        if width == 1:
            return 0
        if columns is not None:
            raise UsageError(
                f"stdin has {width} columns ({', '.join(columns)}) but parameter '{self.param}' takes one {self.name} per record",
                hint=f"pick one with --column, e.g. --column {columns[0]} (columns: {', '.join(columns)})",
            )
        raise UsageError(
            f"stdin has {width} columns but parameter '{self.param}' takes one {self.name} per record",
            hint=f"pick one with --column N (1 to {width})",
        )

    def _scalar_row(self, index: int) -> Callable[[list[str]], object]:
        convert = _field_converter(self.item_type)
        width = len(self.columns) if self.columns is not None else None

        def scalar(row: list[str]) -> object:
            if width is not None and len(row) != width:
                raise self._width_error(row, width)
            if index >= len(row):
                raise _RowError(f": {len(row)} {_noun(len(row), 'field')}, no field {index + 1}")
            try:
                return convert(row[index])
            except ValueError as exc:
                raise self._field_error(row, index, self.name, exc) from None

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
            detail = f"extra {_noun(len(extra), 'field')} {_listed(map(show, extra))}"
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
        message = f"{where}: cannot read {show(row[index])} as {expected} for parameter '{self.param}'"
        return _RowError(message, reason(exc))

    def _mapping_row(self) -> Callable[[list[str]], object]:
        columns = self.columns or []
        args = typing.get_args(self.item_type)
        key_type, value_type = args if len(args) == 2 else (Any, Any)
        keys = [_field_converter(key_type)(name) if not is_any(key_type) else name for name in columns]
        convert = _field_converter(value_type)
        expected = f"{type_name(value_type)} (in {self.name})"

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
        return _RowError(f": cannot read the row as {self.name} for parameter '{self.param}'")

    def _record_row(self) -> Callable[[list[str]], object]:
        """Fields by header name (extra columns ignored); with ``--no-header``, by position."""
        cls = self.item_type
        fields = record_fields(cls)  # type: ignore[arg-type]
        if self.columns is not None:
            positions = {name: i for i, name in enumerate(self.columns)}
            for field in fields:
                if field.required and field.name not in positions:
                    close = difflib.get_close_matches(field.name, self.columns, n=1, cutoff=0.6)
                    names = ", ".join(f.name for f in fields)
                    raise UsageError(
                        f"stdin's header has no column for field '{field.name}' of {self.name} (columns: {', '.join(self.columns)})",
                        hint=f"should column '{close[0]}' be '{field.name}'? the header must name the fields: {names}"
                        if close
                        else f"the header must name the fields: {names}",
                    )
        else:
            positions = {field.name: i for i, field in enumerate(fields)}
        plan = [(f.name, positions[f.name], f.required, _field_converter(f.annotation), f"{type_name(f.annotation)} ({self.name}.{f.name})")
                for f in fields if f.name in positions]
        build: Callable[..., object] = dict if typing.is_typeddict(cls) else cls  # type: ignore[assignment]
        headerless = self.columns is None

        def record(row: list[str]) -> object:
            self._check_width(row)
            if headerless and len(row) > len(plan):
                raise self._width_error(row, len(plan), f"{self.name} has {len(plan)}")
            values = {}
            for name, index, required, convert, expected in plan:
                if index >= len(row):  # only without a header: trailing fields left to their defaults
                    if required:
                        raise _RowError(f": {len(row)} {_noun(len(row), 'field')}, no value for field '{name}' of {self.name}")
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
        item_type = self.item_type
        origin = typing.get_origin(item_type) or item_type
        args = typing.get_args(item_type)
        fixed = origin is tuple and bool(args) and not (len(args) == 2 and args[1] is Ellipsis)
        if fixed:
            converters = [_field_converter(a) for a in args]

            def fixed_row(row: list[str]) -> object:
                self._check_width(row)
                if len(row) != len(converters):
                    raise self._width_error(row, len(converters), f"{self.name} needs {len(converters)}")
                try:
                    return tuple([convert(value) for convert, value in zip(converters, row)])
                except ValueError:
                    for index, (convert, value) in enumerate(zip(converters, row)):
                        try:
                            convert(value)
                        except ValueError as exc:
                            raise self._field_error(row, index, f"{type_name(args[index])} (in {self.name})", exc) from None
                    raise

            return fixed_row
        convert = _field_converter(args[0] if args else str)
        build: Callable[[Iterable[object]], object] = {tuple: tuple, set: set, frozenset: frozenset, cabc.Set: set, cabc.MutableSet: set}.get(origin, list)  # type: ignore[call-overload]

        expected = f"{type_name(args[0] if args else str)} (in {self.name})"

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
            self.bad_utf8 = self.bad_utf8 or utf8_reason(exc)
        self.lines.append(line)
        return line

    def begin(self) -> None:
        self.start = self.number + 1
        self.lines.clear()
        self.bad_utf8 = None

    def record_text(self) -> str:
        return strip_terminator("".join(self.lines))


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

