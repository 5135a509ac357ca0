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


#: the bytes a block of plain decimal integer lines is made of: digits, "-", and JSON's whitespace (which
#: ``int()`` strips too). A block of nothing else parses as one JSON array only when every line is one JSON
#: integer, so the result needs no check of its own (see ``ints``)
_INT_BYTES = b"0123456789-\n\r\t "


def ints(data: bytes) -> list[object]:
    """``int()`` of each line of ``data`` (lines joined by b"\\n"); raises as ``int()`` does.

    A block of plain decimal integers (the common case) goes through the json
    module's C scanner as one array, about a fifth faster than ``int()`` per
    line. It is tried only on a block made of ``_INT_BYTES`` alone (one C-level
    ``translate``): there no line can hold a comma, a bracket, a quote, a dot,
    a letter or a non-ASCII byte, so the array parses only when each line is
    exactly one JSON integer (a blank line, "--5", "007", "5-" fail; a block
    that is one blank line parses as ``[]``, which is not taken), and
    then it holds one ``int`` per line, each the value ``int()`` gives it (a
    JSON integer is a valid ``int()`` literal of the same value, and JSON's
    whitespace is ``int()``'s too). Anything else ("+5", "1_000", "٣", a
    float) is left to ``int()``, line by line, as before.
    """
    if not data.translate(None, _INT_BYTES):
        try:
            values = json.loads("[%s]" % data.decode("ascii").replace("\n", ","))  # str: no encoding guessed
        except (ValueError, RecursionError):  # JSONDecodeError, over the int digits limit
            pass
        else:
            if values:  # [] from one blank line, which int() refuses
                return values
    return list(map(int, data.split(b"\n")))
