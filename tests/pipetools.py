"""Helpers shared by the ``skyctl pipe`` end-to-end tests (``tests/test_pipe*.py``)."""

from __future__ import annotations

import importlib.util
import json
import os
import select
import subprocess
import time
from typing import Any

from helpers import REPO, TARGETS, run_skyctl

#: the target module, as a TARGET string prefix
PIPES = "tests/targets/pipes.py"


def pipe(config: Any, name: str, *flags: str, input: str | bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``skyctl pipe tests/targets/pipes.py:NAME FLAGS...`` with ``input`` on stdin; text results."""
    data = input.encode() if isinstance(input, str) else input
    done = run_skyctl("pipe", f"{PIPES}:{name}", "-c", str(config), *flags, input=data, timeout=timeout)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(errors="replace"),
                                       done.stderr.decode(errors="replace"))


def load_targets() -> Any:
    """tests/targets/pipes.py imported here (not as ``pipes``, the stdlib's name), for its classes."""
    spec = importlib.util.spec_from_file_location("pipe_targets_local", TARGETS / "pipes.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tagged(value: Any) -> Any:
    """A value with every scalar tagged by its type, so 1, 1.0 and True never compare equal."""
    if isinstance(value, dict):
        return {k: tagged(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [tagged(v) for v in value]
    return (type(value).__name__, value)


def as_json_output(value: Any) -> Any:
    """What ``--output json`` prints for ``value``, read back: JSON as is, a dataclass as an object of
    its fields, anything else its repr()."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        text = json.dumps(repr(value))
    return json.loads(text)


def json_values(stdout: str) -> list[Any]:
    """The values of ``--output json`` stdout, one per line."""
    return [json.loads(line) for line in stdout.splitlines()]


def assert_values(done: subprocess.CompletedProcess[str], expected: list[Any]) -> None:
    """``--output json`` stdout holds exactly ``expected`` (types included), exit 0, no warnings."""
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr and "error" not in done.stderr, done.stderr
    got = [tagged(v) for v in json_values(done.stdout)]
    want = [tagged(as_json_output(v)) for v in expected]
    assert len(got) == len(want), (len(got), len(want), done.stdout[:500])
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"value {i}: got {g}, expected {w}"


def read_line(stream: Any, timeout: float = 30) -> bytes:
    """One line from a pipe (a Popen's stdout, unbuffered reads), failing after ``timeout`` seconds."""
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"no complete line within {timeout}s (got {data!r})")
        chunk = os.read(fd, 1)
        if not chunk:
            raise AssertionError(f"EOF before a complete line (got {data!r})")
        data += chunk
    return data


__all__ = ["PIPES", "REPO", "pipe", "load_targets", "tagged", "as_json_output", "json_values", "assert_values", "read_line"]
