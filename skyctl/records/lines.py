"""One line (or a block of lines) of stdin → text or values, as fast as the stdlib allows.

Terminators, the UTF-8 check, one JSON value per line and the int fast path
for a block of lines: no policy here (a failure raises, the reader decides).
"""

from __future__ import annotations

import json
import json.scanner

#: a UTF-8 byte order mark, dropped from the start of stdin
BOM = b"\xef\xbb\xbf"

_scan_json = json.scanner.make_scanner(json.JSONDecoder())


def json_value(line: str) -> object:
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


def is_utf8(block: bytes) -> bool:
    """``block`` decodes as UTF-8 (checked without decoding when it is ASCII)."""
    if block.isascii():
        return True
    try:
        block.decode()
    except UnicodeDecodeError:
        return False
    return True


def strip_terminator(line: str) -> str:
    """Exactly one ``\r\n`` or ``\n`` off the end (a final line may have neither; a stray ``\r`` stays)."""
    return line.removesuffix("\r\n").removesuffix("\n")


def ints(data: bytes) -> list[object]:
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
