"""The text leaves: ``--arg NAME=VALUE`` text (and CSV fields) → values.

What the walker does not do itself: scalars (``int``, ``bool`` words,
ISO dates, any class built from its text), ``Literal`` and ``Enum`` choices,
unannotated text, and the text mode's container hooks (a JSON array or
comma-separated items, a JSON object). A record class is read as a JSON object
and then checked by the JSON rules. Stdlib only.
"""

from __future__ import annotations

import datetime
import enum
import json
from typing import Any, Callable

from skyctl.coerce.typeinfo import NoneType
from skyctl.coerce.walker import CoercionError, Converter, Mode

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_NONE = frozenset({"none", "null"})


def parse_bool(text: str) -> bool:
    """true/false, yes/no, on/off, 1/0 in any case, surrounding blanks ignored."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise CoercionError(text, "bool")


def parse_loose(text: str) -> object:
    """Unannotated: a JSON number/bool/null/array/object if the text is one, else the text itself.

    JSON strings stay as typed (``'"x"'``), and NaN/Infinity are not JSON.
    """
    stripped = text.strip()
    if stripped and (stripped[0] in "[{-0123456789" or stripped in ("true", "false", "null")):
        try:
            return json.loads(stripped, parse_constant=_reject_constant)
        except ValueError:
            return text
    return text


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _scalar(parse: Callable[[str], object], expected: str) -> Converter:
    def convert(text: str) -> object:
        try:
            return parse(text)
        except CoercionError:
            raise
        except Exception:  # int("x"), Decimal("x"), or a user class's own constructor refusing the text
            raise CoercionError(text, expected) from None

    return convert


def _split_items(text: str, expected: str) -> tuple[list[Any], bool]:
    """A JSON array (items, True) or comma-separated values (items, False); blank text is empty."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise CoercionError(text, expected, detail=f"not a valid JSON array: {exc.msg} at column {exc.colno}") from None
        if not isinstance(items, list):
            raise CoercionError(text, expected)
        return items, True
    if not stripped:
        return [], False
    return [part.strip() for part in stripped.split(",")], False


def _literal(args: tuple[object, ...], expected: str, mode: Mode) -> Converter:
    choices = [(value, mode.converter(type(value) if value is not None else NoneType)) for value in args]

    def convert(text: str) -> object:
        for candidate in (text, text.strip()):
            for value, parse in choices:
                try:
                    if parse(candidate) == value:
                        return value
                except CoercionError:
                    continue
        raise CoercionError(text, expected)

    return convert


def _enum(cls: type[enum.Enum], expected: str, mode: Mode) -> Converter:
    members = list(cls)
    value_parsers = [(m, mode.converter(type(m.value)) if not isinstance(m.value, str) else str) for m in members]
    by_folded_name: dict[str, list[enum.Enum]] = {}
    for name, member in cls.__members__.items():
        by_folded_name.setdefault(name.lower(), []).append(member)

    def convert(text: str) -> object:
        for candidate in (text, text.strip()):
            for member, parse in value_parsers:
                try:
                    if parse(candidate) == member.value:
                        return member
                except (CoercionError, ValueError, TypeError):
                    continue
            if candidate in cls.__members__:
                return cls.__members__[candidate]
        folded = by_folded_name.get(text.strip().lower(), [])
        if len({id(m) for m in folded}) == 1:
            return folded[0]
        raise CoercionError(text, expected)

    return convert


def _record(cls: type, expected: str, mode: Mode) -> Converter:
    """A JSON object, then the JSON rules (so its errors name the field as JSON does)."""
    from_json = mode.inner.converter(cls)

    def record(text: str) -> object:
        try:
            value = json.loads(text)
        except ValueError:
            raise CoercionError(text, expected) from None
        return from_json(value)

    return record


def _iso(cls: Any, expected: str, mode: Mode) -> Converter:
    return _scalar(lambda text: cls.fromisoformat(text.strip()), expected)


def _built_from_text(cls: Any, expected: str, mode: Mode) -> Converter:
    """Path, Decimal, UUID, int/float, str/int subclasses, ...: the class called with the text."""
    return _scalar(cls, expected)


class TextMode(Mode):
    """``--arg`` text: "none"/"null" for None, a JSON array or comma-separated items, a JSON object."""

    value_before_key = True

    def error(self, raw: Any, expected: str, detail: str | None = None) -> CoercionError:
        return CoercionError(raw, expected, detail=detail)

    def is_null(self, raw: Any) -> bool:
        return raw.strip().lower() in _NONE

    def sequence(self, raw: Any, expected: str) -> tuple[Any, bool]:
        return _split_items(raw, expected)

    def mapping(self, raw: Any, expected: str) -> dict[Any, Any]:
        try:
            value = json.loads(raw)
        except ValueError:
            raise CoercionError(raw, expected) from None
        if not isinstance(value, dict):
            raise CoercionError(raw, expected)
        return value

    def length_detail(self, got: int, need: int) -> str | None:
        return f"got {got} value{'s' if got != 1 else ''}, need {need}"


#: a form, or an exact class → leaf
LEAVES: dict[object, Callable[[Any, str, Mode], Converter]] = {
    "any": lambda part, expected, mode: parse_loose,
    "literal": _literal,
    "enum": _enum,
    "record": _record,
    "class": _built_from_text,
    str: lambda cls, expected, mode: str,
    bool: lambda cls, expected, mode: parse_bool,
    int: _built_from_text,
    float: _built_from_text,
    bytes: lambda cls, expected, mode: str.encode,
    datetime.datetime: _iso,
    datetime.date: _iso,
    datetime.time: _iso,
}

TEXT = TextMode("text", inner="json", leaves=LEAVES)
