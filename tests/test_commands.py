"""``skyctl hosts``, ``skyctl check``, ``skyctl init`` and config errors, through the real executable."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from helpers import ssh_host_yaml
from ssh_e2e import assert_failure, box, config, free_port, skyctl, target, timed

if TYPE_CHECKING:
    from sshd import SshServer

pytestmark = pytest.mark.timeout(180)


def remote_python_version(path: str = "/usr/bin/python3") -> str:
    out = subprocess.run([path, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


# -- hosts -------------------------------------------------------------------------


def test_hosts_lists_every_profile(sshd: SshServer, sshd_gateway: SshServer, tmp_path: Path) -> None:
    cfg = config(
        tmp_path / "skyward.yaml",
        ssh_host_yaml(sshd, extra="gateway: jump"),
        ssh_host_yaml(sshd_gateway, name="jump", python="/opt/py/bin/python3.11"),
        "  bare:\n    host: bare.example.com\n",
        default="box",
    )
    result = skyctl("hosts", "-c", cfg)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split() == ["NAME", "TYPE", "ADDRESS", "PYTHON"]
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert set(rows) == {"local", "box", "jump", "bare"}
    expect = {
        "local": ["local", "local", r"\S+"],
        "box": ["ssh", f"{sshd.user}@127.0.0.1:{sshd.port}", "/usr/bin/python3"],
        "jump": ["ssh", f"{sshd_gateway.user}@127.0.0.1:{sshd_gateway.port}", "/opt/py/bin/python3.11"],
        "bare": ["ssh", "bare.example.com", "python3"],  # the remote default
    }
    for name, cells in expect.items():
        pattern = r"\s+".join(c if c == r"\S+" else re.escape(c) for c in [name, *cells])
        assert re.fullmatch(pattern, rows[name].replace(" (default)", "").strip()), rows[name]
    local_python = rows["local"].split()[-1]  # the Python that runs skyctl
    assert os.path.realpath(local_python) == os.path.realpath(sys.executable), rows["local"]
    assert "(default)" in rows["box"] and sum("(default)" in r for r in rows.values()) == 1
    assert str(cfg) in result.stderr  # which file was read


# -- check -------------------------------------------------------------------------


def test_check_reports_python_and_latency(sshd: SshServer, tmp_path: Path) -> None:
    cfg = box(tmp_path / "skyward.yaml", sshd, extra=f"workdir: {tmp_path / 'wd'}")
    result, elapsed = timed("check", "box", "-c", cfg)
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = [l for l in result.stdout.splitlines() if l.startswith("box:")]
    assert f"python {remote_python_version()}" in line, line
    assert re.search(r"round trip \d+(\.\d+)? ms", line), line
    assert "Traceback" not in result.stderr
    assert elapsed < 60


def test_check_without_a_name_checks_the_default_host(sshd: SshServer, tmp_path: Path) -> None:
    result = skyctl("check", "-c", box(tmp_path / "skyward.yaml", sshd))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("box: ok"), result.stdout


def test_check_of_broken_hosts_exits_with_the_failures_code(sshd: SshServer, tmp_path: Path) -> None:
    closed = ssh_host_yaml(sshd, name="closed").replace(f"port: {sshd.port}\n", f"port: {free_port()}\n")
    nopy = ssh_host_yaml(sshd, name="nopy", python="/nonexistent/python3")
    cfg = config(tmp_path / "skyward.yaml", ssh_host_yaml(sshd), closed, nopy)

    refused, elapsed = timed("check", "closed", "-c", cfg)
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert re.search(r"^closed: FAILED \(4\) .*refused", refused.stdout, re.M), refused.stdout
    assert "hint:" in refused.stdout and "Traceback" not in refused.stderr
    assert elapsed < 45

    missing = skyctl("check", "nopy", "-c", cfg)
    assert missing.returncode == 5, missing.stdout + missing.stderr
    assert re.search(r"^nopy: FAILED \(5\) .*not found", missing.stdout, re.M), missing.stdout

    # several hosts: each is reported, the good one too; the status is non-zero
    mixed = skyctl("check", "box", "closed", "-c", cfg)
    assert mixed.returncode == 4, mixed.stdout + mixed.stderr
    assert re.search(r"^box: ok", mixed.stdout, re.M) and re.search(r"^closed: FAILED", mixed.stdout, re.M)


def test_check_of_an_unknown_host_is_a_config_error_before_connecting(sshd: SshServer, tmp_path: Path) -> None:
    cfg = box(tmp_path / "skyward.yaml", sshd)
    before = sshd.log_text().count("Connection from")
    result, elapsed = timed("check", "box", "bx", "-c", cfg)
    assert_failure(result, 3, "unknown host 'bx'", elapsed=elapsed)
    assert "did you mean 'box'" in result.stderr
    assert sshd.log_text().count("Connection from") == before, "no host is contacted when a name is wrong"


# -- init --------------------------------------------------------------------------


def test_init_writes_a_config_that_loads_and_never_overwrites_it(tmp_path: Path) -> None:
    first = skyctl("init", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    written = tmp_path / "skyward.yaml"
    text = written.read_bytes()
    assert text.startswith(b"#") and b"hosts:" in text

    listed = skyctl("hosts", cwd=tmp_path)  # found as ./skyward.yaml
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^local \(default\)\s+local\s+local\s", listed.stdout, re.M), listed.stdout
    assert "skyward.yaml" in listed.stderr and "built-in" not in listed.stderr

    second = skyctl("init", cwd=tmp_path)
    assert_failure(second, 2, "already exists")
    assert written.read_bytes() == text


# -- config errors exit 3 ----------------------------------------------------------


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    cfg = tmp_path / "skyward.yaml"
    cfg.write_text("default: local\nhosts:\n  local:\n    type: local\n  box: [\n    host: x\n")
    for args in (["hosts"], ["run", target("fibonacci")], ["check"]):
        result = skyctl(*args, "-c", str(cfg))
        line = assert_failure(result, 3, str(cfg), hint=False)  # the line number says where to fix it
        assert re.search(r"line \d+", line), line


def test_unknown_key_suggests_the_right_one(sshd: SshServer, tmp_path: Path) -> None:
    cfg = config(tmp_path / "skyward.yaml", ssh_host_yaml(sshd, extra="prot: 22"))
    for args in (["hosts"], ["run", target("fibonacci")]):
        result = skyctl(*args, "-c", cfg)
        assert_failure(result, 3, "unknown key 'prot'", "box", cfg)
        assert "did you mean 'port'" in result.stderr


def test_unknown_host_name(sshd: SshServer, tmp_path: Path) -> None:
    cfg = box(tmp_path / "skyward.yaml", sshd)
    result = skyctl("run", target("fibonacci"), "--host", "bxo", "-c", cfg)
    assert_failure(result, 3, "unknown host 'bxo'")
    assert "did you mean 'box'" in result.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    for args in (["hosts"], ["run", target("fibonacci")], ["check"]):
        result = skyctl(*args, "--config", str(missing))
        assert_failure(result, 3, "not found", str(missing))
