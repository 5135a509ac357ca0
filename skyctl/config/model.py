"""A loaded config and what ``--host`` resolves to: hosts, groups, and profile-less destinations.

``Config`` is what :func:`skyctl.config.load_config` returns; ``resolve``
turns a ``--host`` value (a host, a group, ``a,b``, or ``user@host``) into a
:class:`Target`. The profiles themselves are :class:`~skyctl.config.schema.HostProfile`.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass, field
from typing import Any, Mapping

from skyctl.errors import ConfigError, did_you_mean

from .destination import FORMS, looks_like_destination, parse_destination
from .expand import expanduser
from .files import display
from .schema import UNSET, FrozenMap, HostProfile

__all__ = ["BUILTIN_LOCAL", "ENV_HOST", "Config", "Group", "Target", "builtin_config", "builtin_local"]

#: the host that exists with no config file at all
BUILTIN_LOCAL = "local"
#: the environment variable that names the host (or group) used when ``--host`` is not given
ENV_HOST = "SKYCTL_HOST"


@dataclass(frozen=True)
class Group:
    """Several hosts under one name (``groups:``), each with ``workers`` worker processes."""

    name: str
    #: host names, in the order summaries and broadcast results follow
    hosts: tuple[str, ...]
    #: worker processes per host for a distributed ``pipe`` (a broadcast uses one)
    workers: int = 1


@dataclass(frozen=True)
class Target:
    """What ``--host`` names: one host, a group, or an ad-hoc ``a,b`` group."""

    name: str
    profiles: tuple[HostProfile, ...]
    workers: int = 1
    #: a group (or ``a,b``): ``run`` broadcasts, ``pipe`` distributes
    is_group: bool = False


@dataclass(frozen=True)
class Config:
    """A loaded config: where it came from, the default host, every profile by name."""

    #: the file read; None for the built-in config
    path: pathlib.Path | None
    #: the host (or group) used when none is named
    default: str
    #: every profile, in file order (the built-in ``local`` first unless the file lists it)
    hosts: Mapping[str, HostProfile]
    #: every group, in file order
    groups: Mapping[str, Group] = field(default_factory=lambda: FrozenMap({}))
    #: the validated ``defaults:`` (a null value as ``UNSET``): what a profile-less ``user@host`` takes
    defaults: Mapping[str, Any] = field(default_factory=lambda: FrozenMap({}), compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hosts", FrozenMap(self.hosts))
        object.__setattr__(self, "groups", FrozenMap(self.groups))
        object.__setattr__(self, "defaults", FrozenMap(self.defaults))

    def resolve(self, name: str | None = None, environ: Mapping[str, str] | None = None) -> Target:
        """What ``name`` (``--host``; else ``$SKYCTL_HOST``, else ``default``) stands for:
        a host, a group, or ``a,b`` (an ad-hoc group of hosts)."""
        environ = os.environ if environ is None else environ
        if name is None:
            name = environ.get(ENV_HOST) or self.default
        if "," in name:
            names = [part.strip() for part in name.split(",") if part.strip()]
            profiles: list[HostProfile] = []
            for part in dict.fromkeys(names):
                if part in self.groups:
                    profiles.extend(self.hosts[h] for h in self.groups[part].hosts)
                else:
                    profiles.append(self.host(part, environ))
            unique = tuple({p.name: p for p in profiles}.values())
            return Target(",".join(names), unique, 1, True)
        group = self.groups.get(name)
        if group is not None:
            return Target(name, tuple(self.hosts[h] for h in group.hosts), group.workers, True)
        return Target(name, (self.host(name, environ),))

    def host(self, name: str | None = None, environ: Mapping[str, str] | None = None) -> HostProfile:
        """The profile to use: ``name``, else ``$SKYCTL_HOST``, else ``default``.

        Raises ``ConfigError`` naming an unknown host, with a did-you-mean and
        the list of known hosts as the hint.
        """
        environ = os.environ if environ is None else environ
        origin = ""
        if name is None:
            from_env = environ.get(ENV_HOST)
            if from_env:
                name, origin = from_env, f" (from ${ENV_HOST})"
            else:
                name = self.default
        profile = self.hosts.get(name)
        if profile is not None:
            return profile
        where = display(self.path) if self.path is not None else "built-in config"
        if name in self.groups:
            raise ConfigError(f"{where}: {name!r} is a group, not one host",
                              f"its hosts: {', '.join(self.groups[name].hosts)}")
        if "," in name:  # a list: the error is that of the part that names nothing
            self.resolve(name, environ)
            raise ConfigError(f"{where}: {name!r} names several hosts, not one")
        if looks_like_destination(name):
            try:
                return self.destination_profile(name, environ)
            except ConfigError as err:
                if not origin:
                    raise
                raise ConfigError(err.message + origin, err.hint) from None
        known = ", ".join([*self.hosts, *self.groups])
        hint = f"known hosts: {known}"
        suggestion = did_you_mean(name, [*self.hosts, *self.groups])
        if suggestion:
            hint = f"{suggestion} {hint}"
        if self.path is None:
            hint += "; no skyward.yaml was found (run 'skyctl init' to write one)"
        hint += f"; or an ssh host without a profile: {FORMS}"
        raise ConfigError(f"{where}: unknown host {name!r}{origin}", hint)

    def destination_profile(self, text: str, environ: Mapping[str, str] | None = None) -> HostProfile:
        """The ssh profile of a profile-less destination (``user@host:port``, ``ssh://...``):
        ``defaults:`` under what the destination says, as for a profile without those keys;
        ``~/.ssh/config`` then applies as for any ssh host. Named by the destination as written."""
        environ = os.environ if environ is None else environ
        destination = parse_destination(text)
        fields = {key: value for key, value in self.defaults.items() if value is not UNSET}
        fields["host"] = destination.host
        if destination.user is not None:
            fields["user"] = destination.user
        if destination.port is not None:
            fields["port"] = destination.port
        fields.setdefault("known_hosts", expanduser(HostProfile.known_hosts, environ))
        return HostProfile(name=text, type="ssh", **fields)


def builtin_local(environ: Mapping[str, str]) -> HostProfile:
    """The built-in ``local`` host, its paths under ``environ``'s ``HOME``."""
    return HostProfile(
        name=BUILTIN_LOCAL,
        type="local",
        workdir=expanduser(HostProfile.workdir, environ),
        known_hosts=expanduser(HostProfile.known_hosts, environ),
    )


def builtin_config(environ: Mapping[str, str] | None = None) -> Config:
    """The config used when no file is found: only ``local``, the default."""
    environ = os.environ if environ is None else environ
    return Config(path=None, default=BUILTIN_LOCAL, hosts={BUILTIN_LOCAL: builtin_local(environ)})
