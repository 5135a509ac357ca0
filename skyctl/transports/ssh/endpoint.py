"""Where and as whom to connect: a profile resolved against ``~/.ssh/config``.

``~/.ssh/config`` applies to the profile's ``host`` as to an alias:
HostName, User, Port, IdentityFile and ProxyJump, each only where the
profile does not set the same thing (``gateway:`` replaces ProxyJump). Names
it gives (HostName, User, ProxyJump hops) are held to OpenSSH's rules, as the
profile's own are, before a hop is looked up again (where ``Match exec``
hands ``%h`` to a shell): a bad one is a ``ConfigError``. Pure: no network.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import paramiko

from ...config.names import HOST_RULES_HINT, USER_RULES_HINT, address_label, hostname_problem, user_problem
from ...errors import ConfigError

if TYPE_CHECKING:
    from ...config import HostProfile

__all__ = ["DEFAULT_SSH_CONFIG", "Endpoint", "load_ssh_config", "parse_hop", "resolve_endpoint"]

#: the user's OpenSSH client config
DEFAULT_SSH_CONFIG = "~/.ssh/config"


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
        """``user@host:port``, as messages show it."""
        return address_label(self.user, self.hostname, self.port)

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
        for hop_user, hop_host, _hop_port in map(parse_hop, hops):
            _check_ssh_config_name(config_path, alias, "ProxyJump", hop_host, hostname_problem)
            if hop_user is not None:
                _check_ssh_config_name(config_path, alias, "ProxyJump", hop_user, user_problem, what="user name")
        for _user, hop_host, hop_port in map(parse_hop, hops):
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


def parse_hop(hop: str) -> tuple[str | None, str, int | None]:
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


def load_ssh_config(path: str | os.PathLike[str] | None) -> paramiko.SSHConfig | None:
    """The OpenSSH client config at ``path`` (None: none, or no such file); a malformed one raises."""
    if path is None:
        return None
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):
        return None
    return paramiko.SSHConfig.from_path(path)
