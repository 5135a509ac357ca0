"""The JSON leaves: an already-parsed JSON value (``--format jsonl``, JSON in ``--arg``) → values.

Checks rather than parses: an int is a valid float (and an integral float a
valid int), a str is never a number; an enum takes a member's value or name;
any other class takes an instance, or a str read by the text rules. Arrays and
objects (list/tuple/set, dict, dataclass/TypedDict/NamedTuple) are walked by
``walker`` with this mode's hooks. Stdlib only.
"""

from __future__ import annotations

import decimal
import enum
from typing import Any, Callable

from skyctl.coerce.walker import CoercionError, Converter, Mode, json_text


def _json_error(value: object, expected: str, detail: str | None = None) -> CoercionError:
    """``expected X, got <json>``, with what failed inside it when ``detail`` is given."""
    return CoercionError(json_text(value), expected, detail=detail, is_json=True)


def _same(value: object) -> object:
    return value


def _check(accept: Callable[[object], bool], build: Callable[[Any], object]) -> Callable[[Any, str, Mode], Converter]:
    """A leaf: values ``accept`` takes, through ``build``; any other is an error."""

    def leaf(cls: Any, expected: str, mode: Mode) -> Converter:
        def convert(value: object) -> object:
            if accept(value):
                return build(value)
            raise _json_error(value, expected)

        return convert

    return leaf


def _literal(args: tuple[object, ...], expected: str, mode: Mode) -> Converter:
    def literal(value: object) -> object:
        for choice in args:
            if isinstance(choice, enum.Enum) and not isinstance(value, enum.Enum):
                if value == choice.value and type(value) is type(choice.value):
                    return choice
            elif value == choice and type(value) is type(choice):
                return choice
        raise _json_error(value, expected)

    return literal


def _enum(cls: type[enum.Enum], expected: str, mode: Mode) -> Converter:
    def convert(value: object) -> object:
        if isinstance(value, cls):
            return value
        for member in cls:
            if member.value == value and type(member.value) is type(value):
                return member
        if isinstance(value, str) and value in cls.__members__:
            return cls.__members__[value]
        raise _json_error(value, expected)

    return convert


def _instance_or_text(cls: type, expected: str, mode: Mode) -> Converter:
    """Any other class: an instance as it is, or a str read by the text rules."""
    from_text = mode.text.converter(cls)

    def other(value: object) -> object:
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return from_text(value)
            except CoercionError:
                pass
        raise _json_error(value, expected)

    return other


class JsonMode(Mode):
    """Parsed JSON: null for None, an array, an object."""

    def error(self, raw: Any, expected: str, detail: str | None = None) -> CoercionError:
        return _json_error(raw, expected, detail)

    def is_null(self, raw: Any) -> bool:
        return raw is None

    def sequence(self, raw: Any, expected: str) -> tuple[Any, bool]:
        if not isinstance(raw, (list, tuple)):
            raise _json_error(raw, expected)
        return raw, True

    def mapping(self, raw: Any, expected: str) -> dict[Any, Any]:
        if not isinstance(raw, dict):
            raise _json_error(raw, expected)
        return raw


#: a form, or an exact class → leaf
LEAVES: dict[object, Callable[[Any, str, Mode], Converter]] = {
    "any": lambda part, expected, mode: _same,
    "literal": _literal,
    "enum": _enum,
    "class": _instance_or_text,
    bool: _check(lambda v: isinstance(v, bool), _same),
    int: _check(
        lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
        int,
    ),
    float: _check(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), float),
    str: _check(lambda v: isinstance(v, str), _same),
    bytes: _check(lambda v: isinstance(v, str), str.encode),
    decimal.Decimal: _check(
        lambda v: isinstance(v, (int, float, str)) and not isinstance(v, bool),
        lambda v: decimal.Decimal(str(v)),
    ),
}

JSON = JsonMode("json", inner="json", leaves=LEAVES)
