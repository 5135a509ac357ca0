"""SSH host failures through the real ``skyctl`` against a real sshd: exit code, one-line message, a hint.

Connect failures (exit 4), remote environment failures (exit 5) and a worker
lost mid-stream (exit 6). Each must come quickly, say which failure it is and
what to do, and never show a skyctl traceback.
"""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from helpers import pid_alive, skyctl_argv, ssh_host_yaml, wait_for
from ssh_e2e import REPO, assert_failure, box, config, free_port, skyctl, target, timed

if TYPE_CHECKING:
    from sshd import SshServer

pytestmark = pytest.mark.timeout(180)

CLIENT_PY = "%d.%d" % sys.version_info[:2]


def fib_on(cfg: str, *flags: str) -> tuple[subprocess.CompletedProcess[str], float]:
    return timed("run", target("fibonacci"), "--arg", "n=5", "-c", cfg, *flags)


@pytest.fixture(params=["kept", "direct"])
def via(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """Connect failures are the same through a kept connection's holder (the default) and with ``--no-reuse``."""
    return ("--no-reuse",) if request.param == "direct" else ()


# -- exit 4: could not connect ---------------------------------------------------


def test_closed_port_is_refused(sshd: SshServer, tmp_path: Path, via: tuple[str, ...]) -> None:
    port = free_port()
    text = ssh_host_yaml(sshd).replace(f"port: {sshd.port}\n", f"port: {port}\n")
    result, elapsed = fib_on(config(tmp_path / "skyward.yaml", text), *via)
    assert_failure(result, 4, "refused", str(port), elapsed=elapsed)


def test_unknown_host_key_shows_its_fingerprint_and_how_to_trust_it(sshd: SshServer, tmp_path: Path, via: tuple[str, ...]) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    text = ssh_host_yaml(sshd).replace(str(sshd.known_hosts), str(known))
    result, elapsed = fib_on(config(tmp_path / "skyward.yaml", text), *via)
    line = assert_failure(result, 4, "unknown", sshd.host_key_fingerprint, elapsed=elapsed)
    assert f"[127.0.0.1]:{sshd.port}" in line
    hint = result.stderr.split("hint: ", 1)[1]
    assert "ssh-keyscan" in hint and str(known) in hint and "accept-new" in hint
    assert known.read_text() == ""  # strict: nothing trusted behind the user's back


def test_changed_host_key_is_refused_loudly(sshd: SshServer, sshd_gateway: SshServer, tmp_path: Path, via: tuple[str, ...]) -> None:
    known = tmp_path / "known_hosts"
    stale = f"[127.0.0.1]:{sshd.port} {sshd_gateway.host_public_key}\n"  # another server's key
    known.write_text(stale)
    text = ssh_host_yaml(sshd).replace(str(sshd.known_hosts), str(known))
    result, elapsed = fib_on(config(tmp_path / "skyward.yaml", text), *via)
    line = assert_failure(result, 4, "CHANGED", sshd.host_key_fingerprint, sshd_gateway.host_key_fingerprint, elapsed=elapsed)
    assert "CHANGED" in line  # in capitals, like ssh's own warning
    assert "ssh-keygen -R" in result.stderr
    assert known.read_text() == stale


def test_unauthorized_key_is_an_authentication_failure(sshd: SshServer, tmp_path: Path, via: tuple[str, ...]) -> None:
    text = ssh_host_yaml(sshd).replace(str(sshd.identity_file), str(sshd.unauthorized_identity_file))
    result, elapsed = fib_on(config(tmp_path / "skyward.yaml", text), *via)
    assert_failure(result, 4, "authentication failed", f"user '{sshd.user}'", str(sshd.unauthorized_identity_file),
                   elapsed=elapsed)


def test_accept_new_trusts_an_unknown_key_and_records_it(sshd: SshServer, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    text = ssh_host_yaml(sshd, extra="host_key_policy: accept-new").replace(str(sshd.known_hosts), str(known))
    result = skyctl("run", target("fibonacci"), "--arg", "n=5", "-c", config(tmp_path / "skyward.yaml", text))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "1", "1", "2", "3"]
    assert known.read_text().split() == [f"[127.0.0.1]:{sshd.port}", *sshd.host_public_key.split()]
    # the recorded key is then good enough for the default, strict policy
    strict = ssh_host_yaml(sshd).replace(str(sshd.known_hosts), str(known))
    again = skyctl("run", target("fibonacci"), "--arg", "n=3", "-c", config(tmp_path / "strict.yaml", strict))
    assert (again.returncode, again.stdout.split()) == (0, ["0", "1", "1"]), again.stderr


# -- exit 5: remote environment -------------------------------------------------


def test_missing_python_is_not_found(sshd: SshServer, tmp_path: Path) -> None:
    result, elapsed = fib_on(box(tmp_path / "skyward.yaml", sshd, python="/nonexistent/python3"))
    assert_failure(result, 5, "/nonexistent/python3", "not found", elapsed=elapsed)


def _other_minor_python() -> tuple[str, str] | None:
    """(path, "major.minor") of an installed Python 3 whose minor differs from ours, or None."""
    candidates = sorted(
        glob.glob("/usr/bin/python3.*") + glob.glob("/usr/local/bin/python3.*")
        + glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3"))
    )
    for path in candidates:
        if not re.search(r"python3(\.\d+)?$", path) or not os.access(path, os.X_OK):
            continue
        try:
            out = subprocess.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        version = out.stdout.strip()
        if out.returncode == 0 and version.startswith("3.") and version != CLIENT_PY:
            return path, version
    return None


def test_python_of_another_minor_version_names_both(sshd: SshServer, tmp_path: Path) -> None:
    other = _other_minor_python()
    if other is None:
        pytest.skip(f"no Python 3 other than {CLIENT_PY} is installed here")
    path, version = other
    result, elapsed = fib_on(box(tmp_path / "skyward.yaml", sshd, python=path))
    line = assert_failure(result, 5, f"is {version}", CLIENT_PY, elapsed=elapsed)
    assert path in line
    assert f"Python {CLIENT_PY}" in result.stderr.split("hint: ", 1)[1]


def test_a_module_missing_remotely_points_at_pip(sshd: SshServer, tmp_path: Path) -> None:
    result, elapsed = timed("run", target("needs_missing_module"), "-c", box(tmp_path / "skyward.yaml", sshd))
    # The user's own frame (where the import is) may be shown, but no skyctl frame.
    frames = re.findall(r'File "([^"]+)"', result.stderr)
    assert all(f.endswith("tests/targets/remote_env.py") for f in frames), result.stderr
    result.stderr = result.stderr.replace("Traceback (most recent call last)", "")  # the user's, checked above
    assert_failure(result, 5, "some_module_that_does_not_exist_xyz", "not importable", elapsed=elapsed)
    assert "pip:" in result.stderr.split("hint: ", 1)[1]


def test_a_failing_pip_install_shows_the_tail_of_pips_output(sshd: SshServer, tmp_path: Path) -> None:
    cfg = box(tmp_path / "skyward.yaml", sshd,
              extra=f'workdir: {tmp_path / "wd"}\npip: ["this-package-does-not-exist-skyctl==0.0.1"]')
    result, elapsed = timed("run", target("fibonacci"), "--arg", "n=3", "-c", cfg, timeout=300)
    assert_failure(result, 5, "pip", elapsed=0)
    assert elapsed < 240
    before_error = result.stderr.split("error: ", 1)[0]
    assert "No matching distribution found for this-package-does-not-exist-skyctl" in before_error, result.stderr
    assert result.stdout == ""
    assert not list((tmp_path / "wd").glob("venvs/*/.ready"))  # a failed env is not cached as good


# -- exit 6: connection lost -----------------------------------------------------


def test_worker_killed_mid_stream_is_lost_and_keeps_printed_values(sshd: SshServer, tmp_path: Path) -> None:
    pidfile = tmp_path / "worker.pid"
    cfg = box(tmp_path / "skyward.yaml", sshd)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYCTL_") and k != "SSH_AUTH_SOCK"}
    proc = subprocess.Popen(
        skyctl_argv("run", target("pid_then_stream"), "--arg", f"pidfile={pidfile}", "-c", cfg),
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    seen: list[bytes] = []

    def read_values() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            seen.append(line)

    reader = threading.Thread(target=read_values, daemon=True)
    reader.start()
    try:
        worker = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(), timeout=60, what="the worker's pid"))
        wait_for(lambda: len(seen) >= 3, timeout=60, what="three values on stdout")
        printed_before = len(seen)
        os.kill(worker, signal.SIGKILL)
        code = proc.wait(timeout=45)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    reader.join(10)
    stderr = proc.stderr.read().decode(errors="replace")  # type: ignore[union-attr]
    result = subprocess.CompletedProcess(proc.args, code, b"".join(seen).decode(), stderr)
    assert_failure(result, 6, "lost", values_before=True)
    values = [int(v) for v in result.stdout.split()]
    assert values == list(range(len(values))) and len(values) >= printed_before, result.stdout
    assert not pid_alive(worker)

