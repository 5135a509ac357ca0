"""skyctl.coerce: the --arg rules, JSON checking, type names, stream detection, binding.

One test per contract rule ("--arg NAME=VALUE, coerced by the parameter's
annotation"); messages are compared exactly where the contract or the API
brief gives their text.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import importlib.util
import inspect
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any, Generator, Iterable, Iterator, Literal, Optional, TypedDict

import pytest

from skyctl.coerce import (
    CoercionError,
    bind_arguments,
    coerce_json,
    coerce_text,
    stream_item_type,
    stream_parameters,
    type_name,
)
from skyctl.errors import ExitStatus, UsageError


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Point:
    x: int
    y: float = 0.0


class Row(TypedDict):
    name: str
    score: float


# --------------------------------------------------------------------------- type_name


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (int, "int"),
        (list[int], "list[int]"),
        (typing.List[int], "list[int]"),
        (Optional[int], "int | None"),
        (int | None, "int | None"),
        (Literal["a", "b"], "Literal['a', 'b']"),
        (Color, "Color"),
        (dict[str, float], "dict[str, float]"),
        (tuple[int, ...], "tuple[int, ...]"),
        (Iterator[float], "Iterator[float]"),
        (typing.Annotated[int, "meta"], "int"),
        (Any, "Any"),
        (inspect.Parameter.empty, "Any"),
        (Path, "Path"),
    ],
)
def test_type_name_is_readable(annotation: object, expected: str) -> None:
    assert type_name(annotation) == expected


# --------------------------------------------------------------------------- stream detection


@pytest.mark.parametrize(
    ("annotation", "item"),
    [
        (Iterator[float], float),
        (collections.abc.Iterator[int], int),
        (Iterable[str], str),
        (collections.abc.Iterable[bytes], bytes),
        (Generator[int, None, None], int),
        (collections.abc.Generator[dict, None, None], dict),
        (Optional[Iterator[int]], int),
        (Iterator[int] | None, int),
        (typing.Annotated[Iterator[int], "x"], int),
        (Iterator, Any),
        (collections.abc.Iterable, Any),
    ],
)
def test_stream_item_type_of_stream_annotations(annotation: object, item: object) -> None:
    assert stream_item_type(annotation) == item


@pytest.mark.parametrize("annotation", [int, list[int], str, inspect.Parameter.empty, Iterator[int] | list[int]])
def test_stream_item_type_is_none_for_other_annotations(annotation: object) -> None:
    assert stream_item_type(annotation) is None


def test_stream_parameters_lists_every_stream_in_signature_order() -> None:
    def fn(a: Iterable[str], n: int, b: Iterator[float] | None = None, *rest: Iterator[int], **kw: Iterator[int]) -> None: ...

    assert list(stream_parameters(fn).items()) == [("a", str), ("b", float)]


# --------------------------------------------------------------------------- --arg rules


@pytest.mark.parametrize(
    ("text", "annotation", "value"),
    [
        ("10", int, 10),
        ("-3", int, -3),
        ("2.5", float, 2.5),
        ("3", float, 3.0),
        ("hello world", str, "hello world"),
        ("data/in.csv", Path, Path("data/in.csv")),
    ],
)
def test_scalars(text: str, annotation: object, value: object) -> None:
    result = coerce_text(text, annotation)
    assert result == value and type(result) is type(value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True), ("TRUE", True), ("Yes", True), ("on", True), ("1", True),
        ("false", False), ("False", False), ("NO", False), ("Off", False), ("0", False),
    ],
)
def test_bool_words_in_any_case(text: str, value: bool) -> None:
    assert coerce_text(text, bool) is value


@pytest.mark.parametrize(("text", "annotation"), [("abc", int), ("1.5", int), ("x", float), ("maybe", bool), ("2", bool)])
def test_scalar_that_does_not_coerce_raises(text: str, annotation: object) -> None:
    with pytest.raises(CoercionError) as caught:
        coerce_text(text, annotation)
    assert (caught.value.value, caught.value.expected) == (text, type_name(annotation))


@pytest.mark.parametrize("annotation", [Optional[int], int | None, Optional[str]])
@pytest.mark.parametrize("text", ["none", "null", "None", "NULL"])
def test_optional_none_or_null_gives_none(text: str, annotation: object) -> None:
    assert coerce_text(text, annotation) is None


def test_optional_otherwise_coerces_the_inner_type() -> None:
    assert coerce_text("7", Optional[int]) == 7


@pytest.mark.parametrize("text", ["[1, 2, 3]", "1,2,3", " 1, 2 ,3 "])
def test_list_from_json_array_or_comma_separated(text: str) -> None:
    assert coerce_text(text, list[int]) == [1, 2, 3]


def test_list_items_that_do_not_coerce_name_the_item() -> None:
    with pytest.raises(CoercionError) as caught:
        coerce_text("1,x", list[int])
    assert caught.value.detail == "item 2: expected int, got 'x'"


def test_tuple_ellipsis_and_set() -> None:
    assert coerce_text("1,2", tuple[int, ...]) == (1, 2)
    assert coerce_text('["a", "b", "a"]', set[str]) == {"a", "b"}


def test_fixed_tuple_coerces_each_position_and_checks_length() -> None:
    assert coerce_text("3,x", tuple[int, str]) == (3, "x")
    with pytest.raises(CoercionError):
        coerce_text("3", tuple[int, str])


@pytest.mark.parametrize(
    "annotation",
    [Iterator[int], collections.abc.Iterator[int], Iterable[int], Generator[int, None, None], Optional[Iterator[int]]],
)
def test_stream_annotations_take_a_list(annotation: object) -> None:
    assert coerce_text("1,2", annotation) == [1, 2]
    assert coerce_text("[3]", annotation) == [3]


def test_dict_from_json_object_with_keys_and_values_coerced() -> None:
    assert coerce_text('{"1": 2, "3": "4"}', dict[int, float]) == {1: 2.0, 3: 4.0}
    with pytest.raises(CoercionError):
        coerce_text("[1]", dict[str, int])
    with pytest.raises(CoercionError):
        coerce_text("a=1", dict[str, int])


def test_literal_by_value() -> None:
    assert coerce_text("b", Literal["a", "b"]) == "b"
    assert coerce_text("2", Literal[1, 2]) == 2
    with pytest.raises(CoercionError):
        coerce_text("c", Literal["a", "b"])


def test_enum_by_value_and_by_name() -> None:
    assert coerce_text("red", Color) is Color.RED
    assert coerce_text("GREEN", Color) is Color.GREEN
    assert coerce_text("2", Level) is Level.HIGH
    assert coerce_text("LOW", Level) is Level.LOW
    with pytest.raises(CoercionError):
        coerce_text("blue", Color)


@pytest.mark.parametrize("annotation", [inspect.Parameter.empty, Any])
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("10", 10),
        ("2.5", 2.5),
        ("true", True),
        ("null", None),
        ("[1, 2]", [1, 2]),
        ('{"a": 1}', {"a": 1}),
        ("hello", "hello"),
        ('"quoted"', '"quoted"'),  # a JSON string is not in the list: the text stays as typed
        ("NaN", "NaN"),
        ("01", "01"),
    ],
)
def test_unannotated_json_if_it_parses_else_the_string(annotation: object, text: str, value: object) -> None:
    assert coerce_text(text, annotation) == value


def test_other_unions_try_members_in_order() -> None:
    assert coerce_text("5", int | str) == 5
    assert coerce_text("five", int | str) == "five"
    assert coerce_text("5", str | int) == "5"


def test_dataclass_from_json_object() -> None:
    assert coerce_text('{"x": 1}', Point) == Point(1, 0.0)


# --------------------------------------------------------------------------- coerce_json


def test_json_int_is_a_valid_float() -> None:
    value = coerce_json(3, float)
    assert value == 3.0 and type(value) is float


@pytest.mark.parametrize(("value", "annotation"), [(True, int), ("5", int), (1.5, int), (5, str), (1, bool), ({}, list[int])])
def test_json_values_are_checked(value: object, annotation: object) -> None:
    with pytest.raises(CoercionError):
        coerce_json(value, annotation)


def test_json_array_becomes_tuple_or_set() -> None:
    assert coerce_json([1, 2], tuple[int, ...]) == (1, 2)
    assert coerce_json([1, "a"], tuple[int, str]) == (1, "a")
    assert coerce_json([1, 1], set[int]) == {1}


def test_json_object_fills_dataclass_and_typeddict() -> None:
    assert coerce_json({"x": 1, "y": 2}, Point) == Point(1, 2.0)
    assert coerce_json({"name": "a", "score": 3, "extra": 0}, Row) == {"name": "a", "score": 3.0}


def test_json_object_missing_field_or_wrong_field_type_says_which() -> None:
    with pytest.raises(CoercionError) as missing:
        coerce_json({"y": 1}, Point)
    assert missing.value.detail == "missing field 'x'"
    with pytest.raises(CoercionError) as wrong:
        coerce_json({"x": "a"}, Point)
    assert str(wrong.value) == 'expected Point, got {"x":"a"} (field \'x\': expected int, got "a")'


def test_json_enum_literal_optional_and_any() -> None:
    assert coerce_json("red", Color) is Color.RED
    assert coerce_json(None, Optional[int]) is None
    assert coerce_json(1, Literal[1, 2]) == 1
    with pytest.raises(CoercionError):
        coerce_json(True, Literal[1, 2])
    assert coerce_json({"any": [1]}, Any) == {"any": [1]}


# --------------------------------------------------------------------------- bind_arguments


def fibonacci(n: int) -> Iterator[int]:
    yield n


def moving_average(data: Iterator[float], window: int = 3, label: str = "avg") -> Iterator[float]:
    yield from data


def test_bind_coerces_and_returns_only_given_arguments() -> None:
    assert bind_arguments(moving_average, ["window=5"], stream_param="data") == {"window": 5}


def test_bind_splits_at_the_first_equals_sign() -> None:
    assert bind_arguments(moving_average, ["label=a=b"], stream_param="data") == {"label": "a=b"}


def test_bind_invalid_value_message_and_hint() -> None:
    with pytest.raises(UsageError) as caught:
        bind_arguments(fibonacci, ["n=abc"])
    assert caught.value.message == "invalid value for --arg n: expected int, got 'abc'"
    assert caught.value.hint == "pass a whole number, e.g. --arg n=10"
    assert caught.value.exit_status == ExitStatus.USAGE


def test_bind_invalid_container_value_hint_says_which_item() -> None:
    def fn(xs: list[int]) -> None: ...

    with pytest.raises(UsageError) as caught:
        bind_arguments(fn, ["xs=1,x"])
    assert caught.value.message == "invalid value for --arg xs: expected list[int], got '1,x'"
    assert caught.value.hint == "item 2: expected int, got 'x'; pass a JSON array or comma-separated values, e.g. --arg xs=10,10"


def test_bind_missing_required_argument() -> None:
    with pytest.raises(UsageError) as caught:
        bind_arguments(fibonacci, [])
    assert caught.value.message == "missing required argument 'n' (int)"
    assert caught.value.hint == "pass it as --arg n=VALUE"


def test_bind_unknown_argument_with_did_you_mean() -> None:
    with pytest.raises(UsageError) as caught:
        bind_arguments(fibonacci, ["nn=3"])
    assert caught.value.message == "unknown argument 'nn' for fibonacci(n: int)"
    assert caught.value.hint == "did you mean 'n'?"


def test_bind_unknown_argument_without_close_match_lists_parameters() -> None:
    with pytest.raises(UsageError) as caught:
        bind_arguments(moving_average, ["zzz=1"], stream_param="data")
    assert caught.value.message == (
        "unknown argument 'zzz' for moving_average(data: Iterator[float], window: int = 3, label: str = 'avg')"
    )
    assert caught.value.hint == "it takes: data, window, label"


def test_bind_without_equals_sign_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as caught:
        bind_arguments(fibonacci, ["n"])
    assert caught.value.message == "invalid --arg 'n': expected NAME=VALUE"


def test_bind_same_name_twice_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as caught:
        bind_arguments(fibonacci, ["n=1", "n=2"])
    assert caught.value.message == "--arg n given twice (n: int): '1' and '2'"


def test_bind_stream_param_is_not_required_but_others_are() -> None:
    assert bind_arguments(moving_average, [], stream_param="data") == {}
    with pytest.raises(UsageError) as caught:
        bind_arguments(moving_average, [])
    assert caught.value.message == "missing required argument 'data' (Iterator[float])"


def test_bind_stream_param_given_as_arg_is_refused_under_pipe_but_a_list_under_run() -> None:
    with pytest.raises(UsageError):
        bind_arguments(moving_average, ["data=1,2"], stream_param="data")
    assert bind_arguments(moving_average, ["data=1,2"]) == {"data": [1.0, 2.0]}


def test_bind_kwargs_accepts_any_name_coerced_as_unannotated() -> None:
    def fn(a: int = 0, **options): ...

    assert bind_arguments(fn, ["depth=3", "name=x", "a=1"]) == {"depth": 3, "name": "x", "a": 1}


def test_bind_annotated_kwargs_uses_its_annotation() -> None:
    def fn(**weights: float): ...

    assert bind_arguments(fn, ["w=1"]) == {"w": 1.0}


def test_bind_messages_are_one_line() -> None:
    for args in (["n=a\nb"], [], ["nn=1"], ["n"], ["n=1", "n=2"]):
        with pytest.raises(UsageError) as caught:
            bind_arguments(fibonacci, args)
        assert "\n" not in caught.value.message.replace("\\n", "")


def _import_source(tmp_path: Path, name: str, source: str) -> typing.Any:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def test_future_annotations_module(tmp_path: Path) -> None:
    module = _import_source(
        tmp_path,
        "skyctl_test_future_mod",
        """
        from __future__ import annotations
        import dataclasses
        from collections.abc import Iterator

        @dataclasses.dataclass
        class Point:
            x: int
            y: float

        def fn(data: Iterator[Point], n: int, tags: list[str] | None = None, p: Point | None = None):
            yield from data
        """,
    )
    assert stream_parameters(module.fn) == {"data": module.Point}
    bound = bind_arguments(module.fn, ["n=2", "tags=a,b", 'p={"x": 1, "y": 2}'], stream_param="data")
    assert bound == {"n": 2, "tags": ["a", "b"], "p": module.Point(1, 2.0)}
    with pytest.raises(UsageError) as caught:
        bind_arguments(module.fn, ["n=x"], stream_param="data")
    assert caught.value.message == "invalid value for --arg n: expected int, got 'x'"


def test_one_unresolvable_string_annotation_does_not_spoil_the_others(tmp_path: Path) -> None:
    module = _import_source(
        tmp_path,
        "skyctl_test_unresolved_mod",
        """
        from __future__ import annotations
        from typing import TYPE_CHECKING, Iterator
        if TYPE_CHECKING:
            from somewhere import Missing

        def fn(data: Iterator[float], n: int, extra: Missing = None):
            yield from data
        """,
    )
    assert stream_parameters(module.fn) == {"data": float}
    assert bind_arguments(module.fn, ["n=3", "extra=[1]"], stream_param="data") == {"n": 3, "extra": [1]}
