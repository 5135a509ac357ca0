"""Text and JSON → values of a parameter's annotation: the one place types are read.

Owns the ``--arg NAME=VALUE`` rules (``coerce_text``, ``bind_arguments``), the
checking of already-parsed JSON against an annotation (``coerce_json``, used for
``--format jsonl`` and for JSON lines/objects), readable type names for
messages, and which parameters are streams (``Iterator[T]`` and friends).
``records`` builds on it for stdin. Imports only the stdlib and
``skyctl.errors`` (no typer/rich): it must stay cheap and testable alone.

Converters are compiled once per annotation and cached, so ``records`` can call
them per stdin record without re-inspecting the type each time.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import datetime
import decimal
import enum
import functools
import inspect
import json
import pathlib
import types
import typing
from typing import Any, Callable

from skyctl.errors import UsageError, did_you_mean

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

NoneType = type(None)
_EMPTY = inspect.Parameter.empty

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_NONE = frozenset({"none", "null"})

#: origins whose value is fed item by item (``pipe``'s stream parameter)
_STREAM_ORIGINS = (cabc.Iterator, cabc.Iterable, cabc.Generator)
#: origins read as a list of items
_LIST_ORIGINS = frozenset(
    {list, cabc.Sequence, cabc.MutableSequence, cabc.Collection, *_STREAM_ORIGINS}
)
_SET_ORIGINS = frozenset({set, frozenset, cabc.Set, cabc.MutableSet})
_DICT_ORIGINS = frozenset({dict, cabc.Mapping, cabc.MutableMapping})
_UNION_ORIGINS = (typing.Union, types.UnionType)


class CoercionError(ValueError):
    """value could not be read as the annotation.

    ``value`` is the text that failed (for a JSON value, its JSON text, and
    ``is_json`` is set so messages show it unquoted) and ``expected`` the
    readable type name. ``detail`` adds what went wrong inside a container or
    record (``item 2: expected int, got 'x'``, ``missing field 'y'``); it is
    what a hint should show, since the message already names type and value.
    """

    def __init__(self, value: str, expected: str, *, detail: str | None = None, is_json: bool = False) -> None:
        self.value = value
        self.expected = expected
        self.detail = detail
        self.is_json = is_json
        shown = value if is_json else repr(value)
        super().__init__(f"expected {expected}, got {shown}" + (f" ({detail})" if detail else ""))

    @property
    def reason(self) -> str:
        """The most specific explanation: the detail when there is one, else the whole message."""
        return self.detail or str(self)


# --------------------------------------------------------------------------- annotations


def strip_annotation(annotation: object) -> object:
    """The annotation that decides coercion: ``Annotated``/``NewType`` unwrapped, a TypeVar → its bound."""
    while True:
        if typing.get_origin(annotation) is typing.Annotated:
            annotation = annotation.__origin__  # type: ignore[attr-defined]
        elif hasattr(annotation, "__supertype__"):  # typing.NewType
            annotation = annotation.__supertype__  # type: ignore[attr-defined]
        elif isinstance(annotation, typing.TypeVar):
            annotation = annotation.__bound__ if annotation.__bound__ is not None else Any
        else:
            return annotation


def is_any(annotation: object) -> bool:
    """True for "no type information": unannotated, ``Any``, ``object``, an unresolved string."""
    return (
        annotation is _EMPTY
        or annotation is Any
        or annotation is object
        or isinstance(annotation, (str, typing.ForwardRef))
    )


def _eval_annotation(text: str, globalns: dict[str, Any]) -> object:
    """A string annotation evaluated in the function's module, or the string when it cannot be."""
    try:
        return eval(text, dict(globalns))  # noqa: S307 - the user's own annotation, in their module
    except Exception:
        return text


def resolve_annotations(fn: Callable[..., Any]) -> dict[str, object]:
    """Parameter name → resolved annotation (``inspect.Parameter.empty`` when unannotated).

    ``typing.get_type_hints`` first (handles ``from __future__ import annotations``);
    when it fails (one unresolvable name spoils it for every parameter), each
    string annotation is evaluated on its own, and left as the string (read as
    unannotated) only if that fails too.
    """
    signature = inspect.signature(fn)
    inner = inspect.unwrap(fn)
    try:
        hints: dict[str, object] = typing.get_type_hints(inner, include_extras=True)
    except Exception:
        hints = {}
    globalns = getattr(inner, "__globals__", None)
    if globalns is None:
        module = inspect.getmodule(inner)
        globalns = vars(module) if module is not None else {}
    resolved: dict[str, object] = {}
    for name, parameter in signature.parameters.items():
        annotation = hints.get(name, parameter.annotation)
        if isinstance(annotation, str):
            annotation = _eval_annotation(annotation, globalns)
        resolved[name] = annotation
    return resolved


def _is_typeddict(annotation: object) -> bool:
    return isinstance(annotation, type) and typing.is_typeddict(annotation)


def _is_namedtuple(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, tuple) and hasattr(annotation, "_fields")


def _is_dataclass(annotation: object) -> bool:
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


def is_record_class(annotation: object) -> bool:
    """True for classes filled field by field: dataclass, TypedDict, NamedTuple."""
    return _is_dataclass(annotation) or _is_typeddict(annotation) or _is_namedtuple(annotation)


@dataclasses.dataclass(frozen=True)
class Field:
    """One field of a record class, as coercion needs it."""

    name: str
    annotation: object
    required: bool


def record_fields(cls: type) -> list[Field]:
    """The fields a dataclass / TypedDict / NamedTuple is built from, in declaration order."""
    try:
        hints: dict[str, object] = typing.get_type_hints(cls)
    except Exception:
        module = inspect.getmodule(cls)
        globalns = vars(module) if module is not None else {}
        raw = {}
        for klass in reversed(cls.__mro__):
            raw.update(getattr(klass, "__annotations__", {}))
        hints = {k: _eval_annotation(v, globalns) if isinstance(v, str) else v for k, v in raw.items()}
    if _is_dataclass(cls):
        return [
            Field(
                f.name,
                hints.get(f.name, Any),
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            )
            for f in dataclasses.fields(cls)
            if f.init
        ]
    if _is_typeddict(cls):
        required = getattr(cls, "__required_keys__", frozenset(hints))
        return [Field(name, annotation, name in required) for name, annotation in hints.items()]
    defaults = getattr(cls, "_field_defaults", {})
    return [Field(name, hints.get(name, Any), name not in defaults) for name in cls._fields]  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- names


def type_name(annotation: object) -> str:
    """A readable name for messages: ``int``, ``list[int]``, ``int | None``, ``Literal['a', 'b']``."""
    if typing.get_origin(annotation) is typing.Annotated:
        return type_name(annotation.__origin__)  # type: ignore[attr-defined]
    if annotation is _EMPTY or annotation is Any:
        return "Any"
    if annotation is None or annotation is NoneType:
        return "None"
    if annotation is Ellipsis:
        return "..."
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, typing.ForwardRef):
        return annotation.__forward_arg__
    if isinstance(annotation, typing.TypeVar):
        return annotation.__name__
    if isinstance(annotation, list):  # Callable's parameter list
        return "[" + ", ".join(type_name(a) for a in annotation) + "]"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in _UNION_ORIGINS:
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Literal:
        return "Literal[" + ", ".join(_literal_repr(v) for v in args) + "]"
    if origin is not None:
        name = getattr(origin, "__name__", None) or repr(origin).replace("typing.", "")
        if not args:
            return name
        return f"{name}[{', '.join(type_name(a) for a in args)}]"
    if hasattr(annotation, "__supertype__"):  # NewType
        return annotation.__name__  # type: ignore[attr-defined]
    if isinstance(annotation, type):
        return annotation.__name__
    return repr(annotation).replace("typing.", "")


def _literal_repr(value: object) -> str:
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    return repr(value)


# --------------------------------------------------------------------------- streams


def stream_item_type(annotation: object) -> object | None:
    """``T`` of a stream annotation (``Iterator[T]``, ``Iterable[T]``, ``Generator[T, ...]``, optionally ``| None``).

    Bare ``Iterator``/``Iterable``/``Generator`` give ``typing.Any``; any other
    annotation gives None (the parameter is not a stream).
    """
    annotation = strip_annotation(annotation)
    if annotation in _STREAM_ORIGINS:
        return Any
    origin = typing.get_origin(annotation)
    if origin in _STREAM_ORIGINS:
        args = typing.get_args(annotation)
        return args[0] if args else Any
    if origin in _UNION_ORIGINS:
        args = typing.get_args(annotation)
        members = [a for a in args if a is not NoneType]
        if len(members) == 1 and len(args) == 2:
            return stream_item_type(members[0])
    return None


def stream_parameters(fn: Callable[..., Any]) -> dict[str, object]:
    """Parameter name → item type ``T`` for every stream-annotated parameter, in signature order.

    ``*args``/``**kwargs`` are never streams: ``pipe`` feeds one named value.
    """
    kinds = inspect.signature(fn).parameters
    found: dict[str, object] = {}
    for name, annotation in resolve_annotations(fn).items():
        if kinds[name].kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        item = stream_item_type(annotation)
        if item is not None:
            found[name] = item
    return found


# --------------------------------------------------------------------------- text converters

TextConverter = Callable[[str], object]
JsonConverter = Callable[[object], object]


_CACHE_LIMIT = 1024


def _cache_key(annotation: object) -> object:
    """A key that tells apart what ``==`` does not: ``int | str`` vs ``str | int``, ``Literal[1]`` vs ``Literal[True]``."""
    args = typing.get_args(annotation)
    if not args:
        return (type(annotation), annotation)
    return (typing.get_origin(annotation), tuple(_cache_key(a) for a in args))


def _cached(
    cache: dict[object, Callable[[Any], object]], build: Callable[[object], Callable[[Any], object]], annotation: object
) -> Callable[[Any], object]:
    """``build(annotation)``, once per annotation; unhashable ones (odd ``Annotated`` metadata) are built each time."""
    try:
        key = _cache_key(annotation)
        return cache[key]
    except TypeError:
        return build(annotation)
    except KeyError:
        pass
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    converter = cache[key] = build(annotation)
    return converter


def _lazy(build: Callable[[], Callable[[Any], object]]) -> Callable[[Any], object]:
    """A converter compiled on first use: lets record classes refer to themselves (``children: list[Node]``)."""
    compiled: list[Callable[[Any], object]] = []

    def convert(value: Any) -> object:
        if not compiled:
            compiled.append(build())
        return compiled[0](value)

    return convert


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


def _scalar(parse: Callable[[str], object], expected: str) -> TextConverter:
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


def _element_from_arg(annotation: object) -> Callable[[object], object]:
    """Convert one item of an ``--arg`` array/object: text items by the text rules, others by JSON rules."""
    if is_any(strip_annotation(annotation)):
        return lambda value: value
    from_text = text_converter(annotation)
    from_json = json_converter(annotation)

    def convert(value: object) -> object:
        return from_text(value) if isinstance(value, str) else from_json(value)

    return convert


def _nested(text: str, expected: str, where: str, inner: CoercionError) -> CoercionError:
    """The container's error, saying which item/field/key failed and why (innermost first)."""
    return CoercionError(text, expected, detail=f"{where}: {inner.reason}")


def text_converter(annotation: object) -> TextConverter:
    """A function turning text into a value of ``annotation`` by the ``--arg`` rules.

    Compiled once per annotation and cached, so per-record callers pay the
    type inspection only once.
    """
    return _cached(_TEXT_CONVERTERS, _build_text, annotation)


_TEXT_CONVERTERS: dict[object, TextConverter] = {}


def _build_text(annotation: object) -> TextConverter:
    annotation = strip_annotation(annotation)
    expected = type_name(annotation)
    if is_any(annotation):
        return parse_loose
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)

    if origin in _UNION_ORIGINS:
        return _text_union(annotation, args, expected)
    if origin is typing.Literal:
        return _text_literal(args, expected)
    if annotation is NoneType or annotation is None:
        return _text_union(annotation, (NoneType,), expected)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _text_enum(annotation, expected)
    if annotation is str:
        return str
    if annotation is bool:
        return parse_bool
    if annotation is int:
        return _scalar(int, expected)
    if annotation is float:
        return _scalar(float, expected)
    if annotation is bytes:
        return str.encode
    if annotation in (datetime.datetime, datetime.date, datetime.time):
        return _scalar(lambda text: annotation.fromisoformat(text.strip()), expected)  # type: ignore[attr-defined]
    if origin in _LIST_ORIGINS or annotation in _LIST_ORIGINS:
        return _text_items(args[0] if args else Any, list, expected)
    if origin in _SET_ORIGINS or annotation in _SET_ORIGINS:
        return _text_items(args[0] if args else Any, frozenset if (origin or annotation) is frozenset else set, expected)
    if origin is tuple or annotation is tuple:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return _text_items(args[0] if args else Any, tuple, expected)
        return _text_fixed_tuple(args, expected)
    if origin in _DICT_ORIGINS or annotation in _DICT_ORIGINS:
        return _text_dict(args, expected)
    if is_record_class(annotation):
        from_json = json_converter(annotation)

        def record(text: str) -> object:
            try:
                value = json.loads(text)
            except ValueError:
                raise CoercionError(text, expected) from None
            return from_json(value)

        return record
    if isinstance(annotation, type):
        # Path, Decimal, UUID, str/int subclasses, ...: built from the text itself.
        return _scalar(annotation, expected)
    return _unsupported(expected)


def _unsupported(expected: str) -> Callable[[Any], object]:
    def convert(value: Any) -> object:
        is_json = not isinstance(value, str)
        shown = _json_text(value) if is_json else value
        raise CoercionError(shown, expected, detail=f"skyctl cannot build {expected} values", is_json=is_json)

    return convert


def _text_union(annotation: object, args: tuple[object, ...], expected: str) -> TextConverter:
    allows_none = NoneType in args
    members = [text_converter(a) for a in args if a is not NoneType]

    def convert(text: str) -> object:
        if allows_none and text.strip().lower() in _NONE:
            return None
        last: CoercionError | None = None
        for member in members:
            try:
                return member(text)
            except CoercionError as exc:
                last = exc
        raise CoercionError(text, expected, detail=last.detail if last is not None and len(members) == 1 else None)

    return convert


def _text_literal(args: tuple[object, ...], expected: str) -> TextConverter:
    choices = [(value, text_converter(type(value) if value is not None else NoneType)) for value in args]

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


def _text_enum(cls: type[enum.Enum], expected: str) -> TextConverter:
    members = list(cls)
    value_parsers = [(m, text_converter(type(m.value)) if not isinstance(m.value, str) else str) for m in members]
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


def _text_items(item: object, build: Callable[[Any], object], expected: str) -> TextConverter:
    from_arg = _element_from_arg(item)
    from_text = text_converter(item)

    def convert(text: str) -> object:
        items, is_json = _split_items(text, expected)
        parse = from_arg if is_json else from_text
        values = []
        for position, value in enumerate(items, 1):
            try:
                values.append(parse(value))
            except CoercionError as exc:
                raise _nested(text, expected, f"item {position}", exc) from None
        try:
            return build(values)
        except TypeError:  # unhashable items for a set
            raise CoercionError(text, expected) from None

    return convert


def _text_fixed_tuple(args: tuple[object, ...], expected: str) -> TextConverter:
    def convert(text: str) -> object:
        items, is_json = _split_items(text, expected)
        if len(items) != len(args):
            raise CoercionError(text, expected, detail=f"got {len(items)} value{'s' if len(items) != 1 else ''}, need {len(args)}")
        values = []
        for position, (value, item_type) in enumerate(zip(items, args), 1):
            parse = _element_from_arg(item_type) if is_json else text_converter(item_type)
            try:
                values.append(parse(value))
            except CoercionError as exc:
                raise _nested(text, expected, f"item {position}", exc) from None
        return tuple(values)

    return convert


def _text_dict(args: tuple[object, ...], expected: str) -> TextConverter:
    key_type, value_type = args if len(args) == 2 else (Any, Any)
    key_is_any = is_any(strip_annotation(key_type))
    parse_key = text_converter(key_type)
    parse_value = _element_from_arg(value_type)

    def convert(text: str) -> object:
        try:
            value = json.loads(text)
        except ValueError:
            raise CoercionError(text, expected) from None
        if not isinstance(value, dict):
            raise CoercionError(text, expected)
        result = {}
        for key, item in value.items():
            try:
                result[key if key_is_any else parse_key(key)] = parse_value(item)
            except CoercionError as exc:
                raise _nested(text, expected, f"key {key!r}", exc) from None
        return result

    return convert


def coerce_text(text: str, annotation: object) -> object:
    """``text`` read as ``annotation`` by the ``--arg`` rules; raises ``CoercionError``."""
    return text_converter(annotation)(text)


# --------------------------------------------------------------------------- JSON converters


def _json_text(value: object) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return repr(value)


def _json_error(value: object, expected: str, where: str | None = None, inner: CoercionError | None = None) -> CoercionError:
    """``expected X, got <json>``, with which item/field/key failed when ``inner`` is given."""
    if inner is None:
        return CoercionError(_json_text(value), expected, is_json=True)
    error = _nested("", expected, where or "", inner)
    return CoercionError(_json_text(value), expected, detail=error.detail, is_json=True)


def json_converter(annotation: object) -> JsonConverter:
    """A function checking and converting a parsed JSON value to ``annotation``, compiled once and cached."""
    return _cached(_JSON_CONVERTERS, _build_json, annotation)


_JSON_CONVERTERS: dict[object, JsonConverter] = {}


def _build_json(annotation: object) -> JsonConverter:
    annotation = strip_annotation(annotation)
    expected = type_name(annotation)
    if is_any(annotation):
        return lambda value: value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)

    if origin in _UNION_ORIGINS:
        return _json_union(args, expected)
    if origin is typing.Literal:

        def literal(value: object) -> object:
            for choice in args:
                if isinstance(choice, enum.Enum) and not isinstance(value, enum.Enum):
                    if value == choice.value and type(value) is type(choice.value):
                        return choice
                elif value == choice and type(value) is type(choice):
                    return choice
            raise _json_error(value, expected)

        return literal
    if annotation is NoneType or annotation is None:
        return _json_check(lambda v: v is None, lambda v: v, expected)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _json_enum(annotation, expected)
    if annotation is bool:
        return _json_check(lambda v: isinstance(v, bool), lambda v: v, expected)
    if annotation is int:
        return _json_check(
            lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
            int,
            expected,
        )
    if annotation is float:
        return _json_check(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), float, expected)
    if annotation is str:
        return _json_check(lambda v: isinstance(v, str), lambda v: v, expected)
    if annotation is bytes:
        return _json_check(lambda v: isinstance(v, str), str.encode, expected)
    if annotation is decimal.Decimal:
        return _json_check(
            lambda v: isinstance(v, (int, float, str)) and not isinstance(v, bool),
            lambda v: decimal.Decimal(str(v)),
            expected,
        )
    if origin in _LIST_ORIGINS or annotation in _LIST_ORIGINS:
        return _json_items(args[0] if args else Any, list, expected)
    if origin in _SET_ORIGINS or annotation in _SET_ORIGINS:
        return _json_items(args[0] if args else Any, frozenset if (origin or annotation) is frozenset else set, expected)
    if origin is tuple or annotation is tuple:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return _json_items(args[0] if args else Any, tuple, expected)
        return _json_fixed_tuple(args, expected)
    if origin in _DICT_ORIGINS or annotation in _DICT_ORIGINS:
        return _json_dict(args, expected)
    if is_record_class(annotation):
        return _json_record(annotation, expected)  # type: ignore[arg-type]
    if isinstance(annotation, type):
        from_text = text_converter(annotation)

        def other(value: object) -> object:
            if isinstance(value, annotation):
                return value
            if isinstance(value, str):
                try:
                    return from_text(value)
                except CoercionError:
                    pass
            raise _json_error(value, expected)

        return other
    return _unsupported(expected)


def _json_check(accept: Callable[[object], bool], build: Callable[[Any], object], expected: str) -> JsonConverter:
    def convert(value: object) -> object:
        if accept(value):
            return build(value)
        raise _json_error(value, expected)

    return convert


def _json_union(args: tuple[object, ...], expected: str) -> JsonConverter:
    allows_none = NoneType in args
    members = [json_converter(a) for a in args if a is not NoneType]

    def convert(value: object) -> object:
        if value is None and allows_none:
            return None
        last: CoercionError | None = None
        for member in members:
            try:
                return member(value)
            except CoercionError as exc:
                last = exc
        detail = last.detail if last is not None and len(members) == 1 else None  # Optional[X]: X's why
        raise CoercionError(_json_text(value), expected, detail=detail, is_json=True)

    return convert


def _json_enum(cls: type[enum.Enum], expected: str) -> JsonConverter:
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


def _json_items(item: object, build: Callable[[Any], object], expected: str) -> JsonConverter:
    convert_item = json_converter(item)

    def convert(value: object) -> object:
        if not isinstance(value, (list, tuple)):
            raise _json_error(value, expected)
        values = []
        for position, element in enumerate(value, 1):
            try:
                values.append(convert_item(element))
            except CoercionError as exc:
                raise _json_error(value, expected, f"item {position}", exc) from None
        try:
            return build(values)
        except TypeError:
            raise _json_error(value, expected) from None

    return convert


def _json_fixed_tuple(args: tuple[object, ...], expected: str) -> JsonConverter:
    converters = [json_converter(a) for a in args]

    def convert(value: object) -> object:
        if not isinstance(value, (list, tuple)) or len(value) != len(converters):
            raise _json_error(value, expected)
        values = []
        for position, (element, convert_item) in enumerate(zip(value, converters), 1):
            try:
                values.append(convert_item(element))
            except CoercionError as exc:
                raise _json_error(value, expected, f"item {position}", exc) from None
        return tuple(values)

    return convert


def _json_dict(args: tuple[object, ...], expected: str) -> JsonConverter:
    key_type, value_type = args if len(args) == 2 else (Any, Any)
    key_from_text = text_converter(key_type) if not is_any(strip_annotation(key_type)) else (lambda k: k)
    key_from_json = json_converter(key_type)
    convert_value = json_converter(value_type)

    def convert(value: object) -> object:
        if not isinstance(value, dict):
            raise _json_error(value, expected)
        result = {}
        for key, element in value.items():
            try:
                converted_key = key_from_text(key) if isinstance(key, str) else key_from_json(key)
                result[converted_key] = convert_value(element)
            except CoercionError as exc:
                raise _json_error(value, expected, f"key {key!r}", exc) from None
        return result

    return convert


def _json_record(cls: type, expected: str) -> JsonConverter:
    """An object fills the fields by name (a NamedTuple also takes an array); unknown keys are ignored."""
    is_typeddict = _is_typeddict(cls)
    fields = record_fields(cls)
    converters = {f.name: _lazy(functools.partial(json_converter, f.annotation)) for f in fields}

    def convert(value: object) -> object:
        if _is_namedtuple(cls) and isinstance(value, list):
            value = dict(zip((f.name for f in fields), value))
        if not isinstance(value, dict):
            raise _json_error(value, expected)
        kwargs = {}
        for field in fields:
            if field.name not in value:
                if field.required:
                    raise CoercionError(_json_text(value), expected, detail=f"missing field {field.name!r}", is_json=True)
                continue
            try:
                kwargs[field.name] = converters[field.name](value[field.name])
            except CoercionError as exc:
                raise _json_error(value, expected, f"field {field.name!r}", exc) from None
        if is_typeddict:
            return kwargs
        try:
            return cls(**kwargs)
        except Exception as exc:  # the class's own validation (__post_init__)
            raise CoercionError(_json_text(value), expected, detail=f"{type(exc).__name__}: {exc}", is_json=True) from None

    return convert


def coerce_json(value: object, annotation: object) -> object:
    """An already-parsed JSON ``value`` checked and converted to ``annotation``; raises ``CoercionError``.

    An int is a valid float (and an integral float a valid int); an array
    becomes a list/tuple/set; an object fills a dict, dataclass or TypedDict
    (missing required fields fail, unknown keys are ignored).
    """
    return json_converter(annotation)(value)


# --------------------------------------------------------------------------- --arg binding


def _example(annotation: object) -> str | None:
    """A sample ``--arg`` value for hints, or None when there is no obvious one."""
    annotation = strip_annotation(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    simple = {int: "10", float: "0.5", str: "text", bool: "true", bytes: "text"}
    if annotation in simple:
        return simple[annotation]  # type: ignore[index]
    if isinstance(annotation, type) and issubclass(annotation, pathlib.PurePath):
        return "data/file.txt"
    if origin in _UNION_ORIGINS:
        return next((e for a in args if a is not NoneType and (e := _example(a))), None)
    if origin is typing.Literal:
        return str(args[0].value if isinstance(args[0], enum.Enum) else args[0]) if args else None
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        first = next(iter(annotation), None)
        return None if first is None else str(first.value)
    if origin in _LIST_ORIGINS | _SET_ORIGINS or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        item = _example(args[0]) if args else "1"
        return f"{item},{item}" if item and "," not in item else None
    if origin is tuple and args:
        items = [_example(a) for a in args]
        return ",".join(items) if all(i and "," not in i for i in items) else None  # type: ignore[misc]
    return None


def _hint_for(annotation: object, name: str) -> str | None:
    """How to write a value of ``annotation``, as a one-line hint."""
    annotation = strip_annotation(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    example = _example(annotation)
    shown = f", e.g. --arg {name}={example}" if example is not None else ""
    if origin in _UNION_ORIGINS and NoneType in args:
        members = [a for a in args if a is not NoneType]
        inner = _hint_for(members[0], name) if len(members) == 1 else None
        return f"{inner}; or none for None" if inner else f"pass none for None{shown}"
    if annotation is int:
        return f"pass a whole number{shown}"
    if annotation is float:
        return f"pass a number{shown}"
    if annotation is bool:
        return f"pass true/false, yes/no, on/off or 1/0{shown}"
    if origin is typing.Literal:
        return "pass one of: " + ", ".join(_literal_repr(v) for v in args)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        values = ", ".join(repr(m.value) for m in annotation)
        names = ", ".join(annotation.__members__)
        return f"pass one of: {values} (or a name: {names})"
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        return f"pass {len(args)} values as a JSON array or comma-separated{shown}"
    if origin in _LIST_ORIGINS | _SET_ORIGINS or annotation in _LIST_ORIGINS | _SET_ORIGINS or origin is tuple or annotation is tuple:
        return f"pass a JSON array or comma-separated values{shown}"
    if origin in _DICT_ORIGINS or annotation in _DICT_ORIGINS:
        return f"""pass a JSON object, e.g. --arg {name}='{{"key": 1}}'"""
    if is_record_class(annotation):
        keys = ", ".join(f.name for f in record_fields(annotation))  # type: ignore[arg-type]
        return f"pass a JSON object with keys: {keys}"
    if annotation in (datetime.datetime, datetime.date, datetime.time):
        return "pass an ISO 8601 value, e.g. 2024-01-31 or 2024-01-31T12:00"
    return None


def _signature_text(fn: Callable[..., Any], annotations: dict[str, object]) -> str:
    """``fibonacci(n: int, window: int = 3)``: what the function takes, for messages."""
    parts = []
    for parameter in inspect.signature(fn).parameters.values():
        prefix = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}.get(parameter.kind, "")
        text = prefix + parameter.name
        annotation = annotations.get(parameter.name, _EMPTY)
        if annotation is not _EMPTY:
            text += f": {type_name(annotation)}"
        if parameter.default is not _EMPTY:
            text += f" = {parameter.default!r}"
        parts.append(text)
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return f"{name}({', '.join(parts)})"


def bind_arguments(fn: Callable[..., Any], raw_args: list[str], *, stream_param: str | None = None) -> dict[str, object]:
    """``--arg NAME=VALUE`` strings → ``{name: value}`` coerced by ``fn``'s annotations.

    Returns only the parameters given (the caller's ``Signature.bind`` applies
    defaults). Raises ``UsageError`` (one line, naming the parameter, type and
    value) for a missing ``=``, an unknown or repeated NAME, a value that does
    not coerce, or a required parameter left out; ``stream_param`` is exempt
    from "required" because ``pipe`` feeds it from stdin, and may not be given.
    ``**kwargs`` takes any other name, coerced by its own annotation if any.
    """
    parameters = inspect.signature(fn).parameters
    annotations = resolve_annotations(fn)
    var_keyword = next((p for p in parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD), None)
    named = {
        name: p for name, p in parameters.items()
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }

    given: dict[str, str] = {}
    bound: dict[str, object] = {}
    for raw in raw_args:
        name, sep, text = raw.partition("=")
        name = name.strip()
        if not sep or not name:
            first = next(iter(named), "NAME")
            raise UsageError(f"invalid --arg {raw!r}: expected NAME=VALUE", hint=f"e.g. --arg {first}=VALUE")
        if name in named:
            annotation = annotations[name]
        elif var_keyword is not None:
            annotation = annotations[var_keyword.name]
        else:
            signature = _signature_text(fn, annotations)
            hint = did_you_mean(name, list(named)) or (
                f"it takes: {', '.join(named)}" if named else "it takes no arguments"
            )
            raise UsageError(f"unknown argument {name!r} for {signature}", hint=hint)
        expected = type_name(annotation)
        if name in given:
            raise UsageError(
                f"--arg {name} given twice ({name}: {expected}): {given[name]!r} and {text!r}",
                hint=f"pass --arg {name}=VALUE once",
            )
        if name == stream_param:
            raise UsageError(
                f"--arg {name} cannot be given: parameter {name!r} ({expected}) is fed from stdin by pipe, got {text!r}",
                hint=f"drop --arg {name}, or pick another stream parameter with --param",
            )
        given[name] = text
        try:
            bound[name] = coerce_text(text, annotation)
        except CoercionError as exc:
            howto = _hint_for(annotation, name)
            hint = "; ".join(part for part in (exc.detail, howto) if part) or None
            raise UsageError(f"invalid value for --arg {name}: expected {expected}, got {text!r}", hint=hint) from None

    missing = [
        name for name, p in named.items()
        if p.default is _EMPTY and name not in given and name != stream_param
    ]
    if missing:
        def describe(name: str) -> str:
            annotation = annotations[name]
            return f"{name!r} ({type_name(annotation)})" if annotation is not _EMPTY else repr(name)

        if len(missing) == 1:
            raise UsageError(f"missing required argument {describe(missing[0])}", hint=f"pass it as --arg {missing[0]}=VALUE")
        raise UsageError(
            "missing required arguments " + ", ".join(describe(n) for n in missing),
            hint="pass them as " + " ".join(f"--arg {n}=VALUE" for n in missing),
        )
    return bound
