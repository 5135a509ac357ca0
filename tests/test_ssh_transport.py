"""SshTransport against a real sshd on 127.0.0.1 (fixtures in conftest.py, server in sshd.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko
import pytest

from skyctl.config import HostProfile
from skyctl.errors import ConnectError, ExitStatus
from skyctl.transports.ssh import STDERR_TAIL, SshTransport, fingerprint, resolve_endpoint

if TYPE_CHECKING:
    from sshd import SshServer

pytestmark = pytest.mark.timeout(60)

PY = "python3"


def profile_for(server: SshServer, **changes: object) -> HostProfile:
    """A profile that reaches ``server`` as its user, with strict host keys."""
    fields: dict[str, object] = dict(
        name="box",
        type="ssh",
        host=server.host,
        port=server.port,
        user=server.user,
        identity_file=(str(server.identity_file),),
        known_hosts=str(server.known_hosts),
        connect_timeout=10.0,
    )
    fields.update(changes)
    return HostProfile(**fields)  # type: ignore[arg-type]


def transport_for(profile: HostProfile, profiles: dict[str, HostProfile] | None = None, **kwargs: object) -> SshTransport:
    kwargs.setdefault("ssh_config_path", None)
    kwargs.setdefault("system_known_hosts", None)
    return SshTransport(profile, lambda name: (profiles or {})[name], **kwargs)  # type: ignore[arg-type]


def connect_error(transport: SshTransport, budget: float) -> ConnectError:
    """The ConnectError ``start`` raises, checking it came within ``budget`` seconds."""
    started = time.monotonic()
    with pytest.raises(ConnectError) as info, transport:
        transport.start(["true"])
    elapsed = time.monotonic() - started
    assert elapsed < budget, f"took {elapsed:.1f}s"
    error = info.value
    assert error.exit_status == ExitStatus.CONNECT
    assert "\n" not in error.message and "\n" not in (error.hint or "")
    return error


@pytest.fixture(autouse=True)
def _no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    # keys offered must be exactly the ones a test configures
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- pipes ---------------------------------------------------------------------


class TestStart:
    def test_round_trips_bytes_through_a_python_process(self, sshd: SshServer) -> None:
        code = "import sys\nfor line in sys.stdin.buffer: sys.stdout.buffer.write(line.upper()); sys.stdout.flush()"
        with transport_for(profile_for(sshd)) as transport:
            pipes = transport.start([PY, "-c", code])
            for word in (b"alpha\n", b"\x00\xffbinary\n", b"last\n"):
                pipes.write(word)
                assert pipes.read(len(word)) == word.upper()
            pipes.close_stdin()
            assert pipes.read(1) == b""
            assert pipes.exit_status(timeout=10) == 0
            pipes.close()

    def test_argv_is_quoted_for_the_remote_shell(self, sshd: SshServer) -> None:
        args = ["a b", "$HOME", "'q'", "; echo pwned", ""]
        with transport_for(profile_for(sshd)) as transport:
            pipes = transport.start([PY, "-c", "import sys, json; print(json.dumps(sys.argv[1:]))", *args])
            out = pipes.read(1000)
        import json

        assert json.loads(out) == args

    def test_read_returns_exactly_n_bytes_and_fewer_only_at_eof(self, sshd: SshServer) -> None:
        code = "import sys, time\nfor c in b'abcdefghij':\n sys.stdout.buffer.write(bytes([c])); sys.stdout.flush(); time.sleep(0.01)"
        with transport_for(profile_for(sshd)) as transport:
            pipes = transport.start([PY, "-c", code])
            assert pipes.read(4) == b"abcd"
            assert pipes.read(4) == b"efgh"
            assert pipes.read(4) == b"ij"
            assert pipes.read(4) == b""

    def test_close_stdin_gives_the_remote_eof(self, sshd: SshServer) -> None:
        with transport_for(profile_for(sshd)) as transport:
            pipes = transport.start(["cat"])
            pipes.write(b"hello")
            assert pipes.read(5) == b"hello"
            assert pipes.exit_status() is None  # still waiting for input
            pipes.close_stdin()
            pipes.close_stdin()  # twice is fine
            assert pipes.read(10) == b""
            assert pipes.exit_status(timeout=10) == 0

    def test_exit_status_and_stderr_tail(self, sshd: SshServer) -> None:
        code = "import sys; sys.stderr.write('E' * 100000 + 'the end'); sys.exit(3)"
        with transport_for(profile_for(sshd)) as transport:
            pipes = transport.start([PY, "-c", code])
            assert pipes.read(1) == b""
            assert pipes.exit_status(timeout=10) == 3
            tail = pipes.stderr_text()
            assert tail.endswith("the end") and len(tail) <= STDERR_TAIL

    def test_a_chatty_stderr_never_blocks_stdout(self, sshd: SshServer) -> None:
        # 20 MiB on stderr, far beyond the channel window, before the stdout answer
        code = "import sys\nfor _ in range(320): sys.stderr.write('x' * 65536)\nsys.stderr.flush(); print('ok', flush=True)"
        with transport_for(profile_for(sshd)) as transport:
            pipes = transport.start([PY, "-c", code])
            assert pipes.read(3) == b"ok\n"
            assert pipes.exit_status(timeout=20) == 0

    def test_several_mib_round_trip_at_a_sane_rate(self, sshd: SshServer) -> None:
        size = 16 * 1024 * 1024
        data = os.urandom(size)
        with transport_for(profile_for(sshd)) as transport:
            pipes = transport.start(["cat"])
            started = time.perf_counter()

            def feed() -> None:
                for i in range(0, size, 1 << 20):
                    pipes.write(data[i : i + (1 << 20)])
                pipes.close_stdin()

            writer = threading.Thread(target=feed)
            writer.start()
            received = hashlib.sha256()
            total = 0
            while chunk := pipes.read(256 * 1024):
                received.update(chunk)
                total += len(chunk)
            writer.join()
            rate = size / (time.perf_counter() - started) / 1e6
        assert total == size and received.digest() == hashlib.sha256(data).digest()
        print(f"cat round trip: {rate:.0f} MB/s")
        # invoke's in_stream path manages ~90 B/s (invoke #774); a raw channel does tens of MB/s
        assert rate > 5, f"{rate:.1f} MB/s"

    def test_write_after_the_command_is_gone_raises_oserror(self, sshd: SshServer) -> None:
        with transport_for(profile_for(sshd)) as transport:
            pipes = transport.start(["true"])
            assert pipes.exit_status(timeout=10) == 0
            assert pipes.read(1) == b""
            deadline = time.monotonic() + 10
            with pytest.raises(OSError):
                while time.monotonic() < deadline:
                    pipes.write(b"x" * 65536)
                    time.sleep(0.01)

    def test_close_ends_the_remote_command(self, sshd: SshServer, tmp_path: Path) -> None:
        with transport_for(profile_for(sshd)) as transport:
            pipes = transport.start([PY, "-c", "import os, sys; print(f'{os.getpid():10d}', flush=True); sys.stdin.read()"])
            pid = int(pipes.read(11))
            pipes.close()
            pipes.close()
            check = transport.start([PY, "-c", f"import os, time\nfor _ in range(100):\n try: os.kill({pid}, 0)\n except ProcessLookupError: print('gone'); break\n time.sleep(0.05)"])
            assert check.read(5) == b"gone\n"

    def test_close_kills_a_command_that_ignores_eof(self, sshd_user: SshServer) -> None:
        code = "import os, time; print(f'{os.getpid():10d}', flush=True); time.sleep(600)"
        with transport_for(profile_for(sshd_user)) as transport:
            pipes = transport.start([PY, "-c", code])
            pid = int(pipes.read(11))
            started = time.monotonic()
            pipes.close()
            assert time.monotonic() - started < 6
            alive = f"import os\ntry: os.kill({pid}, 0); print('alive')\nexcept ProcessLookupError: print('gone!')"
            assert transport.start([PY, "-c", alive]).read(6) == b"gone!\n"

    def test_non_root_user(self, sshd_user: SshServer) -> None:
        code = "import os, pwd, pathlib; p = pathlib.Path.home() / '.skyctl-probe'; p.write_text('x'); p.unlink(); print(os.getuid(), pwd.getpwuid(os.getuid()).pw_name)"
        with transport_for(profile_for(sshd_user)) as transport:
            pipes = transport.start([PY, "-c", code])
            uid, name = pipes.read(100).split()
            assert pipes.exit_status(timeout=10) == 0, pipes.stderr_text()
        assert name.decode() == sshd_user.user
        if os.geteuid() == 0:
            assert int(uid) != 0


class TestConnection:
    def test_constructing_does_no_network_io(self, closed_port: int) -> None:
        transport = SshTransport(
            HostProfile(name="x", type="ssh", host="nonexistent.invalid", port=closed_port),
            lambda name: None,  # type: ignore[arg-type,return-value]
        )
        assert not transport.is_connected
        assert transport.label.endswith(f"@nonexistent.invalid:{closed_port}")
        transport.close()
        transport.close()

    def test_one_connection_serves_many_commands_and_close_is_idempotent(self, sshd: SshServer) -> None:
        transport = transport_for(profile_for(sshd, keepalive=7))
        assert transport.label == f"{sshd.user}@127.0.0.1:{sshd.port}"
        with transport:
            first = transport.start(["true"])
            paramiko_transport = transport._conn.transport  # type: ignore[union-attr]
            second = transport.start(["true"])
            assert transport._conn.transport is paramiko_transport  # type: ignore[union-attr]
            assert first.exit_status(10) == second.exit_status(10) == 0
            assert transport._liveness is not None and transport._liveness.interval == 7  # keepalives that want a reply
            assert paramiko_transport.packetizer._Packetizer__keepalive_interval == 0  # type: ignore[attr-defined]  # not paramiko's
        assert not transport.is_connected
        transport.close()
        # usable again after close: it reconnects
        with transport:
            assert transport.start(["true"]).exit_status(10) == 0

    def test_the_connection_negotiates_aes_gcm_with_openssh(self, sshd: SshServer) -> None:
        with transport_for(profile_for(sshd)) as transport:
            assert transport.start(["true"]).exit_status(10) == 0
            paramiko_transport = transport._conn.transport  # type: ignore[union-attr]
            assert paramiko_transport.local_cipher == paramiko_transport.remote_cipher == "aes128-gcm@openssh.com"

    def test_reconnects_when_a_kept_connection_dropped(self, sshd: SshServer) -> None:
        with transport_for(profile_for(sshd)) as transport:
            assert transport.start(["true"]).exit_status(10) == 0
            transport._conn.transport.close()  # type: ignore[union-attr]  # as if the network dropped
            assert transport.start(["true"]).exit_status(10) == 0

    def test_ssh_config_applies_to_an_alias(self, sshd_user: SshServer, tmp_path: Path) -> None:
        config = tmp_path / "ssh_config"
        config.write_text(
            textwrap.dedent(f"""\
                Host myalias
                    HostName {sshd_user.host}
                    Port {sshd_user.port}
                    User {sshd_user.user}
                    IdentityFile /nonexistent/id_skipped_like_ssh_does
                    IdentityFile {sshd_user.identity_file}
            """)
        )
        profile = profile_for(sshd_user, host="myalias", port=None, user=None, identity_file=())
        with transport_for(profile, ssh_config_path=config) as transport:
            assert transport.label == f"{sshd_user.user}@127.0.0.1:{sshd_user.port}"
            assert transport.start(["id", "-un"]).read(100).decode().strip() == sshd_user.user

    def test_the_profile_wins_over_ssh_config(self, sshd: SshServer, tmp_path: Path) -> None:
        config = tmp_path / "ssh_config"
        config.write_text(f"Host myalias\n  HostName {sshd.host}\n  Port 1\n  User nobody\n  IdentityFile /nonexistent\n")
        profile = profile_for(sshd, host="myalias")
        endpoint = resolve_endpoint(profile, paramiko.SSHConfig.from_path(str(config)))
        assert (endpoint.hostname, endpoint.port, endpoint.user) == ("127.0.0.1", sshd.port, sshd.user)
        assert endpoint.identity_files == (str(sshd.identity_file),)
        with transport_for(profile, ssh_config_path=config) as transport:
            assert transport.start(["true"]).exit_status(10) == 0

    def test_a_broken_ssh_config_is_a_connect_error_at_start(self, sshd: SshServer, tmp_path: Path) -> None:
        config = tmp_path / "ssh_config"
        config.write_text("Host x\n  =oops\n")
        transport = transport_for(profile_for(sshd), ssh_config_path=config)  # constructing still works
        error = connect_error(transport, 5)
        assert f"cannot read ssh config {config}" in error.message

    def test_a_missing_ssh_config_is_fine(self, sshd: SshServer, tmp_path: Path) -> None:
        with transport_for(profile_for(sshd), ssh_config_path=tmp_path / "nope") as transport:
            assert transport.start(["true"]).exit_status(10) == 0


# -- host keys -----------------------------------------------------------------


class TestHostKeys:
    def test_unknown_key_is_refused_with_its_fingerprint_and_how_to_trust_it(self, sshd: SshServer, tmp_path: Path) -> None:
        known = tmp_path / "known_hosts"
        known.write_text("")
        error = connect_error(transport_for(profile_for(sshd, known_hosts=str(known))), 10)
        assert "unknown" in error.message
        assert sshd.host_key_fingerprint in error.message
        assert f"ssh-keyscan -p {sshd.port} -t ed25519 127.0.0.1 >> {known}" in (error.hint or "")
        assert "accept-new" in (error.hint or "")
        assert known.read_text() == ""

    def test_a_missing_known_hosts_file_means_unknown(self, sshd: SshServer, tmp_path: Path) -> None:
        error = connect_error(transport_for(profile_for(sshd, known_hosts=str(tmp_path / "none"))), 10)
        assert "unknown" in error.message and sshd.host_key_fingerprint in error.message

    def test_a_changed_key_is_refused_loudly(self, sshd: SshServer, tmp_path: Path) -> None:
        other = Path(f"{sshd.unauthorized_identity_file}.pub").read_text().split()[:2]
        known = tmp_path / "known_hosts"
        known.write_text(f"# old entry\n[127.0.0.1]:{sshd.port} {' '.join(other)}\n")
        for policy in ("strict", "accept-new"):  # accept-new never overrides a changed key
            error = connect_error(transport_for(profile_for(sshd, known_hosts=str(known), host_key_policy=policy)), 10)
            assert error.message.startswith("WARNING: the host key for")
            assert "CHANGED" in error.message and "man-in-the-middle" in error.message
            assert sshd.host_key_fingerprint in error.message and f"{known} line 2" in error.message
            assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}' -f {known}" in (error.hint or "")
        assert known.read_text().count("\n") == 2

    def test_accept_new_trusts_and_records_an_unknown_key(self, sshd: SshServer, tmp_path: Path) -> None:
        known = tmp_path / "new" / "known_hosts"  # neither the file nor its directory exists yet
        with transport_for(profile_for(sshd, known_hosts=str(known), host_key_policy="accept-new")) as transport:
            assert transport.start(["true"]).exit_status(10) == 0
        assert known.read_text() == f"[127.0.0.1]:{sshd.port} {sshd.host_public_key}\n"
        assert (known.stat().st_mode & 0o777) == 0o600
        with transport_for(profile_for(sshd, known_hosts=str(known))) as transport:  # now strict is happy
            assert transport.start(["true"]).exit_status(10) == 0

    def test_accept_new_appends_without_clobbering(self, sshd: SshServer, tmp_path: Path) -> None:
        known = tmp_path / "known_hosts"
        known.write_text("otherhost ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")  # no final newline
        with transport_for(profile_for(sshd, known_hosts=str(known), host_key_policy="accept-new")) as transport:
            assert transport.start(["true"]).exit_status(10) == 0
        lines = known.read_text().splitlines()
        assert lines[0].startswith("otherhost ") and lines[1] == f"[127.0.0.1]:{sshd.port} {sshd.host_public_key}"

    def test_hashed_known_hosts_entries_are_understood(self, sshd: SshServer, tmp_path: Path) -> None:
        known = tmp_path / "known_hosts"
        known.write_text(sshd.known_hosts.read_text())
        subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True)
        assert known.read_text().startswith("|1|")
        with transport_for(profile_for(sshd, known_hosts=str(known))) as transport:
            assert transport.start(["true"]).exit_status(10) == 0

    def test_fingerprint_matches_ssh_keygen(self, sshd: SshServer) -> None:
        kind, b64 = sshd.host_public_key.split()
        import base64

        assert fingerprint(paramiko.PKey.from_type_string(kind, base64.b64decode(b64))) == sshd.host_key_fingerprint


# -- other connect errors --------------------------------------------------------


class TestConnectErrors:
    def test_connection_refused(self, sshd: SshServer, closed_port: int) -> None:
        error = connect_error(transport_for(profile_for(sshd, port=closed_port)), 5)
        assert f"connection refused on port {closed_port}" in error.message
        assert "sshd running" in (error.hint or "")

    def test_name_not_resolved(self, sshd: SshServer) -> None:
        error = connect_error(transport_for(profile_for(sshd, host="nonexistent.invalid")), 15)
        assert "'nonexistent.invalid' could not be resolved" in error.message

    def test_timeout_when_the_server_never_sends_a_banner(self, sshd: SshServer) -> None:
        with socket.socket() as silent:  # accepts TCP (kernel backlog), never speaks
            silent.bind(("127.0.0.1", 0))
            silent.listen(8)
            port = silent.getsockname()[1]
            error = connect_error(transport_for(profile_for(sshd, port=port, connect_timeout=1.0)), 10)
        assert "timed out after 1s waiting for the SSH banner" in error.message
        assert "connect_timeout" in (error.hint or "")

    def test_authentication_failed_names_the_user_and_the_keys(self, sshd: SshServer) -> None:
        key = str(sshd.unauthorized_identity_file)
        error = connect_error(transport_for(profile_for(sshd, identity_file=(key,))), 10)
        assert f"authentication failed for user '{sshd.user}'" in error.message
        assert key in error.message
        assert "identity_file" in (error.hint or "") and "ssh-agent" in (error.hint or "")

    def test_authentication_failed_for_the_non_root_user_with_roots_key(self, sshd: SshServer, sshd_user: SshServer) -> None:
        error = connect_error(transport_for(profile_for(sshd_user, identity_file=(str(sshd.identity_file),))), 10)
        assert f"authentication failed for user '{sshd_user.user}'" in error.message

    def test_a_missing_identity_file_is_named(self, sshd: SshServer, tmp_path: Path) -> None:
        missing = str(tmp_path / "id_nope")
        error = connect_error(transport_for(profile_for(sshd, identity_file=(missing,))), 5)
        assert f"identity_file {missing} does not exist" in error.message

    def test_a_passphrase_protected_key_is_never_prompted_for(self, sshd: SshServer, tmp_path: Path) -> None:
        key = tmp_path / "id_locked"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(key)], check=True)
        error = connect_error(transport_for(profile_for(sshd, identity_file=(str(key),))), 10)
        assert "passphrase-protected" in error.message and "ssh-add" in error.message

    def test_errors_print_nothing_and_exit_cleanly(self, sshd: SshServer) -> None:
        # paramiko logs failed handshakes with a traceback; none of it may reach stderr
        script = textwrap.dedent(f"""\
            import socket
            from skyctl.config import HostProfile
            from skyctl.errors import ConnectError
            from skyctl.transports.ssh import SshTransport
            silent = socket.socket(); silent.bind(("127.0.0.1", 0)); silent.listen(1)
            profile = HostProfile(name="x", type="ssh", host="127.0.0.1", port=silent.getsockname()[1],
                                  known_hosts={str(sshd.known_hosts)!r}, connect_timeout=0.5)
            try:
                SshTransport(profile, None, ssh_config_path=None).start(["true"])
            except ConnectError as exc:
                print(exc.exit_status.value)
        """)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
        assert done.stdout.strip() == "4"
        assert done.stderr == ""


# -- gateways ------------------------------------------------------------------


class TestGateway:
    def test_a_host_reached_through_a_gateway_profile(self, sshd: SshServer, sshd_gateway: SshServer) -> None:
        gateway = profile_for(sshd_gateway, name="jump")
        target = profile_for(sshd, name="target", gateway="jump")
        with transport_for(target, {"jump": gateway}) as transport:
            pipes = transport.start(["cat"])
            pipes.write(b"through the jump host")
            assert pipes.read(21) == b"through the jump host"
            # the target's SSH connection runs inside a direct-tcpip channel of the gateway's
            assert isinstance(transport._conn.transport.sock, paramiko.Channel)  # type: ignore[union-attr]
            assert transport._gateway is not None and transport._gateway.is_connected
            assert transport._conn.transport.sock.get_transport() is transport._gateway._conn.transport  # type: ignore[union-attr]
            assert transport._gateway.label == f"{sshd_gateway.user}@127.0.0.1:{sshd_gateway.port}"
        assert not transport._gateway  # closing the target closed the gateway it opened

    def test_a_refused_target_is_reported_as_seen_from_the_gateway(self, sshd: SshServer, sshd_gateway: SshServer, closed_port: int) -> None:
        profiles = {"jump": profile_for(sshd_gateway, name="jump")}
        error = connect_error(transport_for(profile_for(sshd, port=closed_port, gateway="jump"), profiles), 10)
        assert "refused" in error.message and "gateway 'jump'" in error.message

    def test_a_failing_gateway_is_named(self, sshd: SshServer, sshd_gateway: SshServer) -> None:
        profiles = {"jump": profile_for(sshd_gateway, name="jump", identity_file=(str(sshd_gateway.unauthorized_identity_file),))}
        error = connect_error(transport_for(profile_for(sshd, gateway="jump"), profiles), 10)
        assert "gateway 'jump' failed" in error.message and "authentication failed" in error.message

    def test_the_target_host_key_is_checked_too(self, sshd: SshServer, sshd_gateway: SshServer, tmp_path: Path) -> None:
        known = tmp_path / "known_hosts"
        known.write_text(sshd_gateway.known_hosts.read_text())  # the gateway's key only
        profiles = {"jump": profile_for(sshd_gateway, name="jump", known_hosts=str(known))}
        error = connect_error(transport_for(profile_for(sshd, gateway="jump", known_hosts=str(known)), profiles), 10)
        assert "unknown" in error.message and sshd.host_key_fingerprint in error.message
        assert f"ssh -p {sshd_gateway.port} {sshd_gateway.user}@127.0.0.1 'ssh-keyscan" in (error.hint or "")

    def test_proxyjump_from_ssh_config(self, sshd: SshServer, sshd_gateway: SshServer, tmp_path: Path) -> None:
        known = tmp_path / "known_hosts"
        known.write_text(sshd.known_hosts.read_text() + sshd_gateway.known_hosts.read_text())
        config = tmp_path / "ssh_config"
        config.write_text(f"Host target\n  HostName 127.0.0.1\n  Port {sshd.port}\n  ProxyJump {sshd_gateway.user}@127.0.0.1:{sshd_gateway.port}\n")
        profile = profile_for(
            sshd,
            host="target",
            port=None,
            known_hosts=str(known),
            identity_file=(str(sshd.identity_file), str(sshd_gateway.identity_file)),
        )
        with transport_for(profile, ssh_config_path=config) as transport:
            assert transport.start(["true"]).exit_status(10) == 0
            assert isinstance(transport._conn.transport.sock, paramiko.Channel)  # type: ignore[union-attr]

    def test_a_gateway_loop_is_cut(self, sshd: SshServer) -> None:
        loop = profile_for(sshd, name="loop", gateway="loop")
        error = connect_error(transport_for(loop, {"loop": loop}), 20)
        assert "gateways in a row" in error.message


def test_profile_stand_in_fields_are_the_contracts() -> None:
    names = {f.name for f in dataclasses.fields(HostProfile)}
    assert {"host", "port", "user", "identity_file", "known_hosts", "host_key_policy", "gateway", "connect_timeout", "keepalive"} <= names


class TestResolveEndpoint:
    def test_proxyjump_hops_are_parsed_first_hop_first(self) -> None:
        config = paramiko.SSHConfig.from_text("Host *\n  ProxyJump me@bastion:2200,hop2\n")
        endpoint = resolve_endpoint(HostProfile(name="gpu", type="ssh", host="gpu"), config)
        assert endpoint.proxy_jump == ("me@bastion:2200", "hop2")

    def test_a_gateway_profile_replaces_proxyjump(self) -> None:
        config = paramiko.SSHConfig.from_text("Host *\n  ProxyJump bastion\n")
        assert resolve_endpoint(HostProfile(name="gpu", type="ssh", host="gpu", gateway="other"), config).proxy_jump == ()

    def test_a_host_is_never_its_own_jump_host(self) -> None:
        config = paramiko.SSHConfig.from_text("Host *\n  ProxyJump bastion\n")
        assert resolve_endpoint(HostProfile(name="b", type="ssh", host="bastion"), config).proxy_jump == ()

    def test_defaults_without_ssh_config(self) -> None:
        endpoint = resolve_endpoint(HostProfile(name="h", type="ssh", host="example.org"), None)
        assert (endpoint.hostname, endpoint.port, endpoint.identity_files) == ("example.org", 22, ())
        assert endpoint.known_hosts_name == "example.org"
