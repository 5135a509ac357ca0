"""Values → the text the CLI prints: the rules for ``--output text`` and ``--output json``.

Shipped to the remote beside ``worker.py`` (stdlib only, no skyctl imports):
for the CLI the worker renders every value itself and sends text, so the
client never unpickles what a remote sends (see ``docs/security.md``). The
client uses the same functions for values it already holds.

The rules, each applied part by part (one odd part never turns the whole
record into something else):

- ``text``: a ``str`` as it is; ``int``/``float``/``bool`` via ``str()``;
  containers (dict, list, tuple, set, frozenset) as compact JSON; anything
  else via ``repr()``.
- ``json``: every value as one JSON document.
- Inside JSON: NaN and ±inf → ``null`` (as JavaScript and pandas write them);
  ``date``/``datetime``/``time`` → ISO 8601 string; ``Decimal`` → its string;
  a dataclass → an object of its fields; set/frozenset/tuple → an array; a
  numpy array or scalar → its ``tolist()``; a key JSON cannot hold → its
  string; a reference cycle → the ``repr()`` of the repeated part; anything
  else → its ``repr()`` string.
- Text that is not valid UTF-8 (a lone surrogate such as ``"\\ud800"``) is
  written with a backslash escape (inside a JSON string that escape is valid
  JSON), never a crash.
"""

from __future__ import annotations

import dataclasses
import io
import json
import json.encoder
import math
import pickle
import sys
from typing import Any, Callable, Sequence

#: the output modes
MODES = ("text", "json")

_CONTAINERS = (dict, list, tuple, set, frozenset)
_PLAIN = frozenset({int, float, bool})


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__qualname__}>"


def _part(value: Any) -> Any:
    """A JSON-able stand-in for one part JSON cannot hold (the encoder's ``default``)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, (set, frozenset)):
        return list(value)
    # a date or a Decimal exists only once its module is loaded: looked up, not imported (the worker's start)
    datetime = sys.modules.get("datetime")
    if datetime is not None and isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    decimal = sys.modules.get("decimal")
    if decimal is not None and isinstance(value, decimal.Decimal):
        return str(value)
    if type(value).__module__ == "numpy" and callable(getattr(value, "tolist", None)):
        try:
            return value.tolist()
        except Exception:
            pass
    return _repr(value)


def _key(key: Any) -> Any:
    """A dict key as JSON can hold it (str, int, bool, None, finite float), else its string."""
    if key is None or isinstance(key, (str, int)):
        return key
    if isinstance(key, float):
        return key if math.isfinite(key) else _repr(key)
    converted = _part(key)
    return converted if isinstance(converted, str) else _repr(key)


def _plain(value: Any, path: set[int]) -> Any:
    """``value`` with every part JSON cannot hold converted (the slow path, for what failed the fast one)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (dict, list, tuple)):
        if id(value) in path:  # a cycle: the repeated part as its repr
            return _repr(value)
        path.add(id(value))
        try:
            if isinstance(value, dict):
                return {_key(k): _plain(v, path) for k, v in value.items()}
            return [_plain(v, path) for v in value]
        finally:
            path.discard(id(value))
    converted = _part(value)
    if isinstance(converted, str):
        return converted
    if id(value) in path:
        return _repr(value)
    path.add(id(value))
    try:
        return _plain(converted, path)
    finally:
        path.discard(id(value))


def _encoder(compact: bool) -> Callable[[Any], str]:
    """One JSON document per call, strict (no NaN, nothing unknown), built once."""
    separators = (",", ":") if compact else (", ", ": ")
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is not None:
        strict = make(None, _part, json.encoder.encode_basestring, None, separators[1], separators[0],
                      False, False, False)

        def encode(value: Any) -> str:
            return "".join(strict(value, 0))

        return encode
    encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=separators, default=_part)
    return encoder.encode


_compact = _encoder(compact=True)
_spaced = _encoder(compact=False)


def _json(value: Any, encode: Callable[[Any], str]) -> str:
    try:
        return encode(value)
    except (ValueError, TypeError, RecursionError):  # NaN or ±inf, an odd key, a cycle: part by part
        pass
    try:
        return encode(_plain(value, set()))
    except (ValueError, TypeError, RecursionError):
        return encode(_repr(value))


def text_line(value: Any) -> str:
    """``--output text`` for one value (it may span lines when a str does)."""
    t = type(value)
    if t is str:
        return value
    if t in _PLAIN:
        return str(value)
    if isinstance(value, str):  # a subclass (a str-mixin Enum): its text as it is, as JSON writes it, not its __str__
        return str.__str__(value)
    if isinstance(value, _CONTAINERS):
        return _json(value, _compact)
    if isinstance(value, (int, float)):
        try:
            return str(value)
        except Exception:
            return _repr(value)
    return _repr(value)


def json_line(value: Any) -> str:
    """``--output json`` for one value: one JSON document on one line."""
    return _json(value, _spaced)


def text_lines(values: Sequence[Any]) -> Sequence[str]:
    """``text_line`` for a whole batch, with fast paths for all-str and all-number batches."""
    return _text_lines(values, set(map(type, values)))


def _text_lines(values: Sequence[Any], types: set[type]) -> Sequence[str]:
    if types == {str}:
        return values
    if types <= _PLAIN:
        return list(map(str, values))
    return list(map(text_line, values))


def json_lines(values: Sequence[Any]) -> list[str]:
    return list(map(json_line, values))


def encode_text(text: str) -> bytes:
    """UTF-8, with a backslash escape for what UTF-8 cannot hold (lone surrogates)."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace")


def render(values: Sequence[Any], mode: str) -> bytes:
    """A batch as the bytes the CLI writes: one line per value (each ended by "\\n").

    The data path's busiest lines: a text batch of strs is joined as it is
    (``str.join`` refuses anything else, so nothing looks at each value's
    type first), and one of plain numbers is formatted in one C call
    (``"%r\\n" * n``: for int, float and bool ``repr`` is ``str``), about half
    the cost of a ``str()`` per value."""
    if not values:
        return b""
    if mode == "text":
        try:  # every value a str (or a str subclass, written as its text too): the common case, no look at types
            return encode_text("\n".join(values) + "\n")
        except TypeError:
            pass
        types = set(map(type, values))
        if types <= _PLAIN:
            return (("%r\n" * len(values)) % tuple(values)).encode()
        lines = _text_lines(values, types)
    else:
        lines = json_lines(values)
    return encode_text("\n".join(lines) + "\n")


def shipped_class(module: str, qualname: str) -> type:
    """Stands for a class of a module the client shipped, in a pickle the worker
    sends the API's client: the client's decoder resolves ``module.qualname``
    in its own copy of that module, and only to a class *defined* there
    (``skyctl.trust.defined_class``: never through what the module imports).
    Never called itself."""
    raise RuntimeError(f"{module}.{qualname}: resolved only by the client's decoder")


def reference_dumps(pickler: Any, shipped: frozenset[str], reference: Callable[[str, str], type]) -> Callable[[Any], bytes]:
    """Pickles values for the API's client with ``pickler`` (a cloudpickle ``Pickler`` class): a class
    from a module the client shipped goes as ``reference(module, qualname)`` (``shipped_class``), never
    by value, so the client's decoder resolves it in its own copy of the module instead of rebuilding
    code the remote sent."""

    class ValuePickler(pickler):  # type: ignore[misc, valid-type]
        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, type) and obj.__module__ in shipped:
                return reference, (obj.__module__, obj.__qualname__)
            return super().reducer_override(obj)

    def dumps(obj: Any) -> bytes:
        buf = io.BytesIO()
        ValuePickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
        return buf.getvalue()

    return dumps


def cloudpickle_dumps(obj: Any) -> bytes:
    """A value pickled for the API's client (the worker's cloudpickle, the highest protocol)."""
    import cloudpickle

    return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def value_dumps(shipped: tuple[str, ...]) -> Callable[[Any], bytes]:
    """How a worker pickles values for the API's client: a class from a module the client shipped goes as
    a reference to it (``shipped_class``, see ``reference_dumps``), never by value."""
    if not shipped:
        return cloudpickle_dumps
    import cloudpickle

    return reference_dumps(cloudpickle.Pickler, frozenset(shipped), shipped_class)
