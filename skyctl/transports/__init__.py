"""Transports: how a command is started on a host (``local`` child process, ``command``
program, ``ssh`` exec channel, ``reuse`` kept SSH connection). ``make_transport`` picks
one for a profile; each type's module is imported only when used (a warm call's start)."""

from __future__ import annotations

from typing import Any, Callable

from ..errors import SkyctlError


def make_transport(profile: Any, config: Any, *, reuse: bool | None = None,
                   warn: Callable[[str], None] | None = None) -> Any:
    """The transport for a profile: a child process for ``local``, the profile's
    program for ``command``, SSH for ``ssh``.

    An ssh profile with ``reuse: true`` (the default) goes through a kept
    connection (``reuse``) unless ``reuse`` is False (``--no-reuse``);
    ``warn`` shows why a kept connection could not be used.
    """
    if profile.type == "ray":  # the Ray driver runs on the via host, reached as that host is
        return make_transport(config.hosts[profile.via], config, reuse=reuse, warn=warn)
    if profile.type == "local":
        from .local import LocalTransport

        return LocalTransport(profile)
    if profile.type == "command":
        from .command import CommandTransport

        return CommandTransport(profile)
    if profile.type != "ssh":
        raise SkyctlError(f"host {profile.name!r}: no transport for type {profile.type!r}")
    if profile.reuse and reuse is not False:
        from .reuse import ReuseTransport

        return ReuseTransport(profile, config.host, warn=warn)
    from .ssh import SshTransport

    return SshTransport(profile, config.host)
