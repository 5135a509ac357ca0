"""stdin bytes → typed records for ``pipe``: framing, line numbers, the one read path.

Owns how one stdin record becomes a ``T`` (``--format lines|csv|tsv|jsonl``,
``--column``, ``--no-header``, ``--on-bad-line``); the per-value type rules
come from ``skyctl.coerce``, CSV/TSV rows from ``table``, the bad-record policy
from ``badlines``, the per-line parsing from ``lines``. Imports only the stdlib
and skyctl's own ``errors``/``coerce``/``flow`` (for ``LineBatch``).

There is one read path, ``batches()``; iterating a reader is the batches,
flattened. Two properties matter more than anything else here:

- liveness: a line written to stdin becomes a value at once, without waiting
  for more input or EOF: lines are read with ``read1`` (whatever is ready, one
  read at most) or, on a stream without it, ``readline()``; CSV/TSV a physical
  line at a time;
- speed and flat memory: the converter is chosen once per reader, a chunk of
  lines is converted by one C-level ``map`` (or travels undecoded as a
  ``LineBatch`` for ``str``), and nothing is ever accumulated.
"""

from __future__ import annotations

import collections.abc as cabc
import pathlib
import typing
from typing import Any, BinaryIO, Callable, Iterator

from skyctl.coerce import (
    is_any,
    is_record_class,
    json_converter,
    parse_bool,
    strip_annotation,
    text_converter,
    type_name,
)
from skyctl.errors import BadRecord, UsageError, did_you_mean
from skyctl.remote.flow import LineBatch
from skyctl.records.badlines import BadLines, print_to_stderr, reason, utf8_reason
from skyctl.records.lines import BOM, ints, is_utf8, json_value, strip_terminator
from skyctl.records.table import TableReader, raw_lines

__all__ = ["FORMATS", "RecordReader", "print_to_stderr"]

#: the values of ``--format``
FORMATS = ("lines", "csv", "tsv", "jsonl")

NoneType = type(None)
_UNION_ORIGINS = (typing.Union, type(int | None))
_MAPPING_ORIGINS = (dict, cabc.Mapping, cabc.MutableMapping)
_SEQUENCE_ORIGINS = (list, tuple, set, frozenset, cabc.Sequence, cabc.MutableSequence, cabc.Set, cabc.MutableSet)


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
        stream: a binary stream (``sys.stdin.buffer``); only ``read1()`` (where it has one) and ``readline()`` are used.
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
        self._name = type_name(item_type)
        self._bad_lines = BadLines(on_bad_line, warn, name=self._name, param=param)
        self._stream = stream
        self._type = _record_type(item_type)
        self._kind = _kind(self._type)
        self._fmt = fmt
        self._column = column
        self._header = header
        self._param = param
        #: records turned into values so far
        self.read = 0
        #: the first and last physical line of the batch ``batches()`` gave last (None: not known),
        #: for the stdin line range of a distributed pipe's chunk
        self.lines_span: tuple[int, int] | None = None
        #: the batch just handed on is followed by a bad record (the next one raises ``BadRecord``, reading nothing)
        self.failing = False
        self._table: TableReader | None = None
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
        """The ``T`` values, one per record, read only as they are asked for: ``batches()`` flattened."""
        for batch in self.batches():
            read = self.read - len(batch)  # ``read`` counts the values handed out
            for value in batch:
                read += 1
                self.read = read
                yield value

    def batches(self) -> Iterator[list[object] | LineBatch]:
        """The values, a list (or a ``LineBatch`` of ``str`` lines) at a time: whatever stdin has ready.

        ``lines`` and ``jsonl`` are read a chunk at a time with ``read1``
        (never waiting for more than is available, so a lone line still goes
        at once); CSV/TSV gives one value per list.
        """
        if self._fmt in ("csv", "tsv"):
            return self._table_batches()
        if self._fmt == "jsonl":
            return self._converted_chunks(self._jsonl_converter())
        if self._kind in ("str", "any", "bytes"):
            return self._line_chunks(decode=self._kind != "bytes")
        return self._converted_chunks(self._line_converter())

    @property
    def skipped(self) -> int:
        """Bad records skipped so far (``on_bad_line="skip"``)."""
        return self._bad_lines.skipped

    @property
    def columns(self) -> list[str] | None:
        """The CSV/TSV header names once read (None before, and without a header)."""
        return self._table.columns if self._table is not None else None

    def summary(self) -> str | None:
        """For skip mode, at the end: how many bad records were dropped; None when there were none."""
        return self._bad_lines.summary()

    def _converted_chunks(self, convert: Callable[[str], object]) -> Iterator[list[object]]:
        """One record per line through ``convert``, a chunk of stdin at a time: the
        chunk's lines go through ``convert`` in one C-level ``map``; only a
        chunk with a blank or bad line is redone line by line (for its line
        numbers and the bad-record policy)."""
        for first_line, data in self._line_chunks(decode=False, whole=True):
            values: list[object] = []
            try:
                if convert is int:
                    values = ints(data)
                elif convert is float:  # it parses ASCII bytes as it parses text (blanks and "\r" too);
                    values = list(map(float, data.split(b"\n")))  # anything else fails: line by line
                else:
                    text = data.decode()
                    lines = text.split("\n")
                    if "\r" in text:
                        lines = [line.removesuffix("\r") for line in lines]
                    values = list(map(convert, lines))
                # one value per line: the span without another pass over the bytes
                self.lines_span = (first_line, first_line + len(values) - 1)
            except Exception:
                self.lines_span = (first_line, first_line + data.count(b"\n"))
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
        """Append each line's value to ``values``; blank lines skipped, bad ones to the bad-line policy."""
        for number, raw in enumerate(data.split(b"\n"), first_line):
            value = self._record(number, raw + b"\n", convert)
            if value is not _NO_VALUE:
                values.append(value)

    def _record(self, number: int, raw: bytes, convert: Callable[[str], object]) -> object:
        """Physical line ``number`` (its terminator included) as a value; ``_NO_VALUE``
        for a blank line, or a bad one the bad-line policy did not raise for."""
        try:
            line = strip_terminator(raw.decode())
        except UnicodeDecodeError as exc:
            self._bad_lines.bad(number, strip_terminator(raw.decode("utf-8", "backslashreplace")), utf8_reason(exc))
            return _NO_VALUE
        try:
            return convert(line)
        except _Skip:
            return _NO_VALUE
        except ValueError as exc:  # CoercionError and JSONDecodeError are ValueErrors
            if line and not line.isspace():
                self._bad_lines.bad(number, line, reason(exc))
        except RecursionError:
            self._bad_lines.bad(number, line, "nested too deeply")
        return _NO_VALUE

    def _line_chunks(self, decode: bool, whole: bool = False) -> Iterator[Any]:
        """Whole lines as stdin has them ready; ``whole``: as ``(first line
        number, bytes)`` blocks (lines joined by b"\\n") for a converter."""
        read1 = getattr(self._stream, "read1", None)
        read_some: Callable[[], bytes] = (lambda: read1(1 << 16)) if read1 is not None else self._stream.readline
        pending = b""
        bom_checked = False
        lineno = 0  # physical lines consumed
        while True:
            chunk = read_some()
            data = pending + chunk if pending else chunk
            if not bom_checked and data:
                if chunk and len(data) < len(BOM) and BOM.startswith(data):
                    pending = data
                    continue
                data = data.removeprefix(BOM)
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
        if decode and not strip_cr and is_utf8(block):  # the bulk case: the text travels as it is
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
                            self._bad_lines.bad(first_line + offset, strip_terminator(one.decode("utf-8", "backslashreplace")), utf8_reason(exc))
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
            return json_value
        check = json_converter(self._type)

        def convert(line: str) -> object:
            return check(json_value(line))

        return convert

    # ------------------------------------------------------------------ csv / tsv

    def _table_batches(self) -> Iterator[list[object]]:
        """CSV/TSV: one value per list, as each row is complete."""
        table = self._table = TableReader(
            raw=raw_lines(self._stream), item_type=self._type, kind=self._kind, fmt=self._fmt, column=self._column,
            header=self._header, name=self._name, param=self._param, bad_lines=self._bad_lines,
        )
        for value in table:
            self.read += 1
            self.lines_span = table.lines_span
            yield [value]
