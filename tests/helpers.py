"""Helpers for end-to-end tests: run the real ``skyctl`` executable, write configs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
TARGETS = Path(__file__).resolve().parent / "targets"


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without skyctl's own variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYCTL_")}
    env.update(extra or {})
    return env


def skyctl_argv(*args: str) -> list[str]:
    """argv that runs the installed ``skyctl`` console script."""
    exe = shutil.which("skyctl")
    if exe:
        return [exe, *args]
    return [sys.executable, "-c", "from skyctl.cli import main; main()", *args]


def run_skyctl(*args: str, input: str | bytes | None = None, timeout: float = 60, cwd: Path | str | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run skyctl to completion; text stdout/stderr."""
    return subprocess.run(
        skyctl_argv(*args), input=input, capture_output=True, text=not isinstance(input, bytes),
        timeout=timeout, cwd=cwd or REPO, env=clean_env(env),
    )


def sky(config: Path, *args: str, timeout: float = 180, **kw: Any) -> subprocess.CompletedProcess[str]:
    """``skyctl ARGS -c CONFIG`` from the repository, to completion (``run_skyctl``'s keywords)."""
    return run_skyctl(*args, "-c", str(config), cwd=REPO, timeout=timeout, **kw)


def numbers(n: int) -> str:
    """The lines ``1`` … ``n``: a pipe's stdin."""
    return "".join(f"{i}\n" for i in range(1, n + 1))


def start_skyctl(*args: str, cwd: Path | str | None = None, env: dict[str, str] | None = None,
                 **popen: Any) -> subprocess.Popen[bytes]:
    """Start skyctl in the background (stdout/stderr pipes unless given)."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(skyctl_argv(*args), cwd=cwd or REPO, env=clean_env(env), **popen)


def wait_for(condition: Callable[[], Any], timeout: float = 20, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def pipe_killing_a_worker(config: Path, workdir: Path, n: int, target: str, *args: str, marker: str = "blocked-*",
                          status: int = 0) -> tuple[list[int], str, str]:
    """``skyctl pipe TARGET ARGS -H farm -c CONFIG`` over the numbers 1..n, where TARGET's function, at
    its gate, writes ``workdir/<marker>`` (the pid second in its name, its host inside) and waits for
    ``workdir/gate``: the first worker there is SIGKILLed, the others let through. Asserts the exit
    ``status``; returns the values written, the host killed and stderr."""
    proc = subprocess.Popen(skyctl_argv("pipe", target, *args, "-H", "farm", "-c", str(config)),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                            env=clean_env())
    try:
        assert proc.stdin is not None
        proc.stdin.write("".join(f"{i}\n" for i in range(1, n + 1)).encode())  # the reader takes it as chunks go
        proc.stdin.close()
        proc.stdin = None
        found = wait_for(lambda: [m for m in workdir.glob(marker) if m.read_text()], timeout=120,
                         what="a worker at the gate")  # its host's name written, not only the file made
        host = found[0].read_text()
        os.kill(int(found[0].name.split("-")[1]), signal.SIGKILL)
        (workdir / "gate").write_text("open")
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status, err.decode()
    return [int(v) for v in out.decode().split()], host, err.decode()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def ssh_host_yaml(server: Any, name: str = "box", python: str = "/usr/bin/python3", extra: str = "") -> str:
    """A ``hosts:`` entry for a test sshd."""
    return (
        f"  {name}:\n"
        f"    host: 127.0.0.1\n"
        f"    port: {server.port}\n"
        f"    user: {server.user}\n"
        f"    identity_file: {server.identity_file}\n"
        f"    known_hosts: {server.known_hosts}\n"
        f"    python: {python}\n"
        + "".join(f"    {line}\n" for line in extra.splitlines() if line.strip())
    )


def write_config(path: Path, server: Any | None = None, *, default: str = "local", **host_kw: Any) -> Path:
    """A skyward.yaml with ``local`` and, given a server, an ssh host ``box``."""
    text = f"default: {default}\nhosts:\n  local:\n    type: local\n"
    if server is not None:
        text += ssh_host_yaml(server, **host_kw)
    path.write_text(text)
    return path


def holder_pid(pid_file: Path) -> int:
    """The pid in a kept connection's pid file, if that process is still a skyctl holder; else 0."""
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return 0
    return pid if b"skyctl.holder" in cmdline else 0


def stop_holders(run_dir: Path) -> None:
    """SIGTERM every holder that wrote its pid under ``run_dir`` (an ``XDG_RUNTIME_DIR``), and wait for each."""
    import contextlib
    import signal

    pids = [pid for pid in map(holder_pid, run_dir.glob("skyctl/*.pid")) if pid]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in pids:
        wait_for(lambda: not pid_alive(pid), timeout=30, what=f"holder {pid} to exit")



def spare_pids(run_dir: Path) -> list[int]:
    """The pids of the spare drivers listening under ``run_dir`` (an ``XDG_RUNTIME_DIR``), by their sockets'
    names, live ones only."""
    from skyctl.remote.spare import name_pid

    pids = (name_pid(sock.name) for sock in sorted(run_dir.glob("skyctl/spares/*.sock")))
    return [pid for pid in pids if pid is not None and pid_alive(pid)]


def stop_spares(run_dir: Path) -> None:
    """SIGTERM every spare driver listening under ``run_dir``, and wait for each."""
    import contextlib
    import signal

    pids = spare_pids(run_dir)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in pids:
        wait_for(lambda: not pid_alive(pid), timeout=30, what=f"spare {pid} to exit")
