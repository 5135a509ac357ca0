"""Functions' parameters: which are streams, and ``--arg NAME=VALUE`` → keyword arguments.

Owns the ``--arg`` messages and hints (one line naming the parameter, its type
and the value; a hint showing how to write one). Stdlib and ``skyctl.errors`` only.
"""

from __future__ import annotations

import datetime
import enum
import inspect
import pathlib
import typing
from typing import Any, Callable

from skyctl.coerce.convert import coerce_text
from skyctl.coerce.typeinfo import (
    DICT_ORIGINS,
    EMPTY,
    LIST_ORIGINS,
    SET_ORIGINS,
    STREAM_ORIGINS,
    UNION_ORIGINS,
    NoneType,
    is_record_class,
    literal_repr,
    record_fields,
    resolve_annotations,
    strip_annotation,
    type_name,
)
from skyctl.coerce.walker import CoercionError
from skyctl.errors import UsageError, did_you_mean

# --------------------------------------------------------------------------- streams


def stream_item_type(annotation: object) -> object | None:
    """``T`` of a stream annotation (``Iterator[T]``, ``Iterable[T]``, ``Generator[T, ...]``, optionally ``| None``).

    Bare ``Iterator``/``Iterable``/``Generator`` give ``typing.Any``; any other
    annotation gives None (the parameter is not a stream).
    """
    annotation = strip_annotation(annotation)
    if annotation in STREAM_ORIGINS:
        return Any
    origin = typing.get_origin(annotation)
    if origin in STREAM_ORIGINS:
        args = typing.get_args(annotation)
        return args[0] if args else Any
    if origin in UNION_ORIGINS:
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
    if origin in UNION_ORIGINS:
        return next((e for a in args if a is not NoneType and (e := _example(a))), None)
    if origin is typing.Literal:
        return str(args[0].value if isinstance(args[0], enum.Enum) else args[0]) if args else None
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        first = next(iter(annotation), None)
        return None if first is None else str(first.value)
    if origin in LIST_ORIGINS | SET_ORIGINS or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
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
    if origin in UNION_ORIGINS and NoneType in args:
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
        return "pass one of: " + ", ".join(literal_repr(v) for v in args)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        values = ", ".join(repr(m.value) for m in annotation)
        names = ", ".join(annotation.__members__)
        return f"pass one of: {values} (or a name: {names})"
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        return f"pass {len(args)} values as a JSON array or comma-separated{shown}"
    if origin in LIST_ORIGINS | SET_ORIGINS or annotation in LIST_ORIGINS | SET_ORIGINS or origin is tuple or annotation is tuple:
        return f"pass a JSON array or comma-separated values{shown}"
    if origin in DICT_ORIGINS or annotation in DICT_ORIGINS:
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
        annotation = annotations.get(parameter.name, EMPTY)
        if annotation is not EMPTY:
            text += f": {type_name(annotation)}"
        if parameter.default is not EMPTY:
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
        if p.default is EMPTY and name not in given and name != stream_param
    ]
    if missing:
        def describe(name: str) -> str:
            annotation = annotations[name]
            return f"{name!r} ({type_name(annotation)})" if annotation is not EMPTY else repr(name)

        if len(missing) == 1:
            raise UsageError(f"missing required argument {describe(missing[0])}", hint=f"pass it as --arg {missing[0]}=VALUE")
        raise UsageError(
            "missing required arguments " + ", ".join(describe(n) for n in missing),
            hint="pass them as " + " ".join(f"--arg {n}=VALUE" for n in missing),
        )
    return bound
