"""``pip:`` venvs on an SSH host (issue 11, reproduction 9), through the real ``skyctl`` and sshd.

- pip's output may hold blank lines: they no longer end start-up with "did
  not start: progress"; pip's own error reaches the user;
- the specs (an index URL with a token in it) reach pip through a private
  requirements file in the workdir, never its command line, which every user
  of the host can read in ``ps``; the file is gone afterwards;
- a quiet pip that takes longer than ``connect_timeout`` is not cut off by
  the bootstrap deadline.

The packages are local directories with an in-tree PEP 517 backend (no
network, no setuptools): one fails, one builds a wheel after a quiet pause.
"""

from __future__ import annotations

import http.server
import json
import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import skyctl_argv
from ssh_e2e import REPO, assert_failure, box, clean_env, skyctl, timed, tree

pytestmark = pytest.mark.timeout(300)

TARGETS = "tests/targets/pip_targets.py"

PYPROJECT = """\
[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]

[project]
name = "{name}"
version = "1.0"
"""

FAILING_BACKEND = '''\
def get_requires_for_build_wheel(config_settings=None):
    raise RuntimeError("{marker}")
'''

SLOW_BACKEND = '''\
"""Builds a one-module wheel after a quiet pause."""
import base64, hashlib, os, time, zipfile

NAME, VERSION = "skyctl_slow", "1.0"


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    time.sleep({pause})  # prints nothing meanwhile: pip is quiet too
    info = NAME + "-" + VERSION + ".dist-info"
    files = {{
        NAME + ".py": b"VALUE = 42\\n",
        info + "/METADATA": b"Metadata-Version: 2.1\\nName: skyctl-slow\\nVersion: 1.0\\n",
        info + "/WHEEL": b"Wheel-Version: 1.0\\nGenerator: skyctl-test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    }}
    record = "".join(
        "%s,sha256=%s,%d\\n" % (path, base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode(), len(data))
        for path, data in files.items()
    ) + info + "/RECORD,,\\n"
    files[info + "/RECORD"] = record.encode()
    wheel = NAME + "-" + VERSION + "-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel), "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel
'''


def package(root: Path, name: str, backend: str) -> Path:
    """A local project directory ``root/name`` whose build backend is ``backend`` (source)."""
    path = root / name
    path.mkdir(parents=True)
    (path / "pyproject.toml").write_text(PYPROJECT.format(name=name))
    (path / "backend.py").write_text(backend)
    return path


def test_a_pip_failure_with_blank_lines_shows_pips_own_error(sshd: Any, tmp_path: Path) -> None:
    """pip's error block has blank lines; the first one used to abort start-up ("did not start: progress")."""
    marker = "skyctl-test-backend-refused-to-build"
    bad = package(tmp_path, "skyctl-bad", FAILING_BACKEND.format(marker=marker))
    workdir = tmp_path / "wd"
    cfg = box(tmp_path / "skyward.yaml", sshd, extra=f"workdir: {workdir}\npip: [{json.dumps(str(bad))}]")
    result, elapsed = timed("run", f"{TARGETS}:uses_skyctl_slow", "-c", cfg, timeout=240)
    shown = result.stderr.split("\nerror: ", 1)[0]  # pip's output, indented, above skyctl's error line
    result.stderr = result.stderr.replace("Traceback (most recent call last)", "")  # the backend's, if shown
    assert_failure(result, 5, "pip install", "failed", elapsed=0)
    assert elapsed < 200
    assert f"RuntimeError: {marker}" in shown, result.stderr
    assert "Getting requirements to build wheel did not run successfully" in shown, result.stderr
    assert not list(workdir.glob("venvs/*/.ready")), "a failed venv is not cached as good"


class _Index(http.server.BaseHTTPRequestHandler):
    """A package index that never has the package; holds each answer until the test lets it go."""

    asked: threading.Event
    release: threading.Event
    seen: list[tuple[str, str]]

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.seen.append((self.path, self.headers.get("Authorization") or ""))
        self.asked.set()
        self.release.wait(120)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def index() -> Iterator[type[_Index]]:
    handler = type("Index", (_Index,), {"asked": threading.Event(), "release": threading.Event(), "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    handler.port = server.server_address[1]  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler
    finally:
        handler.release.set()
        server.shutdown()
        server.server_close()


def _command_lines() -> dict[int, bytes]:
    lines = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    lines[int(entry.name)] = f.read()
            except OSError:
                continue
    return lines


def test_pip_specs_reach_pip_in_a_private_file_never_on_its_command_line(
        sshd: Any, tmp_path: Path, index: type[_Index]) -> None:
    secret = "tok-5f3a9c1e77d2"
    url = f"http://skyctl:{secret}@127.0.0.1:{index.port}/simple"  # type: ignore[attr-defined]
    workdir = tmp_path / "wd"
    cfg = box(tmp_path / "skyward.yaml", sshd,
              extra=f'workdir: {workdir}\npip: ["--index-url", "{url}", "skyctl-no-such-package"]')
    env = clean_env()
    env.pop("SSH_AUTH_SOCK", None)
    proc = subprocess.Popen(skyctl_argv("run", f"{TARGETS}:uses_skyctl_slow", "-c", cfg), cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert index.asked.wait(200), "pip never asked the index"
        # pip is waiting for the index's answer: everything it was given is in place now
        leaks = {pid: line for pid, line in _command_lines().items() if secret.encode() in line}
        assert not leaks, f"the token is on a command line: {leaks}"
        holders = [p for p in workdir.iterdir() if p.is_file() and secret.encode() in p.read_bytes()]
        assert len(holders) == 1, sorted(p.name for p in workdir.iterdir())
        st = holders[0].lstat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, os.geteuid()), holders[0]
        assert "--index-url" in holders[0].read_text()
        index.release.set()
        out, err = proc.communicate(timeout=200)
    finally:
        index.release.set()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert_failure(result, 5, "pip install", elapsed=0)
    assert "No matching distribution found for skyctl-no-such-package" in err, err
    assert secret not in err, "pip's output shows the index without its password"
    assert index.seen[0][0] == "/simple/skyctl-no-such-package/"
    assert index.seen[0][1].startswith("Basic "), "the URL's credentials reached pip"
    assert not holders[0].exists(), "the requirements file is removed after pip ran"
    assert not [p for p in workdir.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_a_quiet_pip_longer_than_connect_timeout_is_not_cut_off(sshd: Any, tmp_path: Path) -> None:
    """The bootstrap deadline (connect_timeout: 2) does not count pip's time, even when pip prints nothing."""
    slow = package(tmp_path, "skyctl-slow", SLOW_BACKEND.format(pause=8))
    workdir = tmp_path / "wd"
    cfg = box(tmp_path / "skyward.yaml", sshd,
              extra=f"workdir: {workdir}\nconnect_timeout: 2\npip: [{json.dumps(str(slow))}]")
    first = skyctl("run", f"{TARGETS}:uses_skyctl_slow", "-c", cfg, timeout=240)
    assert first.returncode == 0, first.stderr
    info = json.loads(first.stdout)
    assert info["value"] == 42 and Path(info["prefix"]).parent == workdir / "venvs"
    built = tree(workdir)
    second = skyctl("run", f"{TARGETS}:uses_skyctl_slow", "-c", cfg)
    assert (second.returncode, json.loads(second.stdout or "null")) == (0, info), second.stderr
    assert tree(workdir) == built


def test_requirement_lines_keep_an_option_with_its_value() -> None:
    from skyctl.bootstrap import requirement_lines

    assert requirement_lines(["--index-url", "https://t@x/simple", "numpy>=2", "--pre", "-f", "/w", "a"]) == [
        "--index-url https://t@x/simple", "numpy>=2", "--pre", "-f /w", "a"]
    assert requirement_lines(["--extra-index-url=https://x/simple", "b"]) == ["--extra-index-url=https://x/simple", "b"]
