"""Kept SSH connections (``reuse``) through the real ``skyctl`` against the real sshd.

One handshake serves many calls, through a Unix socket only the user can
open; ``--no-reuse`` / ``reuse: false`` connect each time; the holder exits
after ``reuse_idle`` and takes its spare worker with it; a client killed
mid-call leaves nothing running remotely; failures through the holder look
exactly like direct ones; an unsafe socket directory is never used.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

from helpers import holder_pid, pid_alive, skyctl_argv, ssh_host_yaml, wait_for
from ssh_e2e import REPO, box, clean_env, config, free_port, skyctl

if TYPE_CHECKING:
    from sshd import SshServer

pytestmark = pytest.mark.timeout(240)

TARGETS = "tests/targets/reuse_targets.py"


def target(name: str) -> str:
    return f"{TARGETS}:{name}"


# -- fixtures and helpers ----------------------------------------------------------






def sky(run_dir: Path, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    """``skyctl ARGS`` with ``run_dir`` as its runtime directory (and no ssh-agent)."""
    return skyctl(*args, env={"XDG_RUNTIME_DIR": str(run_dir)}, **kw)  # type: ignore[arg-type]


def accepted(server: SshServer) -> int:
    """How many logins the sshd has accepted so far."""
    return server.log_text().count("Accepted publickey for")


def sockets(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("skyctl/*.sock"))


def workers(marker: str) -> set[int]:
    """Live worker processes (the stub and the worker it becomes) whose argv mentions ``marker``
    (a test's own name for the remote python: see ``profile``).

    Only Python processes: the login shell that sshd runs the command with may
    fork subshells (a ~/.bashrc) that briefly carry the same argv.
    """
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            exe = os.path.basename(os.readlink(entry / "exe"))
        except OSError:
            continue
        if exe.startswith("python") and b"SKYCTL" in cmdline and marker.encode() in cmdline and pid_alive(int(entry.name)):
            found.add(int(entry.name))
    return found


def read_line(proc: subprocess.Popen[bytes], timeout: float = 60) -> bytes:
    """One line of ``proc``'s stdout, failing after ``timeout`` seconds."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"no line from skyctl within {timeout}s (got {line!r})")
        chunk = os.read(fd, 1)
        if not chunk:
            raise AssertionError(f"skyctl closed stdout after {line!r}: {proc.stderr.read() if proc.stderr else ''!r}")
        line += chunk
    return line


def start(run_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    env = clean_env({"XDG_RUNTIME_DIR": str(run_dir)})
    env.pop("SSH_AUTH_SOCK", None)
    return subprocess.Popen(skyctl_argv(*args), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def profile(tmp_path: Path, server: SshServer, extra: str = "", name: str = "skyward.yaml",
            workdir: str = "wd", python: str = "bin") -> str:
    """A config whose host ``box`` is ``server``, with a workdir of this test's own, and a python of its
    own (a symlink ``<tmp_path>/<python>/python3``), by which ``workers`` finds this test's remote processes."""
    link = tmp_path / python / "python3"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/usr/bin/python3")
    return box(tmp_path / name, server, python=str(link), extra=f"workdir: {tmp_path / workdir}\n{extra}")


# -- one connection, private socket --------------------------------------------------


def test_two_calls_share_one_connection_through_a_private_socket(sshd: SshServer, run_dir: Path, tmp_path: Path) -> None:
    cfg = profile(tmp_path, sshd)
    before = accepted(sshd)
    first = sky(run_dir, "run", target("worker_pid"), "-c", cfg)
    second = sky(run_dir, "run", target("worker_pid"), "-c", cfg)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert first.stdout.strip() != second.stdout.strip(), "each call gets a fresh worker process"
    assert accepted(sshd) - before == 1, f"two calls, one SSH login expected:\n{sshd.log_text()[-2000:]}"

    directory = run_dir / "skyctl"
    st = directory.lstat()
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()
    [sock] = sockets(run_dir)
    st = sock.lstat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.getuid()


@pytest.mark.parametrize("how", ["--no-reuse", "reuse: false"])
def test_no_reuse_connects_each_time_and_keeps_nothing(sshd: SshServer, run_dir: Path, tmp_path: Path, how: str) -> None:
    cfg = profile(tmp_path, sshd, extra=how if how.startswith("reuse") else "")
    flags = [how] if how.startswith("--") else []
    before = accepted(sshd)
    for _ in range(2):
        result = sky(run_dir, "run", target("worker_pid"), "-c", cfg, *flags)
        assert result.returncode == 0, result.stderr
    assert accepted(sshd) - before == 2
    assert sockets(run_dir) == []


def test_concurrent_first_calls_start_a_single_holder(sshd: SshServer, run_dir: Path, tmp_path: Path) -> None:
    cfg = profile(tmp_path, sshd)
    before = accepted(sshd)
    procs = [start(run_dir, "run", target("worker_pid"), "-c", cfg) for _ in range(3)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        assert int(out)
    assert accepted(sshd) - before == 1, "the start-up lock lets one client start the holder; the others use it"
    assert len(sockets(run_dir)) == 1


# -- the spare worker -----------------------------------------------------------------


def test_the_spare_worker_serves_the_next_call_with_the_same_python(sshd: SshServer, run_dir: Path, tmp_path: Path) -> None:
    cfg = profile(tmp_path, sshd)
    marker = str(tmp_path / "bin")
    before = accepted(sshd)
    first = sky(run_dir, "run", target("worker_pid"), "-c", cfg)
    assert first.returncode == 0, first.stderr
    used = int(first.stdout)
    # once the call has ended, two spares are kept (SPARES): a call right after the next still finds one
    spare = wait_for(lambda: len(workers(marker) - {used}) == 2 and workers(marker) - {used}, timeout=60,
                     what="two spare workers after the call")
    second = sky(run_dir, "run", target("worker_pid"), "-c", cfg)
    assert second.returncode == 0, second.stderr
    assert int(second.stdout) in spare, "the identical call ran in a worker started ahead of it"

    # another workdir (empty) and env: the spare learns them on its stdin; the bundle is sent and written there
    spare = wait_for(lambda: workers(marker) - {int(second.stdout)}, timeout=60, what="the next spare")
    other = profile(tmp_path, sshd, extra="env: {REUSE_TEST: changed}", name="other.yaml", workdir="wd2")
    third = sky(run_dir, "run", target("env_and_pid"), "-a", "name=REUSE_TEST", "-c", other)
    assert third.returncode == 0, third.stderr
    value, pid = json.loads(third.stdout)
    assert value == "changed" and pid in spare
    assert [p.name for p in (tmp_path / "wd2").glob("bundle-*.zip")], "the empty workdir got the bundle"

    # another python: a new channel, not the spare (started for /…/bin/python3)
    spare = wait_for(lambda: workers(marker) - {pid}, timeout=60, what="the next spare")
    fourth = sky(run_dir, "run", target("worker_pid"), "-c", profile(tmp_path, sshd, name="py2.yaml", python="bin2"))
    assert fourth.returncode == 0, fourth.stderr
    assert int(fourth.stdout) not in spare
    assert accepted(sshd) - before == 1


def test_holder_exits_after_reuse_idle_and_its_spare_with_it(sshd: SshServer, run_dir: Path, tmp_path: Path) -> None:
    cfg = profile(tmp_path, sshd, extra="reuse_idle: 1")
    marker = str(tmp_path / "wd")
    result = sky(run_dir, "run", target("worker_pid"), "-c", cfg)
    assert result.returncode == 0, result.stderr
    [log] = (run_dir / "skyctl").glob("*.log")
    wait_for(lambda: "exiting: idle" in log.read_text(), timeout=60, what="the holder to exit when idle")
    wait_for(lambda: not sockets(run_dir) and not list(run_dir.glob("skyctl/*.pid")), timeout=30,
             what="the holder's socket and pid file to go")
    wait_for(lambda: not workers(marker), timeout=30, what="no worker (nor spare) left on the remote")


# -- ends: client killed, holder killed -----------------------------------------------------


def test_client_killed_mid_call_ends_the_remote_worker(sshd: SshServer, run_dir: Path, tmp_path: Path) -> None:
    cfg = profile(tmp_path, sshd)
    proc = start(run_dir, "run", target("pid_then_wait"), "-a", f"release={tmp_path / 'never'}", "-c", cfg)
    try:
        pid = int(read_line(proc))
        assert pid_alive(pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    wait_for(lambda: not pid_alive(pid), timeout=30, what="the remote worker of the killed client to exit")
    # the kept connection still serves the next call
    before = accepted(sshd)
    again = sky(run_dir, "run", target("worker_pid"), "-c", cfg)
    assert again.returncode == 0, again.stderr
    assert accepted(sshd) == before


def test_holder_killed_mid_call_is_a_lost_connection(sshd: SshServer, run_dir: Path, tmp_path: Path) -> None:
    cfg = profile(tmp_path, sshd)
    proc = start(run_dir, "run", target("pid_then_wait"), "-a", f"release={tmp_path / 'never'}", "-c", cfg)
    try:
        pid = int(read_line(proc))
        [pid_file] = (run_dir / "skyctl").glob("*.pid")
        holder = holder_pid(pid_file)
        assert holder
        os.kill(holder, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 6, err.decode()
    assert "lost" in err.decode() and "Traceback" not in err.decode()
    wait_for(lambda: not pid_alive(pid), timeout=30, what="the remote worker to exit with its connection")
    # its socket is left behind, dead: the next call starts a new holder
    before = accepted(sshd)
    again = sky(run_dir, "run", target("worker_pid"), "-c", cfg)
    assert again.returncode == 0, again.stderr
    assert accepted(sshd) == before + 1 and "warning" not in again.stderr


# -- failures look the same as without reuse -------------------------------------------------


@pytest.mark.parametrize("failure", ["refused", "unauthorized key", "no python"])
def test_failures_through_the_holder_match_direct_ones(sshd: SshServer, run_dir: Path, tmp_path: Path, failure: str) -> None:
    text = ssh_host_yaml(sshd, extra=f"workdir: {tmp_path / 'wd'}")
    if failure == "refused":
        text = text.replace(f"port: {sshd.port}\n", f"port: {free_port()}\n")
    elif failure == "unauthorized key":
        text = text.replace(str(sshd.identity_file), str(sshd.unauthorized_identity_file))
    else:
        text = text.replace("python: /usr/bin/python3", "python: /nonexistent/python3")
    cfg = config(tmp_path / "skyward.yaml", text)
    kept = sky(run_dir, "run", target("worker_pid"), "-c", cfg)
    direct = sky(run_dir, "run", target("worker_pid"), "-c", cfg, "--no-reuse")
    expected = 5 if failure == "no python" else 4
    assert (kept.returncode, direct.returncode) == (expected, expected), kept.stderr + direct.stderr
    assert kept.stderr == direct.stderr
    assert kept.stdout == "" and "Traceback" not in kept.stderr
    if expected == 4:
        assert sockets(run_dir) == [], "a holder that could not connect does not stay"


# -- the socket directory must be ours alone -------------------------------------------------


@pytest.mark.parametrize("unsafe", ["mode 0755", "symlink"])
def test_an_unsafe_socket_directory_is_not_used(sshd: SshServer, run_dir: Path, tmp_path: Path, unsafe: str) -> None:
    directory = run_dir / "skyctl"
    elsewhere = tmp_path / "elsewhere"
    if unsafe == "symlink":
        elsewhere.mkdir(mode=0o700)
        directory.symlink_to(elsewhere)
    else:
        directory.mkdir()
        directory.chmod(0o755)
    cfg = profile(tmp_path, sshd)
    before = accepted(sshd)
    for _ in range(2):
        result = sky(run_dir, "run", target("worker_pid"), "-c", cfg)
        assert result.returncode == 0, result.stderr
        assert int(result.stdout)
        assert "warning: not keeping the SSH connection" in result.stderr
        assert ("0700" if unsafe == "mode 0755" else "not a directory") in result.stderr
    assert accepted(sshd) - before == 2, "each call connected directly"
    assert not list(run_dir.rglob("*.sock"))
    if elsewhere.exists():
        assert not list(elsewhere.iterdir()), "nothing was created through the symlink"
    if unsafe == "mode 0755":
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755, "skyctl does not silently change a directory it refused"


# -- the server's MaxSessions ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sshd_two_sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """An sshd that allows only two sessions per connection."""
    from sshd import SshdUnavailable, start_sshd

    try:
        server = start_sshd(tmp_path_factory.mktemp("sshd-max2"), extra_config=["MaxSessions 2"])
    except SshdUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"sshd is required when CI is set: {exc}", pytrace=False)
        pytest.skip(f"no sshd: {exc}")
    yield server
    server.stop(remove_files=False)


def test_calls_beyond_max_sessions_connect_on_their_own(sshd_two_sessions: SshServer, run_dir: Path, tmp_path: Path) -> None:
    cfg = profile(tmp_path, sshd_two_sessions)
    release = tmp_path / "release"
    procs = []
    try:
        for _ in range(3):  # one after the other: each holds its session until released
            procs.append(start(run_dir, "run", target("pid_then_wait"), "-a", f"release={release}", "-c", cfg))
            assert int(read_line(procs[-1])) > 0
        release.write_text("")
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err.decode()
            assert out.decode().split()[-1:] == ["-1"]
            assert b"warning" not in err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    assert sshd_two_sessions.log_text().count("Accepted publickey for") == 2, "the third call had its own connection"


def test_relative_key_paths_are_read_from_the_callers_directory(sshd: SshServer, run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    shutil.copy(sshd.identity_file, tmp_path / "keys" / "id")
    (tmp_path / "keys" / "id").chmod(0o600)
    cfg = profile(tmp_path, sshd)
    Path(cfg).write_text(Path(cfg).read_text().replace(str(sshd.identity_file), "keys/id"))
    assert "identity_file: keys/id" in Path(cfg).read_text()
    before = accepted(sshd)
    for _ in range(2):
        result = sky(run_dir, "run", f"{REPO / TARGETS}:worker_pid", "-c", cfg, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    assert accepted(sshd) - before == 1
    # the same profile from another directory names another key file: not the kept connection
    elsewhere = sky(run_dir, "run", f"{REPO / TARGETS}:worker_pid", "-c", cfg, cwd=REPO)
    assert elsewhere.returncode == 4 and "keys/id does not exist" in elsewhere.stderr, elsewhere.stderr


def test_exit_status_wakes_when_the_reader_lets_go_of_the_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader blocked on the holder's socket holds it; ``exit_status`` then sleeps until that reader
    lets go (it is woken, not left to its safety-net timeout, here made longer than the test's)."""
    import socket
    import threading

    from skyctl.transports import reuse

    monkeypatch.setattr(reuse.ReusePipes, "WAIT_SLICE", 120.0)
    mine, holder = socket.socketpair()
    pipes = reuse.ReusePipes(mine, "box")
    woken: list[bool] = []
    real_wait = pipes._turn.wait
    monkeypatch.setattr(pipes._turn, "wait", lambda timeout=None: woken.append(real_wait(timeout)) or woken[-1])
    got: dict[str, object] = {}
    reader = threading.Thread(target=lambda: got.setdefault("read", pipes.read(3)), daemon=True)
    reader.start()
    wait_for(lambda: pipes._rlock.locked(), timeout=30, what="the reader to hold the socket")
    waiter = threading.Thread(target=lambda: got.setdefault("status", pipes.exit_status(timeout=120)), daemon=True)
    waiter.start()
    wait_for(lambda: pipes._waiting == 1, timeout=30, what="exit_status to wait for the socket")
    reuse.send_frame(holder, reuse.Kind.STDOUT, b"abc")
    reuse.send_frame(holder, reuse.Kind.STDOUT, b"")
    reuse.send_frame(holder, reuse.Kind.EXIT, json.dumps({"status": 3}).encode())
    reader.join(30)
    waiter.join(30)
    assert got == {"read": b"abc", "status": 3}
    assert woken and all(woken), woken  # every sleep ended by a wake-up, none by its timeout
    mine.close()
    holder.close()
