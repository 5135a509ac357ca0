"""Text and JSON → values of a parameter's annotation: the one place types are read.

Owns the ``--arg NAME=VALUE`` rules (``coerce_text``, ``bind_arguments``), the
checking of already-parsed JSON against an annotation (``coerce_json``, used for
``--format jsonl`` and for JSON lines/objects), readable type names for
messages, and which parameters are streams (``Iterator[T]`` and friends).
``records`` builds on it for stdin. Imports only the stdlib and
``skyctl.errors`` (no typer/rich): it must stay cheap and testable alone.

- ``typeinfo``: reading annotations (strip, resolve, record fields, names);
- ``walker``: the one walk over an annotation's form, for every mode;
- ``textleaves`` / ``jsonleaves``: the two leaf tables (text, parsed JSON);
- ``convert``: the public converters; ``binding``: streams and ``--arg``.
"""

from __future__ import annotations

from skyctl.coerce.binding import bind_arguments, stream_item_type, stream_parameters
from skyctl.coerce.convert import coerce_json, coerce_text, json_converter, text_converter
from skyctl.coerce.textleaves import parse_bool, parse_loose
from skyctl.coerce.typeinfo import (
    Field,
    is_any,
    is_record_class,
    record_fields,
    resolve_annotations,
    strip_annotation,
    type_name,
)
from skyctl.coerce.walker import CoercionError

__all__ = [
    "CoercionError",
    "Field",
    "bind_arguments",
    "coerce_json",
    "coerce_text",
    "is_any",
    "is_record_class",
    "json_converter",
    "parse_bool",
    "parse_loose",
    "record_fields",
    "resolve_annotations",
    "stream_item_type",
    "stream_parameters",
    "strip_annotation",
    "text_converter",
    "type_name",
]
