"""The bad-record policy (``--on-bad-line``) and how a bad record is told.

``fail`` raises ``BadRecord`` (the records before it are handed on first, by
the readers); ``skip`` drops it, warning about the first few in full and
counting the rest for ``summary()``. Stdlib and skyctl's ``errors``/``coerce`` only.
"""

from __future__ import annotations

import json
import sys
from typing import Callable

from skyctl.coerce import CoercionError
from skyctl.errors import BadRecord, UsageError, did_you_mean

#: the values of ``--on-bad-line``
BAD_LINE_POLICIES = ("fail", "skip")
#: bad records warned about in full under ``--on-bad-line skip``; the rest are only counted
SHOWN_BAD_RECORDS = 5
#: longest record text quoted in a message; longer ones are cut with an ellipsis
_SHOW_CHARS = 100


def print_to_stderr(message: str) -> None:
    """Default ``warn``: one line on stderr (the CLI passes its own renderer)."""
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()


class BadLines:
    """One reader's bad records: raised (``fail``) or warned about and counted (``skip``).

    ``name`` and ``param`` are the type and the parameter messages name.
    """

    def __init__(self, on_bad_line: str, warn: Callable[[str], None], *, name: str, param: str) -> None:
        if on_bad_line not in BAD_LINE_POLICIES:
            hint = did_you_mean(on_bad_line, BAD_LINE_POLICIES) or f"use one of: {', '.join(BAD_LINE_POLICIES)}"
            raise UsageError(f"unknown --on-bad-line {on_bad_line!r}", hint=hint)
        self._fail = on_bad_line == "fail"
        self._warn = warn
        self._name = name
        self._param = param
        #: bad records skipped so far (``skip``)
        self.skipped = 0

    def bad(self, line: int, text: str, reason: str | None = None) -> None:
        """A record that does not become a ``T``: raise (fail) or warn/count (skip)."""
        self.report(line, f"stdin line {line}: cannot read {show(text)} as {self._name} for parameter '{self._param}'", reason)

    def report(self, line: int, message: str, reason: str | None) -> None:
        """``bad`` with the message made: raise ``BadRecord`` (fail) or warn/count (skip)."""
        if self._fail:
            advice = "pass --on-bad-line skip to drop bad records and go on"
            raise BadRecord(message, hint=f"{reason}; {advice}" if reason else advice, line=line)
        self.skipped += 1
        if self.skipped <= SHOWN_BAD_RECORDS:
            self._warn(message + (f" ({reason})" if reason else ""))

    def summary(self) -> str | None:
        """For skip mode, at the end: how many bad records were dropped; None when there were none."""
        if not self.skipped:
            return None
        noun = "record" if self.skipped == 1 else "records"
        text = f"skipped {self.skipped} bad stdin {noun}"
        if self.skipped > SHOWN_BAD_RECORDS:
            text += f" ({SHOWN_BAD_RECORDS} shown above)"
        return text


def show(text: str) -> str:
    """A record's text quoted for a message, cut with an ellipsis when long."""
    return repr(text) if len(text) <= _SHOW_CHARS else repr(text[:_SHOW_CHARS]) + "…"


def reason(exc: BaseException) -> str | None:
    """What to add to a bad-record message: our own explanation, never Python's ``invalid literal`` text."""
    if isinstance(exc, CoercionError):
        return exc.detail
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc.msg} at column {exc.colno}"
    if type(exc) is ValueError and not str(exc).startswith(("invalid literal", "could not convert")):
        return str(exc)
    return None


def utf8_reason(exc: UnicodeDecodeError) -> str:
    """Where a line stops being UTF-8, for the hint."""
    return f"not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at column {exc.start + 1})"

