"""Reading annotations: what a parameter's type is, its fields, its readable name.

No conversion here: ``walker`` turns what this module recognises into
converters. Stdlib only.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import enum
import inspect
import types
import typing
from typing import Any, Callable

NoneType = type(None)
EMPTY = inspect.Parameter.empty

#: origins whose value is fed item by item (``pipe``'s stream parameter)
STREAM_ORIGINS = (cabc.Iterator, cabc.Iterable, cabc.Generator)
#: origins read as a list of items
LIST_ORIGINS = frozenset(
    {list, cabc.Sequence, cabc.MutableSequence, cabc.Collection, *STREAM_ORIGINS}
)
SET_ORIGINS = frozenset({set, frozenset, cabc.Set, cabc.MutableSet})
DICT_ORIGINS = frozenset({dict, cabc.Mapping, cabc.MutableMapping})
UNION_ORIGINS = (typing.Union, types.UnionType)

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
        annotation is EMPTY
        or annotation is Any
        or annotation is object
        or isinstance(annotation, (str, typing.ForwardRef))
    )


def eval_annotation(text: str, globalns: dict[str, Any]) -> object:
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
            annotation = eval_annotation(annotation, globalns)
        resolved[name] = annotation
    return resolved


def is_typeddict(annotation: object) -> bool:
    """A TypedDict class (its records are plain dicts)."""
    return isinstance(annotation, type) and typing.is_typeddict(annotation)


def is_namedtuple(annotation: object) -> bool:
    """A NamedTuple class (its records may also come as an array)."""
    return isinstance(annotation, type) and issubclass(annotation, tuple) and hasattr(annotation, "_fields")


def is_dataclass(annotation: object) -> bool:
    """A dataclass class, not an instance."""
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


def is_record_class(annotation: object) -> bool:
    """True for classes filled field by field: dataclass, TypedDict, NamedTuple."""
    return is_dataclass(annotation) or is_typeddict(annotation) or is_namedtuple(annotation)


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
        hints = {k: eval_annotation(v, globalns) if isinstance(v, str) else v for k, v in raw.items()}
    if is_dataclass(cls):
        return [
            Field(
                f.name,
                hints.get(f.name, Any),
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            )
            for f in dataclasses.fields(cls)
            if f.init
        ]
    if is_typeddict(cls):
        required = getattr(cls, "__required_keys__", frozenset(hints))
        return [Field(name, annotation, name in required) for name, annotation in hints.items()]
    defaults = getattr(cls, "_field_defaults", {})
    return [Field(name, hints.get(name, Any), name not in defaults) for name in cls._fields]  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- names


def type_name(annotation: object) -> str:
    """A readable name for messages: ``int``, ``list[int]``, ``int | None``, ``Literal['a', 'b']``."""
    if typing.get_origin(annotation) is typing.Annotated:
        return type_name(annotation.__origin__)  # type: ignore[attr-defined]
    if annotation is EMPTY or annotation is Any:
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
    if origin in UNION_ORIGINS:
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Literal:
        return "Literal[" + ", ".join(literal_repr(v) for v in args) + "]"
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


def literal_repr(value: object) -> str:
    """A ``Literal`` choice as written in the annotation: ``Color.RED`` for an enum member."""
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    return repr(value)

