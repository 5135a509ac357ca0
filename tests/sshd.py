"""A real OpenSSH ``sshd`` on 127.0.0.1 for tests and benchmarks.

Importable on its own (stdlib only, no pytest): the test suite's fixtures use
it, and so can a benchmark script::

    from tests.sshd import start_sshd
    server = start_sshd(Path("/tmp/bench"))
    try:
        subprocess.run(server.ssh_argv("python3", "-V"), check=True)
    finally:
        server.stop()

What ``start_sshd`` does, in a fresh directory of its own:

- generates an ed25519 host key, one ed25519 login key per user and one extra
  key that no user authorizes (for "wrong key" tests), all without passphrase;
- writes ``sshd_config`` (loopback only, a free port, keys only, no PAM, no
  subsystems, ``AllowTcpForwarding yes`` for gateway tests) and a
  ``known_hosts`` line ``[127.0.0.1]:PORT <host key>`` so strict host key
  checking is exercised for real;
- runs ``/usr/sbin/sshd -D -e -f sshd_config -E sshd.log`` and waits until
  the port answers with an SSH banner (polling with a deadline).

Each call starts an independent server (own port, host key and user keys), so
two calls give a gateway and a target for ProxyJump tests. ``stop()`` ends
only the sshd process this module started, by its PID.

Logging in as another user than the current one needs root (sshd must be
able to switch to that user); ``ensure_user`` creates such a user.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import getpass
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SshServer", "SshdUnavailable", "ensure_user", "start_sshd", "sshd_binary"]

#: where Debian/Ubuntu put the daemon; ``PATH`` is searched as a fallback
SSHD_PATH = Path("/usr/sbin/sshd")
#: the privilege-separation directory sshd insists on when run as root
PRIVSEP_DIR = Path("/run/sshd")
#: options newer OpenSSH releases understand and that tests want; dropped when
#: the installed sshd rejects them (``PerSourcePenalties`` appeared in 9.8 and
#: would lock out 127.0.0.1 after the deliberate auth failures of the tests)
OPTIONAL_OPTIONS = ("PerSourcePenalties no",)


class SshdUnavailable(RuntimeError):
    """sshd (or ssh-keygen) is missing, or the server could not be started; the message says why."""


@dataclass
class SshServer:
    """One running sshd on the loopback interface and what a client needs to reach it."""

    host: str
    port: int
    #: the login user this view of the server is for (see ``as_user``)
    user: str
    #: private key (ed25519, no passphrase) authorized for ``user``
    identity_file: Path
    #: a file holding exactly ``[127.0.0.1]:PORT <host key>``
    known_hosts: Path
    #: ``SHA256:...`` as ``ssh-keygen -lf`` prints it
    host_key_fingerprint: str
    #: the temporary root of this server (keys, config, log)
    workdir: Path
    #: ``ssh-ed25519 AAAA...``: the host's public key
    host_public_key: str = ""
    #: a valid key that no user on this server authorizes
    unauthorized_identity_file: Path = Path()
    #: login user → its private key, for every user this server accepts
    identities: dict[str, Path] = field(default_factory=dict)
    config_file: Path = Path()
    log_file: Path = Path()
    pid: int = 0
    _proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)
    _cleanup: list[Path] = field(default_factory=list, repr=False, compare=False)

    def as_user(self, user: str) -> "SshServer":
        """The same server seen by another of its users (shares the process; ``stop`` stops it)."""
        if user not in self.identities:
            raise KeyError(f"this sshd was started without user {user!r}; it has {sorted(self.identities)}")
        return dataclasses.replace(self, user=user, identity_file=self.identities[user])

    def ssh_argv(self, *cmd: str) -> list[str]:
        """An OpenSSH client argv that runs ``cmd`` (one remote argument per item) as ``user``.

        Host keys are checked strictly against ``known_hosts``, nothing is
        asked, and the caller's ``~/.ssh/config`` is ignored.
        """
        argv = [
            "ssh",
            "-F", "/dev/null",
            "-i", str(self.identity_file),
            "-p", str(self.port),
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes",
            f"{self.user}@{self.host}",
        ]  # fmt: skip
        if cmd:
            argv.append(shlex.join(cmd))
        return argv

    def log_text(self) -> str:
        """What sshd logged so far (useful in assertion messages)."""
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, *, remove_files: bool = True) -> None:
        """Stop the sshd this module started (by its PID). Safe to call twice.

        Files outside ``workdir`` are always removed; ``workdir`` (keys,
        config, log) only with ``remove_files``.
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc)
        for path in self._cleanup:
            if remove_files or path != self.workdir:
                shutil.rmtree(path, ignore_errors=True)
        self._cleanup = []


def sshd_binary() -> Path:
    """The sshd executable, or ``SshdUnavailable`` saying how to install it."""
    if SSHD_PATH.is_file() and os.access(SSHD_PATH, os.X_OK):
        return SSHD_PATH
    # sshd must be started by absolute path (it re-executes itself)
    found = shutil.which("sshd", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"]))
    if found:
        return Path(found).resolve()
    raise SshdUnavailable("sshd not found (install it: apt-get install -y openssh-server)")


def ensure_user(name: str) -> None:
    """Make sure a non-root login user ``name`` exists and can log in with a key.

    As root, a missing user is created (``useradd -m -s /bin/bash``) and a
    locked password field (``!``, which sshd without PAM treats as "account
    locked") is replaced by ``*`` (no password login possible, keys allowed).
    Not as root, the user must already exist.
    """
    try:
        pwd.getpwnam(name)
        exists = True
    except KeyError:
        exists = False
    if os.geteuid() != 0:
        if not exists:
            raise SshdUnavailable(f"user {name!r} does not exist and only root can create it")
        return
    if not exists:
        _run(["useradd", "-m", "-s", "/bin/bash", name], what=f"useradd {name}")
    if _password_locked(name):
        _run(["usermod", "-p", "*", name], what=f"usermod -p '*' {name}")


def start_sshd(
    root: Path | None = None,
    *,
    users: list[str] | None = None,
    start_timeout: float = 10.0,
    extra_config: list[str] | tuple[str, ...] = (),
    listen: str = "127.0.0.1",
    port: int | None = None,
    wrap: list[str] | tuple[str, ...] = (),
) -> SshServer:
    """Start an sshd on 127.0.0.1 in a new directory under ``root`` (default: the system temp dir).

    Args:
        root: where to make the server's directory.
        users: login users to authorize, each with its own key; the first one
            is the returned view's ``user``. Default: the current user.
            Users other than the current one need root and must exist
            (see ``ensure_user``).
        start_timeout: seconds to wait for the port to answer.
        extra_config: more ``sshd_config`` lines (e.g. ``"MaxSessions 2"``).
        listen: the address to listen on (the fault lab, ``tests/lab.py``,
            gives each host an address inside a network namespace of its own).
        port: the port to listen on; default: a free one on 127.0.0.1.
        wrap: a command prefix sshd runs under (``ip netns exec NS``); the
            readiness probe must still reach ``listen:port`` from here.

    Raises:
        SshdUnavailable: sshd/ssh-keygen missing, or the server did not come up.
    """
    sshd = sshd_binary()
    if shutil.which("ssh-keygen") is None:
        raise SshdUnavailable("ssh-keygen not found (install it: apt-get install -y openssh-client)")
    me = getpass.getuser()
    users = list(users or [me])
    for user in users:
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise SshdUnavailable(f"login user {user!r} does not exist (see ensure_user)") from None
        if user != me and os.geteuid() != 0:
            raise SshdUnavailable(f"only root can run an sshd that logs in {user!r} (running as {me!r})")
    if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)

    workdir = Path(tempfile.mkdtemp(prefix="sshd-", dir=root)).resolve()
    workdir.chmod(0o755)
    cleanup = [workdir]
    try:
        # sshd reads authorized_keys as the login user: every directory above
        # the file must be searchable by that user. pytest's temp root is 0700,
        # so fall back to a directory of our own under the (1777) system temp.
        if _searchable_by_all(workdir):
            auth_dir = workdir / "authorized_keys"
            auth_dir.mkdir(mode=0o755)
        else:
            auth_dir = Path(tempfile.mkdtemp(prefix="skyctl-sshd-auth-")).resolve()
            cleanup.append(auth_dir)
            auth_dir.chmod(0o755)
            if not _searchable_by_all(auth_dir):
                raise SshdUnavailable(f"no directory readable by other users for authorized_keys ({auth_dir})")
        auth_dir.chmod(0o755)

        keys = workdir / "keys"
        keys.mkdir(mode=0o700)
        host_key = _keygen(keys / "ssh_host_ed25519_key", "skyctl-test-host")
        identities = {user: _keygen(keys / f"id_{user}", f"{user}@skyctl-test") for user in users}
        unauthorized = _keygen(keys / "id_unauthorized", "unauthorized@skyctl-test")
        for user, key in identities.items():
            path = auth_dir / user
            path.write_text(Path(f"{key}.pub").read_text())
            path.chmod(0o644)

        host_public_key = " ".join(Path(f"{host_key}.pub").read_text().split()[:2])
        fingerprint = _run(["ssh-keygen", "-l", "-E", "sha256", "-f", f"{host_key}.pub"], what="ssh-keygen -l").split()[1]
        log_file = workdir / "sshd.log"
        config_file = workdir / "sshd_config"
        known_hosts = workdir / "known_hosts"

        proc = None
        fixed_port, port = port, None
        optional = list(OPTIONAL_OPTIONS)
        for _attempt in range(5):
            port = fixed_port or _free_port()
            lines = _config_lines(port, host_key, workdir, auth_dir, users, list(extra_config) + optional, listen)
            config_file.write_text("\n".join(lines) + "\n")
            check = subprocess.run([str(sshd), "-t", "-f", str(config_file)], capture_output=True, text=True)
            if check.returncode != 0:
                bad = [opt for opt in optional if opt.split()[0].lower() in check.stderr.lower()]
                if bad:
                    optional = [opt for opt in optional if opt not in bad]
                    continue
                raise SshdUnavailable(f"sshd rejected its config {config_file}: {check.stderr.strip()}")
            log_file.write_text("")
            proc = _spawn(sshd, config_file, log_file, wrap)
            if _wait_listening(proc, port, start_timeout, listen):
                break
            stop_process(proc)
            log = log_file.read_text(errors="replace")
            if "Address already in use" in log and not fixed_port:  # lost a race for the port: pick another
                proc = None
                continue
            raise SshdUnavailable(f"sshd did not start on {listen}:{port}: {_tail(log) or 'no log output'}")
        if proc is None or port is None:
            raise SshdUnavailable(f"sshd could not bind a free port on {listen}")

        known_hosts.write_text(f"[{listen}]:{port} {host_public_key}\n")
        server = SshServer(
            host=listen,
            port=port,
            user=users[0],
            identity_file=identities[users[0]],
            known_hosts=known_hosts,
            host_key_fingerprint=fingerprint,
            workdir=workdir,
            host_public_key=host_public_key,
            unauthorized_identity_file=unauthorized,
            identities=identities,
            config_file=config_file,
            log_file=log_file,
            pid=proc.pid,
            _proc=proc,
            _cleanup=cleanup,
        )
    except BaseException:
        for path in cleanup:
            shutil.rmtree(path, ignore_errors=True)
        raise
    atexit.register(server.stop)  # a benchmark that forgets stop() leaves nothing behind
    return server


def _config_lines(
    port: int, host_key: Path, workdir: Path, auth_dir: Path, users: list[str], extra: list[str],
    listen: str = "127.0.0.1",
) -> list[str]:
    return [
        f"ListenAddress {listen}",
        f"Port {port}",
        f"HostKey {host_key}",
        f"PidFile {workdir / 'sshd.pid'}",
        f"AuthorizedKeysFile {auth_dir}/%u",
        "AuthorizedKeysCommand none",
        "StrictModes no",
        "UsePAM no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin yes",
        f"AllowUsers {' '.join(users)}",
        "AllowTcpForwarding yes",
        "AllowAgentForwarding no",
        "X11Forwarding no",
        "UseDNS no",
        "PrintMotd no",
        "LogLevel VERBOSE",
        # no Subsystem: nothing but exec and direct-tcpip is needed
        *extra,
    ]


def _keygen(path: Path, comment: str) -> Path:
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], what="ssh-keygen")
    path.chmod(0o600)
    return path


def _spawn(sshd: Path, config_file: Path, log_file: Path, wrap: list[str] | tuple[str, ...] = ()) -> subprocess.Popen:
    err = open(log_file, "ab")  # -E normally wins; this catches anything printed before logging starts
    try:
        return subprocess.Popen(
            [*wrap, str(sshd), "-D", "-e", "-f", str(config_file), "-E", str(log_file)],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            preexec_fn=_die_with_parent,
        )
    finally:
        err.close()


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the test process dies (Linux only)."""
    with contextlib.suppress(Exception):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_listening(proc: subprocess.Popen, port: int, timeout: float, host: str = "127.0.0.1") -> bool:
    """Poll until host:port sends an SSH banner (True) or sshd exits / the deadline passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=1.0) as sock:
                sock.settimeout(max(0.5, deadline - time.monotonic()))
                if sock.recv(64).startswith(b"SSH-"):
                    return proc.poll() is None
        except OSError:
            pass
        time.sleep(0.02)
    return False


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, up to 5 s to exit, then SIGKILL: for the processes tests and benchmarks start."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _searchable_by_all(path: Path) -> bool:
    for part in [path, *path.parents]:
        try:
            if not part.stat().st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def _password_locked(name: str) -> bool:
    try:
        with open("/etc/shadow") as shadow:
            for line in shadow:
                fields = line.split(":")
                if fields[0] == name and len(fields) > 1:
                    return fields[1].startswith("!")
    except OSError:
        pass
    return False


def _run(argv: list[str], *, what: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SshdUnavailable(f"{what} failed: {exc}") from None
    if done.returncode != 0:
        raise SshdUnavailable(f"{what} failed (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _tail(text: str, lines: int = 8) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])
