"""Shared fixtures.

SSH: a real OpenSSH sshd on 127.0.0.1 (see ``tests/sshd.py``), one per test
session. When it cannot be started the tests that need it are skipped with
the reason, except when ``CI`` is set: there they fail, so a CI job can never
pass by silently skipping the ssh tests.
"""

from __future__ import annotations

import getpass
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sshd import SshdUnavailable, SshServer, ensure_user, start_sshd

#: the non-root login created for ``sshd_user`` when the suite runs as root
NON_ROOT_USER = "skyctltest"


def _sshd_unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"sshd is required when CI is set: {reason}", pytrace=False)
    pytest.skip(f"no sshd: {reason}")


def _start(tmp_path_factory: pytest.TempPathFactory, name: str, users: list[str]) -> SshServer:
    try:
        return start_sshd(tmp_path_factory.mktemp(name), users=users)
    except SshdUnavailable as exc:
        _sshd_unavailable(str(exc))
        raise


@pytest.fixture(scope="session")
def _sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    me = getpass.getuser()
    users = [me]
    if os.geteuid() == 0:
        try:
            ensure_user(NON_ROOT_USER)
            users.append(NON_ROOT_USER)
        except SshdUnavailable:
            pass  # reported by sshd_user, which is the fixture that needs it
    server = _start(tmp_path_factory, "sshd", users)
    yield server
    server.stop(remove_files=False)  # keep keys and sshd.log under pytest's tmp dir


@pytest.fixture(scope="session")
def sshd(_sshd_server: SshServer) -> SshServer:
    """The test sshd, logged into as the current user (root when the suite runs as root)."""
    return _sshd_server


@pytest.fixture(scope="session")
def sshd_user(_sshd_server: SshServer) -> SshServer:
    """The same sshd, logged into as a non-root user (``skyctltest`` when running as root)."""
    if os.geteuid() != 0:
        return _sshd_server  # the current user is already not root
    if NON_ROOT_USER not in _sshd_server.identities:
        try:
            ensure_user(NON_ROOT_USER)
        except SshdUnavailable as exc:
            _sshd_unavailable(str(exc))
        _sshd_unavailable(f"user {NON_ROOT_USER!r} could not be prepared")
    return _sshd_server.as_user(NON_ROOT_USER)


@pytest.fixture(scope="session")
def sshd_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A second, independent sshd (own port, host key and user key), e.g. the gateway in front of ``sshd``."""
    server = _start(tmp_path_factory, "sshd-gateway", [getpass.getuser()])
    yield server
    server.stop(remove_files=False)


# -- end-to-end: one config per transport -----------------------------------------
from helpers import write_config


@pytest.fixture(scope="session")
def ssh_config(tmp_path_factory: pytest.TempPathFactory, sshd: SshServer) -> "os.PathLike[str]":
    """A skyward.yaml whose default host ``box`` is the test sshd (remote python: /usr/bin/python3)."""
    return write_config(tmp_path_factory.mktemp("cfg-ssh") / "skyward.yaml", sshd, default="box")


@pytest.fixture(scope="session")
def local_config(tmp_path_factory: pytest.TempPathFactory) -> "os.PathLike[str]":
    """A skyward.yaml whose default host is ``local``."""
    return write_config(tmp_path_factory.mktemp("cfg-local") / "skyward.yaml")


@pytest.fixture(params=["local", "ssh"])
def host_config(request: pytest.FixtureRequest) -> "os.PathLike[str]":
    """The same end-to-end test on the built-in ``local`` host and on the test sshd."""
    return request.getfixturevalue(f"{request.param}_config")


# -- kept SSH connections (reuse): the suite's holders live in a runtime dir of its own ----
@pytest.fixture(scope="session", autouse=True)
def _reuse_runtime_dir() -> Iterator[None]:
    """Point ``XDG_RUNTIME_DIR`` at a fresh, short directory for the whole session.

    ssh hosts keep their connection by default (``reuse: true``): the holder
    processes the tests start then never meet a user's own, and are stopped
    (each by the pid it wrote, once checked to be a holder) when the session ends.
    """
    import shutil
    import signal
    import tempfile
    import time
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="skyctl-tests-", dir="/tmp"))
    old = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = old
        from helpers import stop_spares

        stop_spares(path)  # spare Ray drivers (``transports/spare.py``) the ray tests left
        pids = []
        for pid_file in path.glob("skyctl/*.pid"):
            try:
                pid = int(pid_file.read_text())
                if b"skyctl.holder" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGTERM)
                    pids.append(pid)
            except (OSError, ValueError):
                continue
        def running(pid: int) -> bool:
            try:
                return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
            except (OSError, IndexError):
                return False

        deadline = time.monotonic() + 15
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if running(pid)]
            time.sleep(0.05)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """skyctl processes a test started; killed (by pid) if still running at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        for stream in (proc.stdout, proc.stderr):
            if stream and not stream.closed:
                stream.close()


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """An ``XDG_RUNTIME_DIR`` of this test's own (0700, short: a socket path must fit);
    the kept connections (holders) started in it are stopped afterwards, by their pid."""
    import shutil
    import tempfile

    from helpers import stop_holders, stop_spares

    path = Path(tempfile.mkdtemp(prefix="skr-", dir="/tmp"))
    path.chmod(0o700)
    try:
        yield path
    finally:
        stop_holders(path)
        stop_spares(path)
        shutil.rmtree(path, ignore_errors=True)

