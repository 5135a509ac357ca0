"""Host keys, verified as OpenSSH does: known_hosts files, ``strict`` or ``accept-new``.

Keys are looked up in the profile's ``known_hosts`` and the system
``/etc/ssh/ssh_known_hosts`` (hashed names, patterns and ``@revoked``
understood). ``strict``: an unknown key is refused; ``accept-new``: it is
accepted and appended to ``known_hosts``. A key that differs from a known one
is always refused. fabric's ``Connection`` installs ``AutoAddPolicy``: the
connection replaces it with ``HostKeyCheck.policy()`` before any I/O.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import logging
import os
import shlex
from dataclasses import dataclass
from typing import Callable

import paramiko

from ...errors import ConnectError
from .endpoint import Endpoint
from .failures import HostKeyRefused, SshConnectError

__all__ = ["SYSTEM_KNOWN_HOSTS", "HostKeyCheck", "KnownKey", "fingerprint", "preferred_key_types", "read_known_hosts"]

log = logging.getLogger("skyctl.ssh")

#: known_hosts shared by all users, read in addition to the profile's
SYSTEM_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:...`` as OpenSSH prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class KnownKey:
    """One known_hosts line that applies to the host."""

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


def read_known_hosts(path: str, name: str) -> list[KnownKey]:
    """Entries of ``path`` that apply to ``name`` (unreadable file or bad lines: skipped)."""
    found: list[KnownKey] = []
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
                found.append(KnownKey(path, lineno, marker, key))
    except OSError:
        pass
    return found


def preferred_key_types(known: list[KnownKey], available: tuple[str, ...]) -> list[str]:
    """Host key algorithms with the types already known for this host first (as OpenSSH orders them)."""
    first: list[str] = []
    for entry in known:
        name = entry.key.get_name()
        for alg in (("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa") if name == "ssh-rsa" else (name,)):
            if alg in available and alg not in first:
                first.append(alg)
    return first + [alg for alg in available if alg not in first]


class HostKeyCheck:
    """The host key check of one connection attempt to ``endpoint``.

    Args:
        endpoint: where the connection goes (its ``known_hosts_name`` is looked up).
        known_hosts: the profile's known_hosts file (appended to under ``accept-new``).
        system_known_hosts: read besides it (None: none).
        policy: the profile's ``host_key_policy``: ``strict`` or ``accept-new``.
        host: how the refusal of a changed key names the host (the profile's name).
        error: makes the ``cannot connect to <host>: <reason>`` error.
        gateway: the gateway's endpoint when only it can reach the host (for the ``ssh-keyscan`` hint).
    """

    def __init__(self, endpoint: Endpoint, known_hosts: str, system_known_hosts: str | None, policy: str, host: str,
                 error: Callable[[str, str | None], ConnectError], gateway: Endpoint | None = None) -> None:
        self.endpoint = endpoint
        self.known_file = os.path.expanduser(known_hosts)
        self.files = [os.path.expanduser(f) for f in (known_hosts, system_known_hosts) if f]
        self.policy_name = policy
        self.host = host
        self.error = error
        self.gateway = gateway

    def known(self) -> list[KnownKey]:
        """Every entry of the known_hosts files for this host."""
        keys: list[KnownKey] = []
        for path in self.files:
            keys.extend(read_known_hosts(path, self.endpoint.known_hosts_name))
        return keys

    def policy(self) -> paramiko.MissingHostKeyPolicy:
        """For paramiko: every host key check goes through ``verify`` (the client's own table stays empty)."""
        check = self

        class _Policy(paramiko.MissingHostKeyPolicy):
            def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
                check.verify(key)

        return _Policy()

    def verify(self, key: paramiko.PKey) -> None:
        """Accept ``key`` or raise ``HostKeyRefused`` with the message a user needs."""
        name = self.endpoint.known_hosts_name
        known = self.known()
        offered = f"{key.get_name()} {fingerprint(key)}"
        known_file = self.known_file
        for entry in known:
            if entry.marker == "@revoked" and entry.key == key:
                raise HostKeyRefused(self.error(
                    f"the host key of {name} ({offered}) is marked @revoked in {entry.path} line {entry.lineno}",
                    "this key must not be trusted; ask the host's administrator",
                ))
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
            raise HostKeyRefused(SshConnectError(
                f"WARNING: the host key for {name} has CHANGED: it offered {offered}, but "
                f"{stale.path} line {stale.lineno} has {stale.key.get_name()} {fingerprint(stale.key)} "
                f"- possible man-in-the-middle attack; refusing to connect to '{self.host}'",
                hint=f"if the host was really reinstalled, check the new fingerprint with its administrator, remove the stale entry with `{fix}`, then connect again",
                final=True,
            ))
        if self.policy_name == "accept-new":
            try:
                _append_known_host(known_file, name, key)
            except OSError as exc:
                raise HostKeyRefused(self.error(
                    f"cannot record the new host key ({offered}) in {known_file}: {exc.strerror or exc}",
                    "make that file writable, or point 'known_hosts' elsewhere",
                )) from None
            log.info("permanently added %s (%s) to %s", name, offered, known_file)
            return
        raise HostKeyRefused(self.error(
            f"the host key of {name} is unknown: it offered {offered}, which is not in {known_file}",
            f"check that fingerprint with the host's administrator, then trust it with `{self._keyscan_hint(key)}`, or set 'host_key_policy: accept-new' for this host",
        ))

    def _keyscan_hint(self, key: paramiko.PKey) -> str:
        ep = self.endpoint
        argv = ["ssh-keyscan"]
        if ep.port != 22:
            argv += ["-p", str(ep.port)]
        kind = _keyscan_type(key.get_name())
        if kind:
            argv += ["-t", kind]
        argv.append(ep.hostname)
        scan = shlex.join(argv)
        if self.gateway is not None:  # only the gateway can reach it
            gw = self.gateway
            scan = shlex.join(["ssh", "-p", str(gw.port), f"{gw.user}@{gw.hostname}", scan])
        return f"{scan} >> {shlex.quote(self.known_file)}"


def _keyscan_type(key_name: str) -> str | None:
    if key_name == "ssh-ed25519":
        return "ed25519"
    if key_name.startswith("ecdsa-"):
        return "ecdsa"
    if key_name in ("ssh-rsa", "rsa-sha2-256", "rsa-sha2-512"):
        return "rsa"
    return None


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
