"""Functions the ``type: command`` end-to-end tests run (``tests/test_command_host.py``).

They run wherever the host's program puts the worker (here, as another user,
or behind the OpenSSH client), so stdlib only.
"""

from __future__ import annotations

import os
from typing import Iterator


def whoami(workdir: str = "~/.cache/skyctl") -> dict:
    """Who the worker runs as, and what its workdir and environment are there."""
    import pwd

    where = os.path.expanduser(workdir)
    files = [os.path.join(top, name) for top, _, names in os.walk(where) for name in names]
    owners = sorted({pwd.getpwuid(os.lstat(path).st_uid).pw_name for path in files})
    return {
        "uid": os.getuid(),
        "user": pwd.getpwuid(os.getuid()).pw_name,
        "home": os.path.expanduser("~"),
        "workdir": where,
        "files": len(files),
        "owners": owners,
        "env": os.environ.get("SKYCTL_COMMAND_TEST", ""),
    }


def scaled(data: Iterator[int], factor: int = 2) -> Iterator[int]:
    """Each input record times ``factor``, as it arrives."""
    for x in data:
        yield x * factor


def pid_then_count(pid_file: str, finally_marker: str = "") -> Iterator[int]:
    """Write the worker's pid to ``pid_file`` (atomically), then yield 0, 1, 2, ... forever;
    ``finally_marker`` is written when the generator is closed."""
    import time

    tmp = f"{pid_file}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, pid_file)
    try:
        i = 0
        while True:
            yield i
            i += 1
            time.sleep(0.05)
    finally:
        if finally_marker:
            with open(finally_marker, "w") as f:
                f.write("finally ran")
