"""The connection to one SSH host: ``SshTransport``, the object the rest of skyctl holds.

Public surface (fabric's ``Connection``, kept small): ``start(argv)`` runs a
command in a fresh exec channel and returns its ``SshPipes``; ``connect()``
connects now (``start`` does it on first use, and reconnects a connection
that dropped in between); ``round_trip``/``give_up``/``lost_error`` are the
liveness hooks a kept connection's holder uses; ``close()``; ``label``,
``endpoint``, ``profile``, ``is_connected``.

Connecting: the profile resolved against ``~/.ssh/config`` (``endpoint``),
TCP (or a ``direct-tcpip`` tunnel through the gateway's own transport,
``gateway:`` or ProxyJump), then fabric/paramiko for the handshake with the
host key check of ``hostkeys`` and keys only (identity files, then
ssh-agent; ``~/.ssh/id_*`` only when no identity file is configured; nothing
ever prompts). ``connect_timeout`` bounds TCP connect, banner, key exchange
and authentication together. Every failure becomes the error of its row in
``failures.FAILURES``. (Not fabric's ``run(in_stream=...)`` for commands:
invoke feeds stdin with a sleep per read.)

Threads: ``skyctl-ssh-resolve`` (a bounded ``getaddrinfo``) and
``skyctl-ssh-connect-deadline`` (the handshake's watchdog), besides those of
``liveness`` and ``pipes``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import logging
import os
import shlex
import socket
import threading
import time
from typing import TYPE_CHECKING, Callable

import paramiko
from fabric import Config as FabricConfig
from fabric import Connection

from ..base import ClosedOnExit
from ...errors import ConfigError, ConnectError, ConnectionLost, SkyctlError
from .endpoint import DEFAULT_SSH_CONFIG, Endpoint, load_ssh_config, parse_hop, resolve_endpoint
from .failures import Explained, Facts, HostKeyRefused, OpenFailures, SshConnectError, Stage, explain
from .hostkeys import SYSTEM_KNOWN_HOSTS, HostKeyCheck, preferred_key_types
from .liveness import Liveness, set_user_timeout
from .pipes import SshPipes
from .readahead import ReadAheadSocket

if TYPE_CHECKING:
    from ...config import HostProfile

__all__ = ["MAX_HOPS", "SshTransport"]

log = logging.getLogger("skyctl.ssh")
# paramiko logs failed handshakes with tracebacks at ERROR; with no handler
# configured Python would print them on stderr. An app that configures
# logging (``--verbose``) still gets them through propagation.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

#: receive window of an exec channel: how much the remote may send before we
#: read. Large enough for a high-latency link (paramiko's default is 2 MiB);
#: it is also the most a slow reader lets pile up in memory per channel.
WINDOW_SIZE = 8 * 1024 * 1024
#: largest packet we accept on the channel
MAX_PACKET_SIZE = 64 * 1024
#: a chain of gateways longer than this is a loop
MAX_HOPS = 8
#: ciphers offered first when paramiko has them: AEAD, so no separate HMAC pass
#: over every byte (about 40% less CPU per byte moved than aes-ctr + hmac-sha2)
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")

_log_ids = itertools.count(1)


class SshTransport(ClosedOnExit):
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
            ssh_config = load_ssh_config(ssh_config_path)
        except Exception as exc:  # a malformed ~/.ssh/config: reported by start()
            ssh_config = None
            self._config_error = SshConnectError(
                f"cannot read ssh config {ssh_config_path}: {exc}",
                hint="fix that file (skyctl applies it to 'host' like ssh does)",
            )
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

    def connect(self) -> None:
        """Connect now, unless connected (``start`` does it on first use).

        Raises:
            ConnectError: the host could not be reached, authenticated or verified.
            ConfigError: ``~/.ssh/config`` gives a name OpenSSH would refuse.
        """
        self._ensure_connected()

    def start(self, argv: list[str]) -> SshPipes:
        """Run ``argv`` on the host in a new exec channel and return its pipes (connecting first if needed).

        Raises:
            ConnectError: the host could not be reached, authenticated or verified
                (``SessionRefused``: it allows no more sessions on this connection).
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
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if attempt == 1 and not transport.is_active() and not isinstance(exc, paramiko.ChannelException):
                    self._disconnect()  # a kept connection that dropped meanwhile
                    continue
                raise self._fail(Stage.SESSION, exc) from None
            try:
                channel.exec_command(command)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                with contextlib.suppress(Exception):
                    channel.close()
                raise self._fail(Stage.EXEC, exc) from None
            return SshPipes(channel, self.label, lost=self._lost_check())
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

    def close(self) -> None:
        """Close the connection (and the gateway's, when this transport opened it). Safe to call twice."""
        with self._lock:
            self._disconnect()
            if self._gateway is not None and self._gateway_owned:
                self._gateway.close()
                self._gateway = None


    def __repr__(self) -> str:
        return f"<SshTransport {self.profile.name!r} {self.label}{' connected' if self.is_connected else ''}>"

    # -- errors -------------------------------------------------------------

    def _lost_check(self) -> Callable[[], ConnectionLost | None]:
        """For the pipes of a channel on the current connection: why that connection (or its gateway's) was lost."""
        own = self._liveness
        below = self._gateway._lost_check() if self._gateway is not None else None

        def check() -> ConnectionLost | None:
            return (own.error() if own is not None else None) or (below() if below is not None else None)

        return check

    def _error(self, reason: str, hint: str | None = None, *, cls: type[SshConnectError] = SshConnectError,
               final: bool = False) -> SshConnectError:
        """``cannot connect to <host>: <reason>``; ``reason`` is kept for a wrapping gateway error."""
        return cls(f"{self._who()}: {reason}", hint, reason=reason, final=final)

    def _fail(self, stage: Stage, exc: BaseException, *, text: str | None = None, **facts: object) -> SkyctlError:
        """The error ``failures.FAILURES`` gives ``exc`` at ``stage``."""
        ep = self.endpoint
        gateway = self._gateway.profile.name if self._gateway is not None else ""
        known = Facts(hostname=ep.hostname, port=ep.port, user=ep.user, alias=ep.alias, where=self._where(),
                      config_name=self.profile.config_name, timeout=self.profile.connect_timeout, gateway=gateway,
                      ssh_config=self._ssh_config_path, phase=stage.value, source="")
        known.update(facts)
        found: Explained = explain(stage, exc, known, text=text)
        if issubclass(found.error, ConnectError):  # the host in front, the reason kept for a gateway's error
            return self._error(found.message, found.hint,
                               cls=found.error if issubclass(found.error, SshConnectError) else SshConnectError)
        return found.error(found.message, found.hint)

    def _who(self) -> str:
        name = self.profile.name
        via = f" via '{self._gateway.profile.name}'" if self._gateway is not None else ""
        return f"cannot connect to '{name}' ({self.label}{via})" if name != self.endpoint.alias else f"cannot connect to {self.label}{via}"

    def _where(self) -> str:
        """The host as messages name it: ``'name' (user@host:port)``, or the label alone when they say the same."""
        return f"'{self.profile.name}' ({self.label})" if self.profile.name != self.endpoint.alias else self.label

    # -- connecting ---------------------------------------------------------

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
        """Forget the current connection (stopping its keepalives) and close it."""
        liveness, conn = self._liveness, self._conn
        self._liveness = self._conn = None
        if liveness is not None:
            liveness.stop()
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _gateway_transport(self) -> "SshTransport | None":
        if self._gateway is not None:
            return self._gateway
        if self._hops >= MAX_HOPS:
            raise self._error(
                f"more than {MAX_HOPS} gateways in a row",
                hint=f"check 'gateway:' in {self.profile.config_name} and ProxyJump in ~/.ssh/config for a loop",
                final=True,
            )
        kwargs = dict(ssh_config_path=self._ssh_config_path, system_known_hosts=self._system_known_hosts, _hops=self._hops + 1)
        if self.profile.gateway:
            self._gateway = SshTransport(self._resolve_profile(self.profile.gateway), self._resolve_profile, **kwargs)  # type: ignore[arg-type]
        elif self.endpoint.proxy_jump:
            prev: SshTransport | None = None
            for hop in self.endpoint.proxy_jump:
                user, host, port = parse_hop(hop)
                hop_profile = dataclasses.replace(self.profile, name=hop, host=host, port=port, user=user, gateway=None)  # type: ignore[type-var]
                # OpenSSH does not apply a jump host's own ProxyJump inside a chain
                prev = SshTransport(hop_profile, self._resolve_profile, gateway=prev, _use_proxy_jump=False, **kwargs)  # type: ignore[arg-type]
                prev._gateway_owned = True
            self._gateway = prev
        return self._gateway

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

        host_keys = HostKeyCheck(ep, self.profile.known_hosts, self._system_known_hosts, self.profile.host_key_policy,
                                 self.profile.name, self._error, gateway.endpoint if gateway is not None else None)
        known = host_keys.known()
        liveness = Liveness(self.profile.keepalive, self.profile.keepalive_count, self._where())

        def transport_factory(sock: object, **kwargs: object) -> paramiko.Transport:
            t = paramiko.Transport(ReadAheadSocket(sock) if isinstance(sock, socket.socket) else sock, **kwargs)
            liveness.watch(t)
            # a logger of its own, so a failed direct-tcpip open's reason can be read back
            t.set_log_channel(f"paramiko.transport.skyctl-{next(_log_ids)}")
            with contextlib.suppress(Exception):
                t.get_security_options().key_types = preferred_key_types(known, tuple(t.get_security_options().key_types))
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
        conn.client.set_missing_host_key_policy(host_keys.policy())

        expired = threading.Event()

        def on_deadline() -> None:  # one budget for banner + key exchange + auth
            expired.set()
            _abort(sock)

        watchdog = threading.Timer(remaining, on_deadline)
        watchdog.name = "skyctl-ssh-connect-deadline"
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.open()
        except BaseException as exc:
            watchdog.cancel()
            t = conn.client.get_transport()
            _abort(sock)
            with contextlib.suppress(Exception):
                conn.close()
            with contextlib.suppress(Exception):
                sock.close()
            if isinstance(exc, (ConnectError, KeyboardInterrupt, SystemExit)):
                raise
            if isinstance(exc, HostKeyRefused):
                raise exc.error from None
            raise self._handshake_error(TimeoutError() if expired.is_set() else exc, t, conn) from None
        finally:
            watchdog.cancel()
        assert conn.transport is not None
        # keepalives that must be answered (not paramiko's set_keepalive, which wants no reply)
        liveness.start()
        if isinstance(sock, socket.socket):  # the kernel's own bound on unacknowledged data: never the first to fire
            set_user_timeout(sock, self.profile.keepalive * (self.profile.keepalive_count + 1) + 5)
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
        except (socket.gaierror, TimeoutError) as exc:
            source = f" (HostName of '{ep.alias}' in {self._ssh_config_path})" if ep.hostname != ep.alias else ""
            raise self._fail(Stage.RESOLVE, exc, source=source) from None
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
        raise self._fail(Stage.TCP, last if last is not None else TimeoutError())

    def _open_via_gateway(self, gateway: "SshTransport", ep: Endpoint, deadline: float) -> paramiko.Channel:
        try:
            gw = gateway._ensure_connected()
        except SshConnectError as exc:
            if exc.final:
                raise  # already says all there is (a CHANGED key names the gateway host)
            raise self._error(f"gateway '{gateway.profile.name}' failed: {exc.reason}", exc.hint) from None
        except ConnectError as exc:
            raise self._error(f"gateway '{gateway.profile.name}' failed: {exc.message}", exc.hint) from None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._fail(Stage.GATEWAY, TimeoutError())
        reasons = OpenFailures()
        gw.logger.addHandler(reasons)
        try:
            channel = gw.open_channel("direct-tcpip", dest_addr=(ep.hostname, ep.port), src_addr=("127.0.0.1", 0), timeout=remaining)
        except paramiko.ChannelException as exc:
            raise self._fail(Stage.GATEWAY, exc, text=(reasons.reason or exc.text or "").strip() or str(exc.code)) from None
        except paramiko.SSHException as exc:
            raise self._fail(Stage.GATEWAY, exc) from None
        finally:
            gw.logger.removeHandler(reasons)
        return channel

    def _handshake_error(self, exc: BaseException, t: paramiko.Transport | None, conn: Connection) -> SkyctlError:
        """The error of a failed handshake, by how far it got (``t``: paramiko's transport, if it was made)."""
        if t is None:
            phase = "connecting"
        elif not getattr(t, "remote_version", ""):
            phase = "waiting for the SSH banner"
        elif getattr(t, "session_id", None) is None:
            phase = "during key exchange"
        else:
            phase = "during authentication"
        offered = functools.cache(lambda: self._keys_offered(conn))
        return self._fail(Stage.BANNER if phase == Stage.BANNER.value else Stage.HANDSHAKE, exc, phase=phase,
                          keys=lambda: offered()[0], notes=lambda: offered()[1])

    def _keys_offered(self, conn: Connection) -> tuple[str, str]:
        """For an authentication failure: which keys were offered, and notes on those that could not be."""
        tried: list[str] = []
        notes: list[str] = []
        files = list(self.endpoint.identity_files)
        if not files:
            files = [p for p in (os.path.expanduser(f"~/.ssh/id_{k}") for k in ("rsa", "ecdsa", "ed25519")) if os.path.isfile(p)]
        for path in files:
            try:
                paramiko.PKey.from_path(path)
                tried.append(path)
            except Exception as load_exc:  # paramiko 5 raises TypeError for an encrypted key
                notes.append(explain(Stage.KEY_FILE, load_exc, Facts(path=path)).message)
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
        return what, (f"; {'; '.join(notes)}" if notes else "")


# --------------------------------------------------------------------------
# helpers


def _preferred_ciphers(available: tuple[str, ...]) -> tuple[str, ...]:
    """paramiko's ciphers with ``FAST_CIPHERS`` moved to the front: the
    server picks the first it also allows, so a server without GCM still
    gets paramiko's usual choice."""
    first = tuple(name for name in FAST_CIPHERS if name in available)
    return first + tuple(name for name in available if name not in first)


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
