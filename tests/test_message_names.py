"""Messages name what the user named: the config file actually read (``-c other.yaml``), and the profile
(then its address) when several profiles share one address. Real ``skyctl`` against the real test sshd."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import skyctl
from skyctl.errors import ConnectionLost

from helpers import REPO, ssh_host_yaml
from ssh_e2e import assert_failure, free_port, skyctl as run
from targets import lost_worker

if TYPE_CHECKING:
    from sshd import SshServer

pytestmark = pytest.mark.timeout(180)

LOSE = str(REPO / "tests" / "targets" / "lost_worker.py") + ":lose_worker_if_told"
LOSE_ENV = 'env: {SKYCTL_TEST_LOSE_WORKER: "1"}'


@pytest.fixture(params=["kept", "direct"])
def via(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """Through a kept connection's holder (the default: the hint is made in the holder) and ``--no-reuse``."""
    return ("--no-reuse",) if request.param == "direct" else ()


def hint_of(stderr: str) -> str:
    return next(line for line in stderr.splitlines() if line.startswith("hint: "))


def test_a_connect_hint_names_the_config_file_given_with_c(sshd: SshServer, tmp_path: Path,
                                                           via: tuple[str, ...]) -> None:
    text = ssh_host_yaml(sshd).replace(f"port: {sshd.port}\n", f"port: {free_port()}\n")
    (tmp_path / "other.yaml").write_text(f"default: box\nhosts:\n{text}")
    for flag in ("-c", "--config"):
        result = run("run", LOSE, flag, "other.yaml", *via, cwd=tmp_path)
        assert_failure(result, 4, "refused")
        hint = hint_of(result.stderr)
        assert "check 'port:' in other.yaml" in hint and "skyward.yaml" not in hint, result.stderr


def test_an_identity_file_hint_names_the_config_file(sshd: SshServer, tmp_path: Path) -> None:
    text = ssh_host_yaml(sshd).replace(str(sshd.identity_file), str(tmp_path / "no-such-key"))
    (tmp_path / "hosts.yaml").write_text(f"default: box\nhosts:\n{text}")
    result = run("run", LOSE, "-c", "hosts.yaml", "--no-reuse", cwd=tmp_path)
    assert_failure(result, 4, "no-such-key")
    assert "fix 'identity_file' of host 'box' in hosts.yaml" in hint_of(result.stderr), result.stderr


def two_profiles(sshd: SshServer, path: Path) -> str:
    """``box`` and ``box-2`` on the same sshd address; ``box-2``'s worker is lost in the call."""
    path.write_text("default: box\nhosts:\n" + ssh_host_yaml(sshd, "box")
                    + ssh_host_yaml(sshd, "box-2", extra=LOSE_ENV) + "groups:\n  both: [box, box-2]\n")
    return f"{sshd.user}@127.0.0.1:{sshd.port}"


def test_a_lost_worker_is_named_by_its_profile_then_its_address(sshd: SshServer, tmp_path: Path,
                                                                 via: tuple[str, ...]) -> None:
    address = two_profiles(sshd, tmp_path / "skyward.yaml")
    result = run("run", LOSE, "-H", "box-2", *via, cwd=tmp_path)
    line = assert_failure(result, 6, f"lost the worker on box-2 ({address})", hint=True)
    assert "'box'" not in line and " box " not in line, line


def test_a_group_summary_names_the_profile_that_lost_its_worker(sshd: SshServer, tmp_path: Path) -> None:
    address = two_profiles(sshd, tmp_path / "skyward.yaml")
    result = run("run", LOSE, "-H", "both", cwd=tmp_path)
    assert result.returncode == 6, result.stderr
    assert "box\talive" in result.stdout.splitlines(), result.stdout
    assert f"lost the worker on box-2 ({address})" in result.stderr, result.stderr
    assert f"lost the worker on {address}" not in result.stderr and "Traceback" not in result.stderr


def test_the_api_names_the_profile_too(sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    address = two_profiles(sshd, tmp_path / "skyward.yaml")
    monkeypatch.chdir(REPO)  # the target module travels by value from under the current directory
    with pytest.raises(ConnectionLost, match=rf"lost the worker on box-2 \({address}\)"):
        skyctl.function(lost_worker.lose_worker_if_told)() >> skyctl.host("box-2", tmp_path / "skyward.yaml")
