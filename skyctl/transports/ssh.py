"""The ``ssh`` transport: an exec channel on a fabric/paramiko connection.

Basics
    ``SshTransport(profile, resolve_profile)`` starts commands on the host a
    ``HostProfile`` names. ``start(argv)`` opens a raw ``session`` channel with
    a large window on the connection's paramiko ``Transport`` and runs
    ``shlex.join(argv)`` in it; the returned ``SshPipes`` are the command's
    stdin/stdout as blocking byte pipes. (Not fabric's ``run(in_stream=...)``:
    invoke feeds stdin with a sleep per read.)

Lifecycle
    Constructing reads ``~/.ssh/config`` but does no network I/O. The first
    ``start()`` connects; later ones reuse the connection (and reconnect if it
    dropped in between). ``close()`` may be called any number of times; the
    object is a context manager.

Configuration
    ``~/.ssh/config`` (injectable: ``ssh_config_path``) applies to the
    profile's ``host`` as to an alias: HostName, User, Port, IdentityFile and
    ProxyJump, each only where the profile does not set the same thing
    (``gateway:`` replaces ProxyJump). Authentication uses keys only: the
    identity files, then ssh-agent; ``~/.ssh/id_*`` only when no identity file
    is configured. Nothing ever prompts.

Host keys
    Verified like OpenSSH does, against the profile's ``known_hosts`` and the
    system ``/etc/ssh/ssh_known_hosts`` (hashed names, patterns and
    ``@revoked`` understood). ``strict``: an unknown key is refused;
    ``accept-new``: it is accepted and appended to ``known_hosts``. A key that
    differs from a known one is always refused. (fabric's ``Connection``
    installs ``AutoAddPolicy``; it is replaced before connecting.)

Errors
    Every failure to connect is a ``ConnectError`` whose one-line message says
    which (name not resolved, refused, timed out, authentication failed, host
    key unknown/changed) and whose hint says what to do. ``connect_timeout``
    bounds TCP connect, banner, key exchange and authentication together.

Liveness
    Every ``keepalive`` seconds a ``keepalive@openssh.com`` global request
    that wants a reply is sent (``Liveness``); ``keepalive_count`` intervals
    in a row without any reply give the connection up, like OpenSSH's
    ``ServerAliveInterval`` × ``ServerAliveCountMax``: the connection is
    closed, blocked reads see EOF, and ``SshPipes.lost()`` says why (the
    session turns that into ``ConnectionLost``, exit 6). ``round_trip()``
    sends one on demand (the reuse holder checks a kept connection so
    before a call may use it). paramiko's own keepalive wants no reply, so it
    is not used: a stalled peer would go unnoticed.

Names
    The profile's ``host`` and ``user`` are checked when the config loads;
    names ``~/.ssh/config`` gives (HostName, User, ProxyJump hops) are held
    to the same OpenSSH rules here, before a hop is looked up again (where
    ``Match exec`` hands ``%h`` to a shell): a bad one is a ``ConfigError``.

Imports only paramiko/fabric and ``skyctl.errors``/``skyctl.config``; knows nothing of frames.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import errno
import fnmatch
import getpass
import hashlib
import hmac
import itertools
import logging
import os
import shlex
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import paramiko
from fabric import Config as FabricConfig
from fabric import Connection

from ..config import HOST_RULES_HINT, USER_RULES_HINT, hostname_problem, user_problem
from ..errors import ConfigError, ConnectError, ConnectionLost, RemoteEnvironmentError, SkyctlError

if TYPE_CHECKING:
    from ..config import HostProfile

__all__ = ["SshTransport", "SshPipes", "Endpoint", "resolve_endpoint", "fingerprint"]

log = logging.getLogger("skyctl.ssh")
# paramiko logs failed handshakes with tracebacks at ERROR; with no handler
# configured Python would print them on stderr. An app that configures
# logging (``--verbose``) still gets them through propagation.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

#: the user's OpenSSH client config
DEFAULT_SSH_CONFIG = "~/.ssh/config"
#: known_hosts shared by all users, read in addition to the profile's
SYSTEM_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"
#: receive window of an exec channel: how much the remote may send before we
#: read. Large enough for a high-latency link (paramiko's default is 2 MiB);
#: it is also the most a slow reader lets pile up in memory per channel.
WINDOW_SIZE = 8 * 1024 * 1024
#: largest packet we accept on the channel
MAX_PACKET_SIZE = 64 * 1024
#: how much of the command's own stderr ``stderr_text`` keeps
STDERR_TAIL = 8 * 1024
#: the global request sent as a keepalive, wanting a reply (what OpenSSH's
#: ServerAliveInterval sends; sshd answers it with REQUEST_FAILURE, as any
#: request it does not know: any answer proves the peer is alive)
KEEPALIVE_REQUEST = "keepalive@openssh.com"
#: seconds ``SshPipes.close`` gives a command to exit on EOF before signalling it
CLOSE_GRACE = 2.0
#: a chain of gateways longer than this is a loop
MAX_HOPS = 8
#: ciphers offered first when paramiko has them: AEAD, so no separate HMAC pass
#: over every byte (about 40% less CPU per byte moved than aes-ctr + hmac-sha2)
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


# --------------------------------------------------------------------------
# resolving a profile against ~/.ssh/config


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to connect, after ``~/.ssh/config`` has been applied."""

    #: the profile's ``host`` (an address or an ssh_config alias)
    alias: str
    #: the address actually dialled (ssh_config HostName, else ``alias``)
    hostname: str
    port: int
    user: str
    #: private key files to offer, in order
    identity_files: tuple[str, ...]
    #: where ``identity_files`` came from: ``"profile"``, ``"ssh_config"`` or ``""`` (none configured)
    identities_from: str
    #: ProxyJump hops from ssh_config, first hop first (empty when the profile has ``gateway``)
    proxy_jump: tuple[str, ...]

    @property
    def label(self) -> str:
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        return f"{self.user}@{host}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """How OpenSSH names this host in known_hosts: ``host`` on port 22, else ``[host]:port``."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def resolve_endpoint(profile: "HostProfile", ssh_config: paramiko.SSHConfig | None, *, use_proxy_jump: bool = True,
                     config_path: str = DEFAULT_SSH_CONFIG) -> Endpoint:
    """Apply ``ssh_config`` under ``profile``: the profile wins for each setting it makes. Pure.

    Every name taken from ``ssh_config`` (HostName, User, each ProxyJump hop)
    is held to OpenSSH's host and user name rules, as the profile's own are:
    a hop is looked up in ``ssh_config`` again, where ``Match exec`` hands it
    to a shell. A bad one is a ``ConfigError`` naming ``config_path`` (where
    ``ssh_config`` was read), the alias and the keyword.
    """
    alias = profile.host or ""
    found = ssh_config.lookup(alias) if ssh_config is not None else {}
    hostname = found.get("hostname") or alias
    port = profile.port if profile.port is not None else int(found.get("port", 22))
    user = profile.user or found.get("user") or getpass.getuser()
    _check_ssh_config_name(config_path, alias, "HostName", hostname, hostname_problem)
    if not profile.user and found.get("user"):
        _check_ssh_config_name(config_path, alias, "User", user, user_problem)
    if profile.identity_file:
        identities, source = tuple(profile.identity_file), "profile"
    elif found.get("identityfile"):
        identities, source = tuple(os.path.expanduser(p) for p in found["identityfile"]), "ssh_config"
    else:
        identities, source = (), ""
    hops: tuple[str, ...] = ()
    jump = found.get("proxyjump", "")
    if use_proxy_jump and not profile.gateway and jump and jump.lower() != "none":
        hops = tuple(h.strip() for h in jump.split(",") if h.strip())
        for hop_user, hop_host, _hop_port in map(_parse_hop, hops):
            _check_ssh_config_name(config_path, alias, "ProxyJump", hop_host, hostname_problem)
            if hop_user is not None:
                _check_ssh_config_name(config_path, alias, "ProxyJump", hop_user, user_problem, what="user name")
        for _user, hop_host, hop_port in map(_parse_hop, hops):
            if hop_host in (alias, hostname) and (hop_port or 22) == int(port):
                hops = ()  # "Host * / ProxyJump bastion" also matches the bastion itself
                break
    return Endpoint(alias, hostname, int(port), user, identities, source, hops)


def _check_ssh_config_name(config_path: str, alias: str, keyword: str, value: str, check: Callable[[str], str | None],
                           what: str = "host name") -> None:
    """Raise ``ConfigError`` when ``value`` (``keyword`` for ``alias`` in ``config_path``) breaks OpenSSH's rules."""
    problem = check(value)
    if problem:
        raise ConfigError(
            f"{config_path}: host {alias!r}: {keyword} {value!r} is not a valid {what}: it {problem}",
            f"fix {keyword} in {config_path}; " + (HOST_RULES_HINT if what == "host name" else USER_RULES_HINT),
        )


def _parse_hop(hop: str) -> tuple[str | None, str, int | None]:
    """``[user@]host[:port]`` (or ``ssh://user@host:port``) → (user, host, port)."""
    hop = hop.removeprefix("ssh://")
    user, _, rest = hop.rpartition("@")
    port = None
    if rest.startswith("["):  # [v6]:port
        host, _, tail = rest[1:].partition("]")
        if tail.startswith(":") and tail[1:].isdigit():
            port = int(tail[1:])
    elif rest.count(":") == 1:
        host, _, p = rest.partition(":")
        port = int(p) if p.isdigit() else None
    else:
        host = rest
    return (user or None), host, port


def _load_ssh_config(path: str | os.PathLike[str] | None) -> paramiko.SSHConfig | None:
    if path is None:
        return None
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):
        return None
    return paramiko.SSHConfig.from_path(path)


# --------------------------------------------------------------------------
# host keys


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:...`` as OpenSSH prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class _KnownKey:
    path: str
    lineno: int
    marker: str  # "" or "@revoked"
    key: paramiko.PKey


def _name_matches(pattern_field: str, name: str) -> bool:
    """One known_hosts names field (``a,b,!c``, ``|1|salt|hash``, ``*.x``) against ``name``."""
    if pattern_field.startswith("|1|"):
        try:
            hashed = paramiko.HostKeys.hash_host(name, pattern_field)
        except Exception:
            return False
        return hmac.compare_digest(hashed, pattern_field)
    matched = False
    for pattern in pattern_field.split(","):
        negated = pattern.startswith("!")
        pattern = pattern[1:] if negated else pattern
        hit = fnmatch.fnmatchcase(name.lower(), pattern.lower()) if any(c in pattern for c in "*?") else pattern == name
        if hit and negated:
            return False
        matched = matched or hit
    return matched


def _read_known_hosts(path: str, name: str) -> list[_KnownKey]:
    """Entries of ``path`` that apply to ``name`` (unreadable file or bad lines: skipped)."""
    found: list[_KnownKey] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as lines:
            for lineno, line in enumerate(lines, 1):
                fields = line.split()
                if not fields or fields[0].startswith("#"):
                    continue
                marker = ""
                if fields[0].startswith("@"):
                    marker, fields = fields[0], fields[1:]
                    if marker != "@revoked":  # @cert-authority: certificates are not used here
                        continue
                if len(fields) < 3 or not _name_matches(fields[0], name):
                    continue
                try:
                    key = paramiko.PKey.from_type_string(fields[1], base64.b64decode(fields[2]))
                except Exception:  # unknown key type, bad base64
                    continue
                found.append(_KnownKey(path, lineno, marker, key))
    except OSError:
        pass
    return found


class _HostKeyRefused(paramiko.SSHException):
    """Raised by the policy inside paramiko's connect; carries the finished ``ConnectError``."""

    def __init__(self, error: ConnectError) -> None:
        super().__init__(error.message)
        self.error = error


class _KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
    """Every host key check goes through here (the client's own host key table stays empty)."""

    def __init__(self, transport: "SshTransport", endpoint: Endpoint) -> None:
        self.transport = transport
        self.endpoint = endpoint

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        self.transport._verify_host_key(self.endpoint, key)


def _keyscan_type(key_name: str) -> str | None:
    if key_name == "ssh-ed25519":
        return "ed25519"
    if key_name.startswith("ecdsa-"):
        return "ecdsa"
    if key_name in ("ssh-rsa", "rsa-sha2-256", "rsa-sha2-512"):
        return "rsa"
    return None


def _preferred_ciphers(available: tuple[str, ...]) -> tuple[str, ...]:
    """paramiko's ciphers with ``FAST_CIPHERS`` moved to the front: the
    server picks the first it also allows, so a server without GCM still
    gets paramiko's usual choice."""
    first = tuple(name for name in FAST_CIPHERS if name in available)
    return first + tuple(name for name in available if name not in first)


def _preferred_key_types(known: list[_KnownKey], available: tuple[str, ...]) -> list[str]:
    """Host key algorithms with the types already known for this host first (as OpenSSH orders them)."""
    first: list[str] = []
    for entry in known:
        name = entry.key.get_name()
        for alg in (("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa") if name == "ssh-rsa" else (name,)):
            if alg in available and alg not in first:
                first.append(alg)
    return first + [alg for alg in available if alg not in first]


# --------------------------------------------------------------------------
# liveness: keepalives that must be answered


class Liveness:
    """OpenSSH's ``ServerAliveInterval`` × ``ServerAliveCountMax`` for one paramiko transport.

    paramiko's own keepalive wants no reply, so it detects nothing: a peer
    that stalled (a suspended sshd, a link that drops packets silently)
    leaves every blocked read waiting for ever. Here every ``interval``
    seconds a global request that wants a reply is sent; any reply resets
    the count, and ``count`` intervals in a row without one give the
    connection up: the reason is recorded first (``error()``), then the
    transport is closed, which ends every blocked read and write on its
    channels (they then see EOF, and ask ``error()`` why).

    Requests are sent by a thread of their own: a send can block (a full
    socket buffer towards a stalled peer, a key exchange in progress) and
    the ticking must go on regardless. ``round_trip()`` sends the same
    request on demand and waits for its reply with a deadline (a kept
    connection is checked so before a call may use it).
    """

    def __init__(self, interval: float, count: int, where: str) -> None:
        self.interval = float(interval)
        self.count = int(count)
        #: how the connection is named in the error: ``'box' (user@host:port)``
        self.where = where
        self._cond = threading.Condition()
        self._queued = 0  # requests asked for; the n-th is answered by the n-th reply (RFC 4254 4: in order)
        self._sent = 0  # requests handed to the transport
        self._answered = 0  # replies received
        self._misses = 0  # ticks since the last reply
        self._stopped = False
        self._lost: ConnectionLost | None = None
        self._transport: paramiko.Transport | None = None

    def watch(self, transport: paramiko.Transport) -> None:
        """Count ``transport``'s replies to global requests (success and failure alike).

        paramiko keeps a handler table per transport; the reply handlers are
        wrapped, not replaced (``global_request`` still works).
        """
        table = transport._handler_table
        for ptype in (paramiko.common.MSG_REQUEST_SUCCESS, paramiko.common.MSG_REQUEST_FAILURE):
            table[ptype] = self._counting(table[ptype])
        self._transport = transport

    def _counting(self, handler: Callable[[paramiko.Message], None]) -> Callable[[paramiko.Message], None]:
        def counted(message: paramiko.Message) -> None:
            handler(message)
            self._reply()

        return counted

    def start(self) -> None:
        """Start ticking (once connected and authenticated)."""
        for run, what in ((self._tick, "keepalive"), (self._send_loop, "keepalive-send")):
            threading.Thread(target=run, name=f"skyctl-ssh-{what} {self.where}", daemon=True).start()

    def stop(self) -> None:
        """End the threads (the connection is being closed on purpose). Safe to call twice."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def error(self) -> ConnectionLost | None:
        """Why the connection was given up, or None (it was not, or it ended otherwise)."""
        return self._lost

    def round_trip(self, timeout: float) -> bool:
        """Send a keepalive and wait up to ``timeout`` seconds for its reply: False when none came."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._queued += 1
            mine = self._queued
            self._cond.notify_all()
            while self._answered < mine:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopped or not self._active():
                    return False
                self._cond.wait(min(remaining, 0.25))
        return True

    def give_up(self, reason: str, hint: str) -> None:
        """Record why the connection is lost, then close it: every blocked read and write ends."""
        with self._cond:
            if self._lost is None:
                self._lost = ConnectionLost(f"lost the connection to {self.where}: {reason}", hint)
            self._stopped = True
            self._cond.notify_all()
        transport = self._transport
        if transport is not None:
            log.info("giving up the connection to %s: %s", self.where, reason)
            with contextlib.suppress(Exception):
                transport.close()

    # -- threads ---------------------------------------------------------------

    def _active(self) -> bool:
        transport = self._transport
        return transport is not None and transport.is_active()

    def _reply(self) -> None:
        """On paramiko's thread: a reply to a global request came."""
        with self._cond:
            if self._answered < self._sent:
                self._answered += 1
            self._misses = 0
            self._cond.notify_all()

    def _tick(self) -> None:
        """OpenSSH's ``server_alive_check``: give up after ``count`` ticks without a reply, else send one more."""
        with self._cond:
            while True:
                if self._cond.wait_for(lambda: self._stopped, timeout=self.interval) or not self._active():
                    return
                if self._misses >= self.count:
                    misses = self._misses
                    break
                self._misses += 1
                self._queued += 1
                self._cond.notify_all()
        self.give_up(
            f"{misses} keepalives in a row went unanswered (one every {self.interval:g}s)",
            hint="the host or the network stopped responding (a suspended or overloaded host, a dropped link); "
            "values printed so far are complete. On a slow link, raise 'keepalive' or 'keepalive_count' for this host",
        )

    def _send_loop(self) -> None:
        """Hand each queued request to paramiko, in order; a blocked send holds up only this thread."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopped or self._sent < self._queued, timeout=max(self.interval, 1.0))
                if self._stopped or not self._active():
                    return
                if self._sent >= self._queued:
                    continue
                self._sent += 1
            message = paramiko.Message()
            message.add_byte(paramiko.common.cMSG_GLOBAL_REQUEST)
            message.add_string(KEEPALIVE_REQUEST)
            message.add_boolean(True)  # want reply
            try:
                self._transport._send_user_message(message)  # type: ignore[union-attr]
            except Exception as exc:  # a key exchange that never finished: this one goes unanswered
                log.debug("keepalive to %s not sent: %s", self.where, exc)


# --------------------------------------------------------------------------
# the pipes of one started command


class SshPipes:
    """A remote command's stdin/stdout over one exec channel, its stderr kept as a short tail.

    ``read`` and ``write`` block without any timeout (a stream may be idle for
    hours; liveness is the connection's keepalive). The channel's window is
    the only buffer: a reader that stops makes the remote writer wait.
    """

    def __init__(self, channel: paramiko.Channel, label: str,
                 lost: Callable[[], ConnectionLost | None] | None = None) -> None:
        self._chan = channel
        self.label = label
        self._lost = lost
        self._tail = bytearray()
        self._tail_lock = threading.Lock()
        self._closed = False
        self._stderr_thread = threading.Thread(target=self._drain_stderr, name=f"skyctl-ssh-stderr {label}", daemon=True)
        self._stderr_thread.start()

    def _drain_stderr(self) -> None:
        # Always read stderr: unread stderr would hold the channel's window
        # and so stall stdout too.
        while True:
            try:
                chunk = self._chan.recv_stderr(32768)
            except Exception:
                return
            if not chunk:
                return
            with self._tail_lock:
                self._tail += chunk
                del self._tail[:-STDERR_TAIL]
                self._stderr_chunk(chunk)

    def _stderr_chunk(self, chunk: bytes) -> None:
        """Called with each stderr chunk, under the tail's lock (the reuse holder forwards them)."""

    def lost(self) -> ConnectionLost | None:
        """Why the connection under this channel was given up (keepalives unanswered), else None.

        Asked after a read hit EOF: the error then says more than "closed".
        """
        return self._lost() if self._lost is not None else None

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes from the command's stdout; fewer only at EOF (or when the connection is gone)."""
        if n <= 0:
            return b""
        first = self._recv(n)
        if len(first) == n or not first:
            return first
        parts = [first]
        got = len(first)
        while got < n:
            chunk = self._recv(n - got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def _recv(self, n: int) -> bytes:
        try:
            return self._chan.recv(n)
        except (OSError, EOFError, paramiko.SSHException):
            return b""

    def write(self, data: bytes) -> None:
        """All of ``data`` to the command's stdin; ``OSError`` when the channel or connection is gone."""
        if not data:
            return
        # Not ``chan.sendall``: it re-slices the rest of the buffer after every
        # packet (quadratic for a multi-MiB frame) and spins forever once the
        # channel has sent EOF (``send`` then returns 0).
        view = memoryview(data)
        try:
            while view:
                sent = self._chan.send(view)
                if not sent:
                    raise BrokenPipeError(f"ssh channel to {self.label} is closed for writing")
                view = view[sent:]
        except OSError:
            raise
        except (EOFError, paramiko.SSHException) as exc:
            raise BrokenPipeError(f"ssh channel to {self.label} closed: {exc}") from None

    def close_stdin(self) -> None:
        """Send EOF on the command's stdin (``shutdown_write``)."""
        with contextlib.suppress(Exception):
            self._chan.shutdown_write()

    def close(self) -> None:
        """Release the channel and make sure the command is gone. Safe to call twice.

        Like the local transport: EOF on its stdin, up to ``CLOSE_GRACE``
        seconds to exit, then SIGTERM and SIGKILL to its process group (SSH
        ``signal`` requests, which OpenSSH honours since 7.9), then the
        channel is closed (so its pipes close too).
        """
        if self._closed:
            return
        self._closed = True
        chan = self._chan
        transport = chan.get_transport()
        if transport is not None and transport.is_active() and not chan.closed:
            self.close_stdin()
            for sig, grace in (("TERM", CLOSE_GRACE), ("KILL", 1.0)):
                if self.exit_status(timeout=grace) is not None:
                    break
                _send_signal(chan, sig)
        with contextlib.suppress(Exception):
            chan.close()
        self._stderr_thread.join(1.0)

    def stderr_text(self) -> str:
        """The last few KiB the command wrote to its stderr."""
        if self._chan.closed or self._chan.eof_received:
            self._stderr_thread.join(0.5)
        with self._tail_lock:
            return bytes(self._tail).decode("utf-8", errors="replace")

    def exit_status(self, timeout: float = 0.0) -> int | None:
        """The exit status once the command ended (waiting up to ``timeout``), else None.

        -1 when the channel closed without one (the command was killed by a
        signal, or the channel or connection was closed first).
        """
        self._chan.status_event.wait(max(0.0, timeout))
        if not self._chan.exit_status_ready():
            return None
        return self._chan.exit_status

    def __enter__(self) -> "SshPipes":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------
# the transport


class SshTransport:
    """Starts commands on one SSH host; one object per host, its connection reused across calls.

    Args:
        profile: the host's profile (``type: ssh``).
        resolve_profile: gives the profile named by ``gateway:``.
        ssh_config_path: OpenSSH client config to apply (None: none).
            Default ``~/.ssh/config``; a missing file is fine.
        system_known_hosts: known_hosts read besides the profile's (None: none).
        gateway: an already built transport to tunnel through, instead of
            ``profile.gateway``/ProxyJump (used for ProxyJump chains).
    """

    #: what ``start`` wraps a channel in (the reuse holder forwards stderr as it arrives)
    pipes_class: "type[SshPipes]" = SshPipes

    def __init__(
        self,
        profile: "HostProfile",
        resolve_profile: Callable[[str], "HostProfile"],
        *,
        ssh_config_path: str | os.PathLike[str] | None = DEFAULT_SSH_CONFIG,
        system_known_hosts: str | None = SYSTEM_KNOWN_HOSTS,
        gateway: "SshTransport | None" = None,
        _hops: int = 0,
        _use_proxy_jump: bool = True,
    ) -> None:
        self.profile = profile
        self._resolve_profile = resolve_profile
        self._ssh_config_path = ssh_config_path
        self._system_known_hosts = system_known_hosts
        self._gateway = gateway
        self._gateway_owned = gateway is None
        self._hops = _hops
        self._lock = threading.RLock()
        self._conn: Connection | None = None
        #: the keepalives of the current connection
        self._liveness: Liveness | None = None
        self._config_error: SkyctlError | None = None
        try:
            ssh_config = _load_ssh_config(ssh_config_path)
        except Exception as exc:  # a malformed ~/.ssh/config: reported by start()
            ssh_config = None
            self._config_error = ConnectError(
                f"cannot read ssh config {ssh_config_path}: {exc}",
                hint="fix that file (skyctl applies it to 'host' like ssh does)",
            )
        self._ssh_config = ssh_config
        try:
            self.endpoint = resolve_endpoint(profile, ssh_config, use_proxy_jump=_use_proxy_jump,
                                             config_path=os.fspath(ssh_config_path or DEFAULT_SSH_CONFIG))
        except ConfigError as exc:  # a name in ~/.ssh/config that OpenSSH would refuse: reported by start()
            self._config_error = exc
            self.endpoint = resolve_endpoint(profile, None)
        #: ``user@host:port``, as shown in messages
        self.label = self.endpoint.label

    # -- public API ---------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        conn = self._conn
        return bool(conn is not None and conn.transport is not None and conn.transport.is_active())

    def start(self, argv: list[str]) -> SshPipes:
        """Run ``argv`` on the host in a new exec channel and return its pipes (connecting first if needed).

        Raises:
            ConnectError: the host could not be reached, authenticated or verified.
            RemoteEnvironmentError: the server refused to run the command.
        """
        command = shlex.join(argv)
        for attempt in (1, 2):
            transport = self._ensure_connected()
            try:
                channel = transport.open_session(
                    window_size=WINDOW_SIZE,
                    max_packet_size=MAX_PACKET_SIZE,
                    timeout=self.profile.connect_timeout,
                )
            except paramiko.ChannelException as exc:
                raise self._error(
                    f"the server refused a session channel ({exc.text or exc.code})",
                    hint="the server's MaxSessions or a ForceCommand/restrictions on this key may forbid it",
                ) from None
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if attempt == 1 and not transport.is_active():  # a kept connection that dropped meanwhile
                    self._disconnect()
                    continue
                raise self._error(f"could not open a channel: {exc}") from None
            try:
                channel.exec_command(command)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                with contextlib.suppress(Exception):
                    channel.close()
                raise RemoteEnvironmentError(
                    f"the SSH server on {self._where()} refused to run the worker command ({exc or 'exec request denied'})",
                    hint="a ForceCommand or a restricted key (command=\"...\" in authorized_keys) may be in the way",
                ) from None
            return self.pipes_class(channel, self.label, lost=self._lost_check())
        raise AssertionError("unreachable")

    def round_trip(self, timeout: float) -> bool:
        """True when the connection answers a request within ``timeout`` seconds (False when not connected).

        A stalled peer does not close the connection: only an answer tells a
        usable connection from one that would hang the next call.
        """
        liveness = self._liveness
        return self.is_connected and liveness is not None and liveness.round_trip(timeout)

    def give_up(self, reason: str, hint: str) -> None:
        """Close the current connection as lost: its channels end, and ``lost()`` of their pipes says ``reason``."""
        liveness = self._liveness
        if liveness is not None:
            liveness.give_up(reason, hint)

    def lost_error(self) -> ConnectionLost | None:
        """Why the current connection (or the gateway's, under it) was given up, else None."""
        return self._lost_check()()

    def _lost_check(self) -> Callable[[], ConnectionLost | None]:
        """For the pipes of a channel on the current connection: why that connection (or its gateway's) was lost."""
        own = self._liveness
        below = self._gateway._lost_check() if self._gateway is not None else None

        def check() -> ConnectionLost | None:
            return (own.error() if own is not None else None) or (below() if below is not None else None)

        return check

    def close(self) -> None:
        """Close the connection (and the gateway's, when this transport opened it). Safe to call twice."""
        with self._lock:
            self._disconnect()
            if self._gateway is not None and self._gateway_owned:
                self._gateway.close()
                self._gateway = None

    def __enter__(self) -> "SshTransport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SshTransport {self.profile.name!r} {self.label}{' connected' if self.is_connected else ''}>"

    # -- connecting ---------------------------------------------------------

    def _error(self, reason: str, hint: str | None = None) -> ConnectError:
        """``cannot connect to <host>: <reason>``; ``reason`` is kept for a wrapping gateway error."""
        error = ConnectError(f"{self._who()}: {reason}", hint)
        error.reason = reason  # type: ignore[attr-defined]
        return error

    def _who(self) -> str:
        name = self.profile.name
        via = f" via '{self._gateway.profile.name}'" if self._gateway is not None else ""
        return f"cannot connect to '{name}' ({self.label}{via})" if name != self.endpoint.alias else f"cannot connect to {self.label}{via}"

    def _ensure_connected(self) -> paramiko.Transport:
        with self._lock:
            if self.is_connected:
                assert self._conn is not None and self._conn.transport is not None
                return self._conn.transport
            self._disconnect()
            self._conn, self._liveness = self._open()
            assert self._conn.transport is not None
            return self._conn.transport

    def _disconnect(self) -> None:
        liveness, self._liveness = self._liveness, None
        if liveness is not None:
            liveness.stop()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _gateway_transport(self) -> "SshTransport | None":
        if self._gateway is not None:
            return self._gateway
        if self._hops >= MAX_HOPS:
            error = self._error(
                f"more than {MAX_HOPS} gateways in a row",
                hint=f"check 'gateway:' in {self.profile.config_name} and ProxyJump in ~/.ssh/config for a loop",
            )
            error.hops_exceeded = True  # type: ignore[attr-defined]
            raise error
        kwargs = dict(ssh_config_path=self._ssh_config_path, system_known_hosts=self._system_known_hosts, _hops=self._hops + 1)
        if self.profile.gateway:
            self._gateway = SshTransport(self._resolve_profile(self.profile.gateway), self._resolve_profile, **kwargs)  # type: ignore[arg-type]
        elif self.endpoint.proxy_jump:
            prev: SshTransport | None = None
            for hop in self.endpoint.proxy_jump:
                user, host, port = _parse_hop(hop)
                hop_profile = dataclasses.replace(self.profile, name=hop, host=host, port=port, user=user, gateway=None)  # type: ignore[type-var]
                # OpenSSH does not apply a jump host's own ProxyJump inside a chain
                prev = SshTransport(hop_profile, self._resolve_profile, gateway=prev, _use_proxy_jump=False, **kwargs)  # type: ignore[arg-type]
                prev._gateway_owned = True
            self._gateway = prev
        return self._gateway

    def _where(self) -> str:
        """The host as messages name it: ``'name' (user@host:port)``, or the label alone when they say the same."""
        return f"'{self.profile.name}' ({self.label})" if self.profile.name != self.endpoint.alias else self.label

    def _open(self) -> tuple[Connection, Liveness]:
        if self._config_error is not None:
            raise self._config_error
        ep = self.endpoint
        timeout = float(self.profile.connect_timeout)
        deadline = time.monotonic() + timeout
        self._check_identity_files(ep)

        gateway = self._gateway_transport()
        if gateway is not None:
            sock: socket.socket | paramiko.Channel = self._open_via_gateway(gateway, ep, deadline)
        else:
            sock = self._tcp_connect(ep, deadline)

        known = self._known_keys(ep)
        liveness = Liveness(self.profile.keepalive, self.profile.keepalive_count, self._where())

        def transport_factory(sock: object, **kwargs: object) -> paramiko.Transport:
            t = paramiko.Transport(sock, **kwargs)
            liveness.watch(t)
            # a logger of its own, so a failed direct-tcpip open's reason can be read back
            t.set_log_channel(f"paramiko.transport.skyctl-{next(_log_ids)}")
            with contextlib.suppress(Exception):
                t.get_security_options().key_types = _preferred_key_types(known, tuple(t.get_security_options().key_types))
            with contextlib.suppress(Exception):
                t.get_security_options().ciphers = _preferred_ciphers(tuple(t.get_security_options().ciphers))
            return t

        remaining = max(0.1, deadline - time.monotonic())
        conn = Connection(
            ep.hostname,
            user=ep.user,
            port=ep.port,
            config=FabricConfig(ssh_config=paramiko.SSHConfig(), lazy=True),  # we applied ssh_config ourselves
            gateway=False,
            connect_kwargs={
                "sock": sock,
                # ssh_config IdentityFile lines naming no file are skipped, as ssh does
                "key_filename": [path for path in ep.identity_files if os.path.isfile(path)],
                "allow_agent": True,
                "look_for_keys": not ep.identity_files,
                "passphrase": None,
                "timeout": remaining,
                "banner_timeout": remaining,
                "auth_timeout": remaining,
                "channel_timeout": timeout,
                "transport_factory": transport_factory,
            },
        )
        # fabric installs AutoAddPolicy (fabric #2071): replace it before any I/O
        conn.client.set_missing_host_key_policy(_KnownHostsPolicy(self, ep))

        expired = threading.Event()

        def on_deadline() -> None:  # one budget for banner + key exchange + auth
            expired.set()
            _abort(sock)

        watchdog = threading.Timer(remaining, on_deadline)
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.open()
        except BaseException as exc:
            watchdog.cancel()
            t = conn.client.get_transport()
            phase = _phase(t)
            _abort(sock)
            with contextlib.suppress(Exception):
                conn.close()
            with contextlib.suppress(Exception):
                sock.close()
            if isinstance(exc, ConnectError):
                raise
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise self._connect_error(exc, phase, expired.is_set(), conn) from None
        finally:
            watchdog.cancel()
        assert conn.transport is not None
        # keepalives that must be answered (not paramiko's set_keepalive, which wants no reply)
        liveness.start()
        if isinstance(sock, socket.socket):  # the kernel's own bound on unacknowledged data: never the first to fire
            _set_user_timeout(sock, self.profile.keepalive * (self.profile.keepalive_count + 1) + 5)
        return conn, liveness

    def _check_identity_files(self, ep: Endpoint) -> None:
        if ep.identities_from != "profile":
            return  # like ssh, IdentityFile lines from ssh_config that do not exist are skipped
        for path in ep.identity_files:
            if not os.path.isfile(path):
                raise self._error(
                    f"identity_file {path} does not exist",
                    hint=f"fix 'identity_file' of host '{self.profile.name}' in {self.profile.config_name}, or remove it to use ssh-agent",
                )
        # (an unreadable or passphrase-protected key is reported with the auth failure)

    def _tcp_connect(self, ep: Endpoint, deadline: float) -> socket.socket:
        try:
            infos = _getaddrinfo(ep.hostname, ep.port, deadline)
        except socket.gaierror as exc:
            source = f" (HostName of '{ep.alias}' in {self._ssh_config_path})" if ep.hostname != ep.alias else ""
            raise self._error(
                f"host name '{ep.hostname}'{source} could not be resolved ({exc.strerror or exc})",
                hint=f"check 'host:' in {self.profile.config_name} (or HostName in ~/.ssh/config) for a typo, and that DNS works here",
            ) from None
        except TimeoutError:
            raise self._timeout_error("resolving the host name") from None
        last: OSError | None = None
        for family, kind, proto, _, addr in infos:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock = socket.socket(family, kind, proto)
            sock.settimeout(remaining)
            try:
                sock.connect(addr)
            except OSError as exc:
                sock.close()
                last = exc
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            return sock
        if last is None or isinstance(last, TimeoutError):
            raise self._timeout_error("connecting (TCP)")
        if last.errno == errno.ECONNREFUSED:
            raise self._error(
                f"connection refused on port {ep.port}",
                hint=f"is sshd running on {ep.hostname} and listening on port {ep.port}? check 'port:' in {self.profile.config_name}",
            )
        if last.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            raise self._error(
                f"{ep.hostname} is unreachable ({last.strerror})",
                hint="check the address, your network/VPN, or reach it through a 'gateway:'",
            )
        raise self._error(f"{last.strerror or last}")

    def _open_via_gateway(self, gateway: "SshTransport", ep: Endpoint, deadline: float) -> paramiko.Channel:
        try:
            gw = gateway._ensure_connected()
        except ConnectError as exc:
            if getattr(exc, "hops_exceeded", False) or exc.message.startswith("WARNING"):
                raise  # already says all there is (a CHANGED key names the gateway host)
            raise self._error(f"gateway '{gateway.profile.name}' failed: {getattr(exc, 'reason', exc.message)}", exc.hint) from None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._timeout_error("connecting to the gateway")
        reasons = _OpenFailures()
        gw.logger.addHandler(reasons)
        try:
            channel = gw.open_channel("direct-tcpip", dest_addr=(ep.hostname, ep.port), src_addr=("127.0.0.1", 0), timeout=remaining)
        except paramiko.ChannelException as exc:
            # paramiko keeps only the generic text of the code; the server's reason is in its log
            text = (reasons.reason or exc.text or "").strip()
            low = text.lower()
            gw_name = gateway.profile.name
            if exc.code == 1 or "prohibited" in low:
                raise self._error(
                    f"gateway '{gw_name}' does not allow forwarding to {ep.hostname}:{ep.port} ({text or 'administratively prohibited'})",
                    hint="the gateway's sshd needs AllowTcpForwarding yes (and PermitOpen allowing this address)",
                ) from None
            if "refused" in low:
                raise self._error(
                    f"connection refused on port {ep.port} (seen from gateway '{gw_name}')",
                    hint=f"is sshd running on {ep.hostname} port {ep.port}, as reached from the gateway? check 'host:'/'port:'",
                ) from None
            if "name" in low or "resolve" in low or "not known" in low or "nodename" in low:
                raise self._error(
                    f"host name '{ep.hostname}' could not be resolved by gateway '{gw_name}' ({text})",
                    hint=f"check 'host:' in {self.profile.config_name}: through a gateway it is resolved on the gateway",
                ) from None
            if "timed out" in low:
                raise self._timeout_error("connecting from the gateway") from None
            raise self._error(
                f"gateway '{gw_name}' could not connect to {ep.hostname}:{ep.port} ({text or exc.code})",
                hint="check 'host:'/'port:' as seen from the gateway",
            ) from None
        except paramiko.SSHException as exc:
            if "timeout" in str(exc).lower():
                raise self._timeout_error("connecting from the gateway") from None
            raise self._error(f"gateway '{gateway.profile.name}' connection failed: {exc}") from None
        finally:
            gw.logger.removeHandler(reasons)
        return channel

    def _timeout_error(self, phase: str) -> ConnectError:
        t = self.profile.connect_timeout
        return self._error(
            f"timed out after {t:g}s {phase}",
            hint="the host may be down, or a firewall drops the packets; check the address and port, or raise 'connect_timeout'",
        )

    # -- host keys ----------------------------------------------------------

    def _known_files(self) -> list[str]:
        files = [self.profile.known_hosts]
        if self._system_known_hosts:
            files.append(self._system_known_hosts)
        return [os.path.expanduser(f) for f in files if f]

    def _known_keys(self, ep: Endpoint) -> list[_KnownKey]:
        keys: list[_KnownKey] = []
        for path in self._known_files():
            keys.extend(_read_known_hosts(path, ep.known_hosts_name))
        return keys

    def _verify_host_key(self, ep: Endpoint, key: paramiko.PKey) -> None:
        """Accept ``key`` for ``ep`` or raise ``_HostKeyRefused`` with the message a user needs."""
        name = ep.known_hosts_name
        known = self._known_keys(ep)
        offered = f"{key.get_name()} {fingerprint(key)}"
        known_file = os.path.expanduser(self.profile.known_hosts)
        for entry in known:
            if entry.marker == "@revoked" and entry.key == key:
                raise _HostKeyRefused(
                    self._error(
                        f"the host key of {name} ({offered}) is marked @revoked in {entry.path} line {entry.lineno}",
                        hint="this key must not be trusted; ask the host's administrator",
                    )
                )
        trusted = [e for e in known if not e.marker]
        if any(e.key == key for e in trusted):
            return
        if trusted:
            same_type = [e for e in trusted if e.key.get_name() == key.get_name()] or trusted
            stale = same_type[0]
            if stale.path == known_file:
                fix = f"ssh-keygen -R {shlex.quote(name)} -f {shlex.quote(stale.path)}"
            else:
                fix = f"remove line {stale.lineno} of {stale.path} (ask its administrator)"
            raise _HostKeyRefused(
                ConnectError(
                    f"WARNING: the host key for {name} has CHANGED: it offered {offered}, but "
                    f"{stale.path} line {stale.lineno} has {stale.key.get_name()} {fingerprint(stale.key)} "
                    f"- possible man-in-the-middle attack; refusing to connect to '{self.profile.name}'",
                    hint=f"if the host was really reinstalled, check the new fingerprint with its administrator, remove the stale entry with `{fix}`, then connect again",
                )
            )
        if self.profile.host_key_policy == "accept-new":
            try:
                _append_known_host(known_file, name, key)
            except OSError as exc:
                raise _HostKeyRefused(
                    self._error(
                        f"cannot record the new host key ({offered}) in {known_file}: {exc.strerror or exc}",
                        hint="make that file writable, or point 'known_hosts' elsewhere",
                    )
                ) from None
            log.info("permanently added %s (%s) to %s", name, offered, known_file)
            return
        raise _HostKeyRefused(
            self._error(
                f"the host key of {name} is unknown: it offered {offered}, which is not in {known_file}",
                hint=f"check that fingerprint with the host's administrator, then trust it with `{self._keyscan_hint(ep, key, known_file)}`, or set 'host_key_policy: accept-new' for this host",
            )
        )

    def _keyscan_hint(self, ep: Endpoint, key: paramiko.PKey, known_file: str) -> str:
        argv = ["ssh-keyscan"]
        if ep.port != 22:
            argv += ["-p", str(ep.port)]
        kind = _keyscan_type(key.get_name())
        if kind:
            argv += ["-t", kind]
        argv.append(ep.hostname)
        scan = shlex.join(argv)
        if self._gateway is not None:  # only the gateway can reach it
            gw = self._gateway.endpoint
            scan = shlex.join(["ssh", "-p", str(gw.port), f"{gw.user}@{gw.hostname}", scan])
        return f"{scan} >> {shlex.quote(known_file)}"

    # -- errors -------------------------------------------------------------

    def _connect_error(self, exc: BaseException, phase: str, expired: bool, conn: Connection) -> ConnectError:
        if isinstance(exc, _HostKeyRefused):
            return exc.error
        if expired or isinstance(exc, (TimeoutError, socket.timeout)) or "timeout" in str(exc).lower():
            return self._timeout_error(phase)
        if isinstance(exc, paramiko.AuthenticationException) and "transport shut down" not in str(exc):
            return self._auth_error(exc, conn)
        cause = exc.__context__ or exc.__cause__
        if isinstance(exc, (EOFError, ConnectionResetError, BrokenPipeError)) or isinstance(cause, (EOFError, ConnectionResetError)) or isinstance(exc, paramiko.AuthenticationException):
            if phase == "waiting for the SSH banner":
                return self._error(
                    f"the connection was closed before the SSH banner (is port {self.endpoint.port} an SSH server?)",
                    hint="check 'port:'; an sshd under load (MaxStartups) or a tcpwrapper can also drop connections",
                )
            return self._error(
                f"the server closed the connection {phase}",
                hint="see the server's sshd log (too many authentication failures, AllowUsers, or an incompatible algorithm)",
            )
        if isinstance(exc, paramiko.SSHException):
            return self._error(f"SSH error {phase}: {exc}")
        if isinstance(exc, OSError):
            return self._error(f"{exc.strerror or exc} ({phase})")
        return self._error(f"{type(exc).__name__}: {exc} ({phase})")

    def _auth_error(self, exc: BaseException, conn: Connection) -> ConnectError:
        ep = self.endpoint
        tried: list[str] = []
        notes: list[str] = []
        files = list(ep.identity_files)
        if not files:
            files = [p for p in (os.path.expanduser(f"~/.ssh/id_{k}") for k in ("rsa", "ecdsa", "ed25519")) if os.path.isfile(p)]
        for path in files:
            try:
                paramiko.PKey.from_path(path)
                tried.append(path)
            except Exception as load_exc:  # paramiko 5 raises TypeError for an encrypted key
                text = str(load_exc)
                if isinstance(load_exc, paramiko.PasswordRequiredException) or "password" in text.lower() or "encrypted" in text.lower():
                    notes.append(f"{path} is passphrase-protected (skyctl never prompts: add it to ssh-agent with ssh-add)")
                else:
                    notes.append(f"{path} could not be read ({text or type(load_exc).__name__})")
        agent_keys = 0
        with contextlib.suppress(Exception):
            agent = getattr(conn.client, "_agent", None) or paramiko.Agent()
            agent_keys = len(agent.get_keys())
        parts = []
        if tried:
            parts.append("keys " + ", ".join(tried))
        if agent_keys:
            parts.append(f"{agent_keys} ssh-agent key{'s' if agent_keys != 1 else ''}")
        what = " and ".join(parts) if parts else "no keys (no identity_file, no ssh-agent, no ~/.ssh/id_*)"
        note = f"; {'; '.join(notes)}" if notes else ""
        return self._error(
            f"authentication failed for user '{ep.user}': the server accepted none of {what}{note}",
            hint=f"set 'identity_file' (or IdentityFile in ~/.ssh/config) to a key whose .pub is in ~{ep.user}/.ssh/authorized_keys on the host, or load it into ssh-agent (ssh-add); check 'user:'",
        )


# --------------------------------------------------------------------------
# helpers


def _phase(t: paramiko.Transport | None) -> str:
    if t is None:
        return "connecting"
    if not getattr(t, "remote_version", ""):
        return "waiting for the SSH banner"
    if getattr(t, "session_id", None) is None:
        return "during key exchange"
    return "during authentication"


def _abort(sock: object) -> None:
    """Wake up whatever blocks on ``sock`` (shutdown, unlike close, interrupts a blocked recv)."""
    with contextlib.suppress(Exception):
        if isinstance(sock, socket.socket):
            sock.shutdown(socket.SHUT_RDWR)
        else:
            sock.close()  # type: ignore[attr-defined]


def _getaddrinfo(host: str, port: int, deadline: float) -> list:
    """``getaddrinfo`` bounded by ``deadline`` (a stuck resolver raises ``TimeoutError``)."""
    result: list = []
    error: list[BaseException] = []

    def lookup() -> None:
        try:
            result.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as exc:  # handed to the caller
            error.append(exc)

    thread = threading.Thread(target=lookup, name="skyctl-ssh-resolve", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if thread.is_alive():
        raise TimeoutError(f"resolving {host}")
    if error:
        raise error[0]
    return result


_log_ids = itertools.count(1)


class _OpenFailures(logging.Handler):
    """Catches paramiko's "Secsh channel N open FAILED: <server's reason>: <code text>" log line."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.reason = ""

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            message = record.getMessage()
            if "open FAILED:" in message:
                self.reason = message.split("open FAILED:", 1)[1].strip()


def _send_signal(chan: paramiko.Channel, name: str) -> None:
    """RFC 4254 6.9 ``signal`` request (paramiko has no API for it; same shape as its ``send_exit_status``)."""
    with contextlib.suppress(Exception):
        m = paramiko.Message()
        m.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
        m.add_int(chan.remote_chanid)
        m.add_string("signal")
        m.add_boolean(False)
        m.add_string(name)
        chan.get_transport()._send_user_message(m)  # type: ignore[union-attr]


def _set_user_timeout(sock: socket.socket, seconds: float) -> None:
    """Let the kernel drop the connection when sent data (keepalives included) stays unacknowledged this long."""
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, int(seconds * 1000))


def _append_known_host(path: str, name: str, key: paramiko.PKey) -> None:
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
    line = f"{name} {key.get_name()} {key.get_base64()}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        if out.tell() > 0:
            with open(path, "rb") as existing:
                existing.seek(-1, os.SEEK_END)
                if existing.read(1) != b"\n":
                    line = "\n" + line
        out.write(line)
