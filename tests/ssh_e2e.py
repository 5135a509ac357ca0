"""Shared bits of the end-to-end ssh tests: run skyctl against a profile, check a failure's shape."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

from helpers import REPO, clean_env, skyctl_argv, ssh_host_yaml

#: the functions these tests ship, as a file TARGET relative to the repo root
TARGETS = "tests/targets/remote_env.py"
#: a failure must be reported within this many seconds (connect_timeout is 10s; the machine may be loaded)
FAIL_WITHIN = 45.0


def target(name: str) -> str:
    return f"{TARGETS}:{name}"


def skyctl(*args: str, timeout: float = 90, cwd: Path | str | None = None, env: dict[str, str] | None = None,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
    """``helpers.run_skyctl`` without ssh-agent: the keys offered are exactly the profile's."""
    full = clean_env(env)
    full.pop("SSH_AUTH_SOCK", None)
    return subprocess.run(skyctl_argv(*args), input=input, capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or REPO, env=full)


def config(path: Path, *hosts: str, default: str = "box") -> str:
    """A skyward.yaml with ``local`` and the given ``hosts:`` entries (from ``ssh_host_yaml``)."""
    path.write_text(f"default: {default}\nhosts:\n  local:\n    type: local\n" + "".join(hosts))
    return str(path)


def box(path: Path, server: Any, *, extra: str = "", **kw: Any) -> str:
    """A config whose default host ``box`` is ``server``, with more profile lines in ``extra``."""
    return config(path, ssh_host_yaml(server, extra=extra, **kw))


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed(*args: str, **kw: Any) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = skyctl(*args, **kw)
    return result, time.monotonic() - started


def assert_failure(result: subprocess.CompletedProcess[str], code: int, *needles: str,
                   elapsed: float = 0.0, values_before: bool = False, hint: bool = True) -> str:
    """``result`` failed with ``code`` and one ``error:`` line holding every needle; returns that line.

    Also: nothing on stdout (unless ``values_before``), no traceback of skyctl's own, a ``hint:`` saying
    what to do (unless not ``hint``), and it came within ``FAIL_WITHIN`` seconds.
    """
    where = f"exit {result.returncode}\nstdout: {result.stdout!r}\nstderr:\n{result.stderr}"
    assert result.returncode == code, where
    assert values_before or result.stdout == "", where
    assert "Traceback" not in result.stderr, where
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, where
    line = errors[0]
    for needle in needles:
        assert needle.lower() in line.lower(), f"{needle!r} not in the error line\n{where}"
    assert not hint or any(line.startswith("hint: ") and len(line) > 10 for line in result.stderr.splitlines()), where
    assert elapsed < FAIL_WITHIN, f"took {elapsed:.1f}s\n{where}"
    return line


def tree(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every path under ``root`` → (inode, mode, size, mtime_ns): equal snapshots mean nothing was written."""
    snap: dict[str, tuple[int, int, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, ""]:
            path = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(path)
            snap[os.path.relpath(path, root)] = (st.st_ino, stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns)
    return snap


def exec_sessions(server: Any) -> int:
    """How many exec channels ``server``'s sshd has started so far (its log is at LogLevel VERBOSE)."""
    return server.log_text().count("Starting session: command")
