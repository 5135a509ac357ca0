"""Shared fixtures.

SSH: a real OpenSSH sshd on 127.0.0.1 (see ``tests/sshd.py``), one per test
session. When it cannot be started the tests that need it are skipped with
the reason, except when ``CI`` is set: there they fail, so a CI job can never
pass by silently skipping the ssh tests.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator

import pytest

try:
    from sshd import SshdUnavailable, SshServer, ensure_user, start_sshd
except ModuleNotFoundError:  # tests/ imported as a package
    from tests.sshd import SshdUnavailable, SshServer, ensure_user, start_sshd

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
try:
    from helpers import write_config
except ModuleNotFoundError:
    from tests.helpers import write_config


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
