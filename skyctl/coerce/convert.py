"""The public converters: text (``--arg`` rules) and parsed JSON → a value of an annotation.

Both modes are walked by ``walker``; importing this module registers them.
"""

from __future__ import annotations

from typing import Callable

from skyctl.coerce.jsonleaves import JSON
from skyctl.coerce.textleaves import TEXT
from skyctl.coerce.walker import Converter

TextConverter = Callable[[str], object]
JsonConverter = Callable[[object], object]


def text_converter(annotation: object) -> TextConverter:
    """A function turning text into a value of ``annotation`` by the ``--arg`` rules.

    Compiled once per annotation and cached, so per-record callers pay the
    type inspection only once.
    """
    return TEXT.converter(annotation)


def json_converter(annotation: object) -> JsonConverter:
    """A function checking and converting a parsed JSON value to ``annotation``, compiled once and cached."""
    converter: Converter = JSON.converter(annotation)
    return converter


def coerce_text(text: str, annotation: object) -> object:
    """``text`` read as ``annotation`` by the ``--arg`` rules; raises ``CoercionError``."""
    return TEXT.converter(annotation)(text)


def coerce_json(value: object, annotation: object) -> object:
    """An already-parsed JSON ``value`` checked and converted to ``annotation``; raises ``CoercionError``.

    An int is a valid float (and an integral float a valid int); an array
    becomes a list/tuple/set; an object fills a dict, dataclass or TypedDict
    (missing required fields fail, unknown keys are ignored).
    """
    return JSON.converter(annotation)(value)
