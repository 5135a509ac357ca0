"""The one annotation walker: an annotation → a converter, for any input mode.

An annotation is recognised once, by ``classify``: its form (Optional/Union,
Literal, Enum, list/set/tuple/dict, record class, a plain class, Any) and its
parts. The container forms (union, items, fixed tuple, dict, record) are built
here, once, for every mode; what differs between reading ``--arg`` text and
checking parsed JSON is a ``Mode``: its leaf table (scalars, Literal, Enum, a
plain class, Any) and a few hooks (how a container's input is unpacked, how a
failure is shown). ``textleaves`` and ``jsonleaves`` each define one.

Converters are compiled once per annotation and mode and cached, so
``records`` can call them per stdin record without re-inspecting the type.
"""

from __future__ import annotations

import enum
import functools
import json
import typing
from typing import Any, Callable, Mapping

from skyctl.coerce.typeinfo import (
    DICT_ORIGINS,
    LIST_ORIGINS,
    SET_ORIGINS,
    UNION_ORIGINS,
    NoneType,
    is_any,
    is_namedtuple,
    is_record_class,
    is_typeddict,
    record_fields,
    strip_annotation,
    type_name,
)

Converter = Callable[[Any], object]
#: a leaf builder: (the form's part — a class, Literal's choices —, the readable type name, the mode) → converter
Leaf = Callable[[Any, str, "Mode"], Converter]


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


# --------------------------------------------------------------------------- forms


def classify(annotation: object) -> tuple[str, Any]:
    """``(form, part)`` of a stripped annotation: the only place annotation shapes are recognised.

    Forms: ``any``; ``union`` (its members; ``None`` is a union of ``None``
    alone); ``literal`` (the choices); ``enum``, ``record``, ``class`` (the
    class); ``items`` ((item type, builder)); ``fixed`` (a fixed tuple's item
    types); ``dict`` ((key type, value type)); ``unsupported``.
    """
    if is_any(annotation):
        return "any", None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in UNION_ORIGINS:
        return "union", args
    if origin is typing.Literal:
        return "literal", args
    if annotation is NoneType or annotation is None:
        return "union", (NoneType,)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "enum", annotation
    if origin in LIST_ORIGINS or annotation in LIST_ORIGINS:
        return "items", (args[0] if args else Any, list)
    if origin in SET_ORIGINS or annotation in SET_ORIGINS:
        return "items", (args[0] if args else Any, frozenset if (origin or annotation) is frozenset else set)
    if origin is tuple or annotation is tuple:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return "items", (args[0] if args else Any, tuple)
        return "fixed", args
    if origin in DICT_ORIGINS or annotation in DICT_ORIGINS:
        return "dict", args if len(args) == 2 else (Any, Any)
    if is_record_class(annotation):
        return "record", annotation
    if isinstance(annotation, type):
        return "class", annotation
    return "unsupported", None


# --------------------------------------------------------------------------- modes


_CACHE_LIMIT = 1024
#: every mode by name, so modes can refer to each other without importing each other
_MODES: dict[str, Mode] = {}


class Mode:
    """One kind of input (``--arg`` text, parsed JSON): its leaf table and its container hooks.

    ``leaves`` maps a form (``"any"``, ``"literal"``, ``"enum"``, ``"class"``
    for a class not listed, or a container form the mode reads its own way)
    or an exact class (``int``, ``datetime.date``) to a leaf builder; every
    form not in it is walked here. ``inner`` names the mode of values found
    already parsed inside this mode's input (a JSON array in ``--arg`` text).
    Subclasses give the hooks.
    """

    #: a dict entry whose key and value are both bad is reported by its value (text) or by its key (JSON)
    value_before_key = False

    def __init__(self, name: str, inner: str, leaves: Mapping[object, Leaf]) -> None:
        self.name = name
        self.inner_name = inner
        self.leaves = leaves
        self.cache: dict[object, Converter] = {}
        _MODES[name] = self

    def error(self, raw: Any, expected: str, detail: str | None = None) -> CoercionError:
        """The error for a raw input that is not an ``expected``."""
        raise NotImplementedError

    def is_null(self, raw: Any) -> bool:
        """The raw input is "no value" (for an Optional)."""
        raise NotImplementedError

    def sequence(self, raw: Any, expected: str) -> tuple[Any, bool]:
        """Raw → (items, True when they are already-parsed values) for list/set/tuple; raises ``error``."""
        raise NotImplementedError

    def mapping(self, raw: Any, expected: str) -> dict[Any, Any]:
        """Raw → a dict for dict/record; raises ``error``."""
        raise NotImplementedError

    def length_detail(self, got: int, need: int) -> str | None:
        """What a fixed tuple's error adds for ``got`` items of ``need``."""
        return None

    @property
    def inner(self) -> Mode:
        """The mode of values found already parsed inside this mode's input."""
        return _MODES[self.inner_name]

    @property
    def text(self) -> Mode:
        """The ``--arg`` text mode: str keys and str values of a plain class are read by its rules."""
        return _MODES["text"]

    def converter(self, annotation: object) -> Converter:
        """The converter of ``annotation`` in this mode, compiled once and cached."""
        try:
            key = _cache_key(annotation)
            return self.cache[key]
        except TypeError:  # unhashable (odd ``Annotated`` metadata): built each time
            return self._build(annotation)
        except KeyError:
            pass
        if len(self.cache) >= _CACHE_LIMIT:
            self.cache.clear()
        converter = self.cache[key] = self._build(annotation)
        return converter

    def element(self, annotation: object) -> Converter:
        """A converter for one item of already-parsed input (a JSON array's item, an object's value).

        In a mode whose inner mode is another (text), a str item is read by
        this mode's rules and anything else by the inner mode's.
        """
        inner = self.inner
        if inner is self:
            return self.converter(annotation)
        if is_any(strip_annotation(annotation)):
            return _same
        own = self.converter(annotation)
        parsed = inner.converter(annotation)

        def convert(value: object) -> object:
            return own(value) if isinstance(value, str) else parsed(value)

        return convert

    def _build(self, annotation: object) -> Converter:
        annotation = strip_annotation(annotation)
        form, part = classify(annotation)
        leaf = self.leaves.get(part if form == "class" else form)
        if leaf is None:
            leaf = self.leaves["class"] if form == "class" else _CONTAINERS.get(form, _unsupported)
        return leaf(part, type_name(annotation), self)


def _same(value: object) -> object:
    return value


def _cache_key(annotation: object) -> object:
    """A key that tells apart what ``==`` does not: ``int | str`` vs ``str | int``, ``Literal[1]`` vs ``Literal[True]``."""
    args = typing.get_args(annotation)
    if not args:
        return (type(annotation), annotation)
    return (typing.get_origin(annotation), tuple(_cache_key(a) for a in args))


def _lazy(build: Callable[[], Converter]) -> Converter:
    """A converter compiled on first use: lets record classes refer to themselves (``children: list[Node]``)."""
    compiled: list[Converter] = []

    def convert(value: Any) -> object:
        if not compiled:
            compiled.append(build())
        return compiled[0](value)

    return convert


# --------------------------------------------------------------------------- the container forms, once for every mode


def _unsupported(part: object, expected: str, mode: Mode) -> Converter:
    def convert(value: Any) -> object:
        is_json = not isinstance(value, str)
        shown = json_text(value) if is_json else value
        raise CoercionError(shown, expected, detail=f"skyctl cannot build {expected} values", is_json=is_json)

    return convert


def json_text(value: object) -> str:
    """A parsed JSON value as compact JSON text, for messages (``repr`` when it is not JSON)."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return repr(value)


def _union(args: tuple[object, ...], expected: str, mode: Mode) -> Converter:
    allows_none = NoneType in args
    members = [mode.converter(a) for a in args if a is not NoneType]
    is_null, error = mode.is_null, mode.error

    def convert(raw: Any) -> object:
        if allows_none and is_null(raw):
            return None
        last: CoercionError | None = None
        for member in members:
            try:
                return member(raw)
            except CoercionError as exc:
                last = exc
        raise error(raw, expected, last.detail if last is not None and len(members) == 1 else None)  # Optional[X]: X's why

    return convert


def _items(part: tuple[object, Callable[[Any], object]], expected: str, mode: Mode) -> Converter:
    item, build = part
    from_parsed = mode.element(item)
    from_own = mode.converter(item)
    sequence, error = mode.sequence, mode.error

    def convert(raw: Any) -> object:
        items, parsed = sequence(raw, expected)
        parse = from_parsed if parsed else from_own
        values = []
        for position, value in enumerate(items, 1):
            try:
                values.append(parse(value))
            except CoercionError as exc:
                raise error(raw, expected, f"item {position}: {exc.reason}") from None
        try:
            return build(values)
        except TypeError:  # unhashable items for a set
            raise error(raw, expected, None) from None

    return convert


def _fixed(args: tuple[object, ...], expected: str, mode: Mode) -> Converter:
    own = [mode.converter(a) for a in args]
    parsed_items = [mode.element(a) for a in args]
    sequence, error, length_detail = mode.sequence, mode.error, mode.length_detail

    def convert(raw: Any) -> object:
        items, parsed = sequence(raw, expected)
        if len(items) != len(args):
            raise error(raw, expected, length_detail(len(items), len(args)))
        values = []
        for position, (value, parse) in enumerate(zip(items, parsed_items if parsed else own), 1):
            try:
                values.append(parse(value))
            except CoercionError as exc:
                raise error(raw, expected, f"item {position}: {exc.reason}") from None
        return tuple(values)

    return convert


def _dict(part: tuple[object, object], expected: str, mode: Mode) -> Converter:
    key_type, value_type = part
    key_from_text = mode.text.converter(key_type) if not is_any(strip_annotation(key_type)) else _same
    key_from_parsed = mode.inner.converter(key_type)
    convert_value = mode.element(value_type)
    mapping, error, value_first = mode.mapping, mode.error, mode.value_before_key

    def convert(raw: Any) -> object:
        value = mapping(raw, expected)
        result = {}
        for key, element in value.items():
            try:
                if value_first:
                    converted_value = convert_value(element)
                converted_key = key_from_text(key) if isinstance(key, str) else key_from_parsed(key)
                result[converted_key] = converted_value if value_first else convert_value(element)
            except CoercionError as exc:
                raise error(raw, expected, f"key {key!r}: {exc.reason}") from None
        return result

    return convert


def _record(cls: type, expected: str, mode: Mode) -> Converter:
    """An object fills the fields by name (a NamedTuple also takes an array); unknown keys are ignored."""
    typeddict = is_typeddict(cls)
    namedtuple = is_namedtuple(cls)
    fields = record_fields(cls)
    converters = {f.name: _lazy(functools.partial(mode.element, f.annotation)) for f in fields}
    mapping, error = mode.mapping, mode.error

    def convert(raw: Any) -> object:
        value = dict(zip((f.name for f in fields), raw)) if namedtuple and isinstance(raw, list) else raw
        value = mapping(value, expected)
        kwargs = {}
        for field in fields:
            if field.name not in value:
                if field.required:
                    raise error(value, expected, f"missing field {field.name!r}")
                continue
            try:
                kwargs[field.name] = converters[field.name](value[field.name])
            except CoercionError as exc:
                raise error(value, expected, f"field {field.name!r}: {exc.reason}") from None
        if typeddict:
            return kwargs
        try:
            return cls(**kwargs)
        except Exception as exc:  # the class's own validation (__post_init__)
            raise error(value, expected, f"{type(exc).__name__}: {exc}") from None

    return convert


_CONTAINERS: dict[str, Leaf] = {
    "union": _union,
    "items": _items,
    "fixed": _fixed,
    "dict": _dict,
    "record": _record,
}
