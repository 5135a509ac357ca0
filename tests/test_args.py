"""End-to-end: every ``--arg`` rule, and every usage error (exit 2) of ``skyctl run``.

Runs on the ``local`` host only: coercion happens on the client, so the
transport adds nothing here. Each target in ``tests/targets/args.py`` returns
``TYPE VALUE`` of what it received, so the test sees the typed value the
function got, not just its printed form.
"""

from __future__ import annotations

import pytest

from helpers import run_skyctl

ARGS = "tests/targets/args.py"
#: frames of skyctl's own machinery, never shown for a usage error
OWN_FRAMES = ("importlib", "skyctl/cli.py", "skyctl/commands/", "skyctl/target.py", "skyctl/coerce/", "click/", "typer/")


def run(config, *argv: str):
    return run_skyctl("run", "-c", str(config), *argv)


CASES = [
    ("f_int", "42", "int 42"),
    ("f_int", " -7 ", "int -7"),
    ("f_float", "2.5", "float 2.5"),
    ("f_float", "3", "float 3.0"),
    ("f_float", "1e-3", "float 0.001"),
    ("f_str", "42", "str '42'"),
    ("f_str", "a=b, c", "str 'a=b, c'"),
    ("f_str", "", "str ''"),
    ("f_path", "data/x.csv", "True data/x.csv"),
    *[("f_bool", text, "bool True") for text in ("true", "TRUE", "yes", "Yes", "on", "ON", "1")],
    *[("f_bool", text, "bool False") for text in ("false", "False", "no", "NO", "off", "Off", "0")],
    ("f_optional", "none", "NoneType None"),
    ("f_optional", "null", "NoneType None"),
    ("f_optional", "NULL", "NoneType None"),
    ("f_optional", "5", "int 5"),
    ("f_union_none", "None", "NoneType None"),
    ("f_union_none", "1.5", "float 1.5"),
    ("f_list", "[1, 2, 3]", "list [1, 2, 3]"),
    ("f_list", "1,2,3", "list [1, 2, 3]"),
    ("f_list", " 4 , 5 ", "list [4, 5]"),
    ("f_list", "[]", "list []"),
    ("f_tuple", "[1, 2.5]", "tuple (1.0, 2.5)"),
    ("f_tuple", "1,2.5", "tuple (1.0, 2.5)"),
    ("f_set", "[3, 1, 3, 2]", "set [1, 2, 3]"),
    ("f_set", "3,1,2,1", "set [1, 2, 3]"),
    ("f_iterator", "[1, 2]", "True [1, 2]"),
    ("f_iterator", "7,8,9", "True [7, 8, 9]"),
    ("f_dict", '{"a": 1, "b": 2}', "dict {'a': 1, 'b': 2}"),
    ("f_dict", "{}", "dict {}"),
    ("f_literal", "fast", "str 'fast'"),
    ("f_literal", "slow", "str 'slow'"),
    ("f_literal", "3", "int 3"),
    ("f_enum", "red", "Color.RED"),  # by value
    ("f_enum", "2", "Color.GREEN"),  # by (int) value
    ("f_enum", "GREEN", "Color.GREEN"),  # by name
    ("f_enum", "RED", "Color.RED"),
    ("f_any", "3", "int 3"),
    ("f_any", "-2.5", "float -2.5"),
    ("f_any", "true", "bool True"),
    ("f_any", "false", "bool False"),
    ("f_any", "null", "NoneType None"),
    ("f_any", "[1, \"a\"]", "list [1, 'a']"),
    ("f_any", '{"k": [1]}', "dict {'k': [1]}"),
    ("f_any", "hello", "str 'hello'"),
    ("f_any", "1,2", "str '1,2'"),
    ("f_any", "[1, 2", "str '[1, 2'"),
    ("f_any", "NaN", "str 'NaN'"),
    ("f_any", '"quoted"', "str '\"quoted\"'"),
]


@pytest.mark.parametrize("function, text, expected", CASES)
def test_arg_is_coerced_by_the_annotation(local_config, function, text, expected):
    result = run(local_config, f"{ARGS}:{function}", "--arg", f"value={text}")
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected + "\n"


def test_value_may_contain_equals_signs(local_config):
    result = run(local_config, f"{ARGS}:f_str", "-a", "value=x=y=z")
    assert result.stdout == "str 'x=y=z'\n", result.stderr


@pytest.mark.parametrize("argv, expected", [
    (["-a", "a=1"], "int 1 | str 'bee' | NoneType None | float 0.5"),
    (["-a", "a=1", "-a", "c=none", "-a", "b=x"], "int 1 | str 'x' | NoneType None | float 0.5"),
    (["-a", "d=2", "-a", "c=1,2", "-a", "a=0"], "int 0 | str 'bee' | list [1, 2] | float 2.0"),
])
def test_defaults_apply_to_parameters_not_given(local_config, argv, expected):
    result = run(local_config, f"{ARGS}:defaults", *argv)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected + "\n"


# -- usage errors: exit 2, a message, never a traceback ------------------------

USAGE_ERRORS = {
    "bad flag": (["--bogus", "examples/train.py:fibonacci"], ["--bogus"]),
    "bad --output": (["--output", "yaml", "examples/train.py:fibonacci"], ["yaml"]),
    "no TARGET": ([], ["TARGET"]),
    "TARGET without colon": (["examples/train.py"], ["TARGET", "examples/train.py"]),
    "missing file": (["examples/nope.py:fibonacci"], ["no such file", "examples/nope.py"]),
    "missing module": (["nosuch_module_xyz:f"], ["nosuch_module_xyz"]),
    "no such function": (["examples/train.py:fibonaci"], ["fibonaci", "did you mean 'fibonacci'"]),
    "import error": (["tests/targets/broken_import.py:f"], ["broken_import.py", "not_a_real_module_xyz"]),
    "raising module": (["tests/targets/broken_raise.py:f"], ["broken_raise.py", "RuntimeError", "cannot configure"]),
    "missing required arg": ([f"{ARGS}:required", "-a", "name=x"], ["missing required", "count", "int"]),
    "missing required args": ([f"{ARGS}:required"], ["missing required", "count", "name"]),
    "unknown arg": (["examples/train.py:fibonacci", "--arg", "nn=3"], ["'nn'", "did you mean 'n'"]),
    "arg without =": (["examples/train.py:fibonacci", "--arg", "n"], ["NAME=VALUE"]),
    "arg given twice": (["examples/train.py:fibonacci", "-a", "n=1", "-a", "n=2"], ["twice"]),
    "int": ([f"{ARGS}:f_int", "-a", "value=abc"], ["value", "int", "'abc'"]),
    "float": ([f"{ARGS}:f_float", "-a", "value=1.2.3"], ["value", "float", "'1.2.3'"]),
    "bool": ([f"{ARGS}:f_bool", "-a", "value=maybe"], ["value", "bool", "'maybe'"]),
    "optional": ([f"{ARGS}:f_optional", "-a", "value=nothing"], ["value", "int", "'nothing'"]),
    "list item": ([f"{ARGS}:f_list", "-a", "value=1,x"], ["value", "list[int]", "'1,x'"]),
    "bad JSON array": ([f"{ARGS}:f_list", "-a", "value=[1,"], ["value", "list[int]", "'[1,'"]),
    "dict": ([f"{ARGS}:f_dict", "-a", "value=a=1"], ["value", "dict[str, int]", "'a=1'"]),
    "dict value": ([f"{ARGS}:f_dict", "-a", 'value={"a": "x"}'], ["value", "dict[str, int]"]),
    "literal": ([f"{ARGS}:f_literal", "-a", "value=medium"], ["value", "'medium'", "fast"]),
    "enum": ([f"{ARGS}:f_enum", "-a", "value=blue"], ["value", "Color", "'blue'"]),
}


@pytest.mark.parametrize("argv, expected", USAGE_ERRORS.values(), ids=USAGE_ERRORS.keys())
def test_usage_errors_exit_2_with_a_message_and_no_traceback(local_config, argv, expected):
    result = run(local_config, *argv)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    for part in expected:
        assert part in result.stderr, result.stderr
    assert "error:" in result.stderr
    assert "Traceback" not in result.stderr
    for own in OWN_FRAMES:
        assert own not in result.stderr, result.stderr


def test_syntax_error_in_the_users_module_names_file_and_line(local_config, tmp_path):
    bad = tmp_path / "bad_syntax.py"
    bad.write_text("def f():\n    return 1\n\ndef g(:\n    pass\n")
    result = run_skyctl("run", "-c", str(local_config), "bad_syntax.py:f", cwd=tmp_path)
    assert result.returncode == 2
    assert "bad_syntax.py" in result.stderr and "line 4" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
