"""Functions the ssh / remote-environment end-to-end tests run on a host.

Run as ``tests/targets/remote_env.py:NAME`` from the repository root.
"""

from __future__ import annotations

import os
import time
from typing import Iterator


def fibonacci(n: int = 10) -> Iterator[int]:
    a, b = 0, 1
    for _ in range(n):
        yield a
        a, b = b, a + b


def whoami() -> dict:
    """Who and where the worker runs: user id, home, current directory."""
    import pwd

    return {"uid": os.getuid(), "user": pwd.getpwuid(os.getuid()).pw_name, "home": os.path.expanduser("~")}


def needs_missing_module() -> int:
    import some_module_that_does_not_exist_xyz  # noqa: F401

    return 1


def uses_tomli_w() -> dict:
    """Import a small third-party package that only a ``pip:`` venv has."""
    import sys

    import tomli_w

    return {"dumps": tomli_w.dumps({"a": 1}), "file": tomli_w.__file__, "prefix": sys.prefix}


def pid_then_stream(pidfile: str, every: float = 0.05) -> Iterator[int]:
    """Write the worker's pid to ``pidfile`` (atomically), then yield 0, 1, 2, ... forever."""
    tmp = f"{pidfile}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, pidfile)
    i = 0
    while True:
        yield i
        i += 1
        time.sleep(every)
