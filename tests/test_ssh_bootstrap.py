"""Starting the worker on an SSH host, through the real ``skyctl`` and a real sshd.

Cold and warm starts (one exec channel each; the bundle sent once, privately;
a warm call writes nothing), ``pip:`` venvs built once and reused, a
``gateway:``, a non-root login, and no worker left behind when the client is
killed.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from helpers import pid_alive, skyctl_argv, ssh_host_yaml, wait_for
from ssh_e2e import REPO, box, config, exec_sessions, skyctl, target, tree

if TYPE_CHECKING:
    from sshd import SshServer

pytestmark = pytest.mark.timeout(240)

FIB5 = ["0", "1", "1", "2", "3"]


def fib(cfg: str, n: int = 5, *flags: str) -> subprocess.CompletedProcess[str]:
    result = skyctl("run", target("fibonacci"), "--arg", f"n={n}", "-c", cfg, *flags)
    assert result.returncode == 0, result.stderr
    return result


def logins(server: SshServer) -> int:
    return server.log_text().count("Accepted publickey")


def test_cold_then_warm_call_one_exec_each(sshd: SshServer, tmp_path: Path) -> None:
    """Direct connections (``--no-reuse``): exactly one exec channel per call, the bundle sent once."""
    workdir = tmp_path / "wd"
    cfg = box(tmp_path / "skyward.yaml", sshd, extra=f"workdir: {workdir}")

    before = exec_sessions(sshd)
    assert fib(cfg, 5, "--no-reuse").stdout.split() == FIB5
    assert exec_sessions(sshd) == before + 1, "a cold call is one exec: stub, bundle and worker in one channel"
    # the bundle: exactly one file, private, in a private directory
    assert [p.name for p in workdir.iterdir()] == [p.name for p in workdir.glob("bundle-*.zip")]
    (bundle,) = workdir.glob("bundle-*.zip")
    assert stat.S_IMODE(workdir.stat().st_mode) == 0o700
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    cold = tree(workdir)

    before = exec_sessions(sshd)
    assert fib(cfg, 8, "--no-reuse").stdout.split() == ["0", "1", "1", "2", "3", "5", "8", "13"]
    assert exec_sessions(sshd) == before + 1, "a warm call is one exec"
    assert tree(workdir) == cold, "a warm call writes nothing under workdir (and does not resend the bundle)"


def test_cold_then_warm_call_through_a_kept_connection(sshd: SshServer, tmp_path: Path) -> None:
    """The default (``reuse: true``): the bundle is sent once, a warm call neither logs in again nor writes."""
    workdir = tmp_path / "wd"
    cfg = box(tmp_path / "skyward.yaml", sshd, extra=f"workdir: {workdir}")
    assert fib(cfg).stdout.split() == FIB5
    (bundle,) = workdir.glob("bundle-*.zip")
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    cold = tree(workdir)

    before = logins(sshd)
    assert fib(cfg, 8).stdout.split() == ["0", "1", "1", "2", "3", "5", "8", "13"]
    assert logins(sshd) == before, "the warm call used the kept connection"
    assert tree(workdir) == cold


def test_check_says_when_it_sent_the_bundle(sshd: SshServer, tmp_path: Path) -> None:
    cfg = box(tmp_path / "skyward.yaml", sshd, extra=f"workdir: {tmp_path / 'wd'}")
    cold = skyctl("check", "box", "-c", cfg)
    warm = skyctl("check", "box", "-c", cfg)
    assert (cold.returncode, warm.returncode) == (0, 0), cold.stdout + cold.stderr + warm.stdout + warm.stderr
    assert "bundle sent" in cold.stdout
    assert "bundle sent" not in warm.stdout and "box: ok" in warm.stdout


def test_pip_requirements_are_installed_once_and_reused(sshd: SshServer, tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    cfg = box(tmp_path / "skyward.yaml", sshd, extra=f'workdir: {workdir}\npip: ["tomli-w"]')
    first = skyctl("run", target("uses_tomli_w"), "-c", cfg, timeout=300)
    assert first.returncode == 0, first.stderr
    info = json.loads(first.stdout)
    assert info["dumps"] == "a = 1\n"
    venv = Path(info["prefix"])
    assert venv.parent == workdir / "venvs" and Path(info["file"]).is_relative_to(venv)
    assert (venv / ".ready").exists()
    built = tree(workdir)

    second = skyctl("run", target("uses_tomli_w"), "-c", cfg)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == info
    assert tree(workdir) == built, "the second call reused the venv: nothing under workdir was written"
    assert "Installing collected packages" not in second.stderr


def test_a_host_behind_a_gateway(sshd: SshServer, sshd_gateway: SshServer, tmp_path: Path) -> None:
    cfg = config(
        tmp_path / "skyward.yaml",
        ssh_host_yaml(sshd, extra="gateway: jump"),
        ssh_host_yaml(sshd_gateway, name="jump"),
    )
    before = logins(sshd_gateway)
    assert fib(cfg, 10, "--no-reuse").stdout.split() == ["0", "1", "1", "2", "3", "5", "8", "13", "21", "34"]
    assert logins(sshd_gateway) == before + 1, "the call went through the gateway"
    # and so does the kept connection's holder
    assert fib(cfg, 3).stdout.split() == ["0", "1", "1"]


def test_a_non_root_login_uses_its_own_home(sshd_user: SshServer, tmp_path: Path) -> None:
    cfg = box(tmp_path / "skyward.yaml", sshd_user)  # default workdir: ~/.cache/skyctl on the remote
    result = skyctl("run", target("whoami"), "-c", cfg)
    assert result.returncode == 0, result.stderr
    me = pwd.getpwnam(sshd_user.user)
    assert json.loads(result.stdout) == {"uid": me.pw_uid, "user": sshd_user.user, "home": me.pw_dir}
    workdir = Path(me.pw_dir) / ".cache" / "skyctl"
    bundles = list(workdir.glob("bundle-*.zip"))
    assert bundles, f"no bundle in {workdir}"
    for bundle in bundles:
        st = bundle.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (me.pw_uid, 0o600)
    assert stat.S_IMODE(workdir.stat().st_mode) == 0o700


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user can write (pytest's tmp_path is private to us)."""
    path = Path(tempfile.mkdtemp(prefix="skyctl-e2e-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _user_pids(user: str) -> set[int]:
    out = subprocess.run(["pgrep", "-u", user], capture_output=True, text=True, timeout=30)
    return {int(p) for p in out.stdout.split()}


@pytest.mark.skipif(shutil.which("pgrep") is None, reason="pgrep not installed")
@pytest.mark.parametrize("flags", [(), ("--no-reuse",)], ids=["kept", "direct"])
def test_worker_exits_when_the_client_is_killed(sshd_user: SshServer, tmp_path: Path, shared_dir: Path,
                                                flags: tuple[str, ...]) -> None:
    pidfile = shared_dir / "worker.pid"
    cfg = box(tmp_path / "skyward.yaml", sshd_user)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYCTL_") and k != "SSH_AUTH_SOCK"}
    client = subprocess.Popen(
        skyctl_argv("run", target("pid_then_stream"), "--arg", f"pidfile={pidfile}", "-c", cfg, *flags),
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    worker = 0
    first_value = threading.Event()
    threading.Thread(target=lambda: (client.stdout.readline(), first_value.set()), daemon=True).start()  # type: ignore[union-attr]
    try:
        worker = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(), timeout=60, what="the worker's pid"))
        wait_for(first_value.is_set, timeout=60, what="the first value")
        assert worker in _user_pids(sshd_user.user), f"worker {worker} is not a process of {sshd_user.user}"
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=30)
        wait_for(lambda: not pid_alive(worker), timeout=30, what=f"worker {worker} to exit after the client died")
        wait_for(lambda: worker not in _user_pids(sshd_user.user), timeout=30, what=f"worker {worker} to be reaped")
    finally:
        if worker and pid_alive(worker):  # the test failed: leave nothing running
            os.kill(worker, signal.SIGKILL)
        if client.poll() is None:
            client.kill()
            client.wait(timeout=10)
        if client.stdout:
            client.stdout.close()
