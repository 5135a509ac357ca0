"""Liveness over SSH against the real sshd: a stalled peer ends a call, it never hangs one (issue 11, part 5).

The peer is stalled for real: the sshd processes serving the connection get
SIGSTOP (``tests/stall.py``), so the TCP connection stays open and nothing
answers, as with a hung host. Keepalives that expect a reply (``keepalive``
× ``keepalive_count``, like OpenSSH's ServerAliveInterval × ServerAliveCountMax)
must give the connection up: exit 6 with a message that says so, directly and
through a kept connection. A kept connection whose peer stalled must not be
handed to a new call: the holder checks it with a round trip first, and the
call connects directly.

Every wait has a deadline that only guards against a hang; the tests wait on
events (a value printed, a process gone), never on sleeps.
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from helpers import holder_pid, pid_alive, skyctl_argv, wait_for
from ssh_e2e import REPO, assert_failure, box, clean_env
from stall import stalled

from skyctl.config import HostProfile, parse_config
from skyctl.errors import ConfigError, ConnectionLost
from skyctl.transports.ssh import SshTransport

if TYPE_CHECKING:
    from sshd import SshServer

pytestmark = pytest.mark.timeout(240)

TARGETS = "tests/targets/liveness.py"
#: a hang guard only: the calls below end in a few seconds
DEADLINE = 60.0


def target(name: str) -> str:
    return f"{TARGETS}:{name}"


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture
def server(request: pytest.FixtureRequest) -> SshServer:
    """The suite's sshd; these tests fail, never skip, when it cannot run."""
    try:
        return request.getfixturevalue("sshd")
    except pytest.skip.Exception as exc:
        pytest.fail(f"the liveness tests need a real sshd: {exc}", pytrace=False)




@pytest.fixture(autouse=True)
def _no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # the keys offered are exactly the profile's


# -- helpers --------------------------------------------------------------------------




def the_holder(run_dir: Path) -> int:
    [pid_file] = (run_dir / "skyctl").glob("*.pid")
    pid = holder_pid(pid_file)
    assert pid, "a holder keeps the connection"
    return pid


def start(run_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    env = clean_env({"XDG_RUNTIME_DIR": str(run_dir)})
    env.pop("SSH_AUTH_SOCK", None)
    return subprocess.Popen(skyctl_argv(*args), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def read_line(proc: subprocess.Popen[bytes], timeout: float = DEADLINE) -> bytes:
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


def finish(proc: subprocess.Popen[bytes], timeout: float = DEADLINE) -> subprocess.CompletedProcess[str]:
    """Wait for ``proc`` (failing, and killing it, after ``timeout``); its rest of stdout and its stderr as text."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=30)
        raise AssertionError(f"skyctl still ran {timeout}s after its peer stalled: it hangs\nstderr:\n{err.decode()}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode())


def accepted(server: SshServer) -> int:
    """How many logins the sshd has accepted so far."""
    return server.log_text().count("Accepted publickey for")


def profile(tmp_path: Path, server: SshServer, extra: str) -> str:
    return box(tmp_path / "skyward.yaml", server, extra=f"workdir: {tmp_path / 'wd'}\n{extra}")


# -- the profile keys ---------------------------------------------------------------------


def parse_host(body: str, environ: dict[str, str] | None = None) -> HostProfile:
    text = "hosts:\n  box:\n    host: box.example.com\n" + "".join(f"    {line}\n" for line in body.splitlines())
    return parse_config(text, Path("skyward.yaml"), {"HOME": "/home/tester", **(environ or {})}).hosts["box"]


def test_keepalive_count_defaults_to_openssh_s_three() -> None:
    profile = parse_host("")
    assert (profile.keepalive, profile.keepalive_count) == (15.0, 3)


@pytest.mark.parametrize("text, expected", [("5", 5), ("1", 1), ("'12'", 12), ("${N}", 4)])
def test_keepalive_count_takes_a_whole_number(text: str, expected: int) -> None:
    assert parse_host(f"keepalive_count: {text}", {"N": "4"}).keepalive_count == expected


@pytest.mark.parametrize("text, shown", [("0", "0"), ("-1", "-1"), ("2.5", "2.5"), ("many", "'many'"), ("true", "true"), ("[3]", "a list")])
def test_keepalive_count_must_be_at_least_one(text: str, shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_host(f"keepalive_count: {text}")
    assert info.value.message == f"skyward.yaml: host 'box': 'keepalive_count' must be a whole number of at least 1, got {shown}"
    assert info.value.exit_status == 3 and "cannot be turned off" in (info.value.hint or "")


def test_keepalive_count_may_be_a_default_and_is_part_of_the_connection() -> None:
    from skyctl.transports.reuse import CONNECTION_FIELDS

    text = "defaults:\n  keepalive_count: 7\nhosts:\n  box:\n    host: box.example.com\n"
    assert parse_config(text, Path("skyward.yaml"), {"HOME": "/h"}).hosts["box"].keepalive_count == 7
    assert "keepalive_count" in CONNECTION_FIELDS, "a kept connection is keyed (and rebuilt in the holder) with it"


# -- the transport itself -------------------------------------------------------------


def transport_for(server: SshServer, **changes: object) -> SshTransport:
    fields: dict[str, object] = dict(
        name="box", type="ssh", host=server.host, port=server.port, user=server.user,
        identity_file=(str(server.identity_file),), known_hosts=str(server.known_hosts),
    )  # fmt: skip
    fields.update(changes)
    return SshTransport(HostProfile(**fields), lambda name: None, ssh_config_path=None, system_known_hosts=None)  # type: ignore[arg-type,return-value]


def test_a_round_trip_is_answered_by_a_live_peer_and_not_by_a_stalled_one(server: SshServer) -> None:
    with transport_for(server, keepalive=3600) as transport:
        pipes = transport.start(["sh", "-c", "echo up; exec cat"])
        assert pipes.read(3) == b"up\n"
        assert transport.round_trip(DEADLINE), "OpenSSH answers keepalive@openssh.com"
        with stalled(server, os.getpid()):
            started = time.monotonic()
            assert not transport.round_trip(1.0), "a stalled peer answers nothing"
            assert time.monotonic() - started < DEADLINE
        assert transport.round_trip(DEADLINE), "answered again once the peer runs"
        pipes.close()


def test_unanswered_keepalives_give_the_connection_up_and_say_why(server: SshServer) -> None:
    with transport_for(server, keepalive=0.5, keepalive_count=2) as transport:
        pipes = transport.start(["sh", "-c", "echo up; exec cat"])
        assert pipes.read(3) == b"up\n"
        with stalled(server, os.getpid()):
            started = time.monotonic()
            assert pipes.read(1) == b"", "a blocked read ends when the connection is given up"
            assert time.monotonic() - started < DEADLINE
            lost = pipes.lost()
            assert isinstance(lost, ConnectionLost) and lost.exit_status == 6
            assert "2 keepalives in a row went unanswered" in lost.message and transport.label in lost.message
            assert "keepalive_count" in (lost.hint or "")
            assert not transport.is_connected
        pipes.close()
        # the next command gets a new connection
        assert transport.start(["true"]).exit_status(DEADLINE) == 0
        assert transport.lost_error() is None


def test_a_quiet_live_connection_is_kept(server: SshServer) -> None:
    """Keepalives are answered: a command that says nothing for several intervals is not cut off."""
    with transport_for(server, keepalive=0.2, keepalive_count=1) as transport:
        pipes = transport.start(["sh", "-c", "read line; echo \"$line\""])
        liveness = transport._liveness
        assert liveness is not None
        # several keepalive intervals pass (each one answered) before the command says anything
        wait_for(lambda: liveness._answered >= 5, timeout=DEADLINE, what="five answered keepalives")
        pipes.write(b"still here\n")
        assert pipes.read(11) == b"still here\n"
        assert pipes.lost() is None and transport.is_connected


# -- end to end: a call whose peer stalls ends with exit 6 ----------------------------------


@pytest.mark.parametrize("via", ["direct", "kept"])
def test_a_stalled_peer_ends_the_call_with_exit_6(server: SshServer, run_dir: Path, tmp_path: Path, via: str) -> None:
    cfg = profile(tmp_path, server, "keepalive: 1\nkeepalive_count: 2")
    release = tmp_path / "release"
    flags = ["--no-reuse"] if via == "direct" else []
    proc = start(run_dir, "run", target("pid_then_wait"), "-a", f"release={release}", "-c", cfg, *flags)
    worker = 0
    try:
        worker = int(read_line(proc))
        client = proc.pid if via == "direct" else the_holder(run_dir)
        with stalled(server, client):
            result = finish(proc)
    finally:
        release.write_text("")
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    line = assert_failure(result, 6, "lost the connection", f"127.0.0.1:{server.port}",
                          "2 keepalives in a row went unanswered", values_before=True)
    assert worker > 0 and result.stdout == "", "the value printed before the stall (read above) is all"
    assert "keepalive" in result.stderr.split("hint: ", 1)[1], line
    # once the sshd runs again it sees the connection gone, and the worker ends with it
    wait_for(lambda: not pid_alive(worker), timeout=DEADLINE, what="the remote worker to exit")


# -- end to end: a kept connection is checked before a call may use it ------------------------


def test_a_stalled_kept_connection_is_not_handed_to_a_new_call(server: SshServer, run_dir: Path, tmp_path: Path) -> None:
    # keepalives far apart: only the round trip before the call can notice the stall in time
    cfg = profile(tmp_path, server, "keepalive: 3600")
    first = start(run_dir, "run", target("worker_pid"), "-c", cfg)
    assert finish(first).returncode == 0
    holder = the_holder(run_dir)
    before = accepted(server)
    with stalled(server, holder):
        started = time.monotonic()
        second = finish(start(run_dir, "run", target("worker_pid"), "-c", cfg))
        elapsed = time.monotonic() - started
        assert second.returncode == 0, second.stderr
        assert int(second.stdout) > 0
        assert elapsed < DEADLINE
        assert "did not answer a round trip" in second.stderr and "connecting directly" in second.stderr
        assert accepted(server) == before + 1, "the call made a connection of its own"
        wait_for(lambda: not pid_alive(holder), timeout=DEADLINE, what="the stale holder to go away")
    # the next call starts a new holder and keeps its connection again
    third = finish(start(run_dir, "run", target("worker_pid"), "-c", cfg))
    assert third.returncode == 0 and "warning" not in third.stderr, third.stderr
    assert the_holder(run_dir) != holder
