"""The bootstrap has a deadline (issue 11, reproduction 5, its bootstrap half).

An interpreter that never answers the stub (a ``python:`` that is a script
sleeping) used to hang the call forever. Now every answer the client waits
for during start-up must come within ``connect_timeout`` seconds (the
built-in 10 s for ``local``): after that, exit 5 with a one-line error.
The script below also leaves a child holding the stub's stdout open, so the
client cannot rely on the pipe closing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ssh_e2e import FAIL_WITHIN, assert_failure, box, timed, target

from skyctl import bootstrap
from skyctl.errors import RemoteEnvironmentError
from skyctl.transports.local import LocalTransport

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def mute_python(tmp_path: Path) -> Iterator[Path]:
    """An executable that takes any arguments and then says nothing, ever (its child keeps stdout open).

    Each start appends its pid (its process group: it leads a session under
    both transports) to ``pids``; every group is killed after the test.
    """
    script = tmp_path / "python3"
    pids = tmp_path / "pids"
    script.write_text(f"#!/bin/sh\necho $$ >> {pids}\nsleep 1000\n")
    script.chmod(0o755)
    try:
        yield script
    finally:
        for line in (pids.read_text().split() if pids.exists() else []):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(line), signal.SIGKILL)


def test_local_python_that_never_answers_is_an_error_after_10s(mute_python: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "skyward.yaml"
    cfg.write_text(f"default: local\nhosts:\n  local:\n    type: local\n    python: {mute_python}\n"
                   f"    workdir: {tmp_path / 'wd'}\n")
    result, elapsed = timed("run", target("fibonacci"), "-c", str(cfg), timeout=120)
    assert_failure(result, 5, str(mute_python), "did not answer within 10s", elapsed=elapsed)
    assert elapsed >= 10, f"gave up after {elapsed:.1f}s, before the deadline"
    assert "-c 'print(1)'" in result.stderr.split("hint: ", 1)[1]


@pytest.mark.parametrize("flags", [(), ("--no-reuse",)], ids=["kept", "direct"])
def test_ssh_python_that_never_answers_is_an_error_after_connect_timeout(
        sshd: Any, mute_python: Path, tmp_path: Path, flags: tuple[str, ...]) -> None:
    cfg = box(tmp_path / "skyward.yaml", sshd, python=str(mute_python), extra="connect_timeout: 3")
    result, elapsed = timed("run", target("fibonacci"), "-c", cfg, *flags, timeout=120)
    assert_failure(result, 5, str(mute_python), "did not answer within 3s", elapsed=elapsed)
    assert elapsed >= 3, f"gave up after {elapsed:.1f}s, before the deadline"
    assert "connect_timeout" in result.stderr.split("hint: ", 1)[1]


def test_the_api_gets_the_error_too_and_nothing_waits_on_the_open_pipe(mute_python: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(RemoteEnvironmentError, match=r"did not answer within 0\.5s \(waiting for the bootstrap stub"):
        bootstrap.start_worker(LocalTransport(), str(mute_python), str(tmp_path / "wd"), {}, timeout=0.5)
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 0.5 + bootstrap.CLOSE_WAIT + FAIL_WITHIN / 3, elapsed


def test_a_real_python_starts_well_within_the_deadline(tmp_path: Path) -> None:
    """The deadline is per answer: a cold start (bundle sent) under a short one still works."""
    started = bootstrap.start_worker(LocalTransport(), sys.executable, str(tmp_path / "wd"), {}, timeout=5.0)
    try:
        assert started.sent_bundle and started.hello["pid"]
    finally:
        started.pipes.close()
