"""The host types, in one place: what a profile's ``type:`` means to the client beyond its keys.

One class per type (``TYPES``), asked through ``host_type(profile)`` by every
caller that would otherwise test the type's name: how its worker is reached
and started (``reached_via``, ``transport``), the CALL options it adds, how
many calls a group runs on it at once, whether a ``pipe`` on it alone is
distributed, what ``skyctl hosts`` and ``skyctl check`` show for it. The
profile's keys and their checks are the schema's (``config/schema.py``); how
bytes reach the host is its transport's (``transports/``).

A new host type is a class here (a row of ``TYPES``), its transport module
and its keys in the schema. Imports only the stdlib at the top: the CLI's
``hosts`` and the transports' choice use it cheaply.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from .errors import SkyctlError


class HostType:
    """What every type does unless it says otherwise (the defaults are an ssh-like host)."""

    #: the ``type:`` it describes
    name = ""
    #: ``pipe`` on this host alone is a distributed run (its chunks run as tasks of their own)
    distributed_alone = False
    #: its worker takes a slot's next chunk's call while one runs (pipelining: ``api.Host.pipelines``)
    pipelines = True
    #: its worker may be started in the background while the CLI imports the target
    #: (it cannot hang on the network, so closing it may always wait for it)
    starts_early = False

    def reached_via(self, profile: Any, config: Any) -> Any:
        """The profile whose transport, Python and directories start the worker (itself, but for
        a type whose worker runs on another host)."""
        return profile

    def worker_name(self, profile: Any) -> str | None:
        """How messages name the worker (None: the host's label)."""
        return None

    def transport(self, profile: Any, config: Any, reuse: bool | None, warn: Callable[[str], None] | None) -> Any:
        """The transport that starts the worker of ``profile`` (a ``reached_via`` profile)."""
        raise SkyctlError(f"host {profile.name!r}: no transport for type {profile.type!r}")

    def via_transport(self, profile: Any, reached: Any, inner: Any, reuse: bool | None) -> Any:
        """The transport of a type whose worker runs on another host (``reached``): that host's own
        (``inner``) unless the type adds to it."""
        return inner

    def default_python(self) -> str:
        """The worker's interpreter when the profile has no ``python:``."""
        return "python3"

    def liveness_slack(self, profile: Any) -> float:
        """Seconds the worker's silence bound allows beyond the heartbeats (the transport's own liveness)."""
        return 0.0

    def call_options(self, profile: Any, in_driver: bool = False) -> dict[str, Any] | None:
        """What this type adds to every CALL's options (plain data: the worker has no ``skyctl.config``)."""
        return None

    def worker_env(self, profile: Any) -> dict[str, str]:
        """What this type adds to its worker's environment (beside the reached profile's ``env:``)."""
        return {}

    def slots(self, profile: Any, workers: int) -> int:
        """Calls a group runs on this host at once (``-j`` aside): the group's ``workers``."""
        return workers

    def listed_python(self, profile: Any, config: Any) -> str:
        """The PYTHON column of ``skyctl hosts``."""
        return str(profile.effective_python)

    def check_info(self, session: Any, profile: Any) -> Any:
        """More for ``skyctl check`` to show, asked of the started worker (``check_lines`` shows it)."""
        return None

    def check_lines(self, info: Any) -> list[str]:
        """The lines ``skyctl check`` adds under the host's ``ok`` line, from ``check_info``'s answer."""
        return []


class Local(HostType):
    name = "local"
    starts_early = True

    def transport(self, profile: Any, config: Any, reuse: bool | None, warn: Callable[[str], None] | None) -> Any:
        from .transports.local import LocalTransport

        return LocalTransport(profile)

    def default_python(self) -> str:
        return sys.executable


class Command(HostType):
    name = "command"

    def transport(self, profile: Any, config: Any, reuse: bool | None, warn: Callable[[str], None] | None) -> Any:
        from .transports.command import CommandTransport

        return CommandTransport(profile)


class Ssh(HostType):
    name = "ssh"

    def transport(self, profile: Any, config: Any, reuse: bool | None, warn: Callable[[str], None] | None) -> Any:
        """A kept connection (``reuse: true``, the default) unless ``reuse`` is False (``--no-reuse``);
        ``warn`` shows why a kept connection could not be used."""
        if profile.reuse and reuse is not False:
            from .transports.reuse import ReuseTransport

            return ReuseTransport(profile, config.host, warn=warn)
        from .transports.ssh import SshTransport

        return SshTransport(profile, config.host)

    def liveness_slack(self, profile: Any) -> float:
        return float(profile.keepalive) + 1.0


class Ray(HostType):
    """A Ray cluster: the worker is a Ray driver on the ``via`` host, each call (each chunk) a Ray task."""

    name = "ray"
    distributed_alone = True  # its chunks are Ray tasks
    pipelines = True  # a slot's next chunk is attached to its driver's task while one runs (``raydriver.attach_ahead``)

    def reached_via(self, profile: Any, config: Any) -> Any:
        return config.hosts[profile.via]

    def worker_name(self, profile: Any) -> str | None:
        return f"{profile.name} (Ray driver on {profile.via})"

    def via_transport(self, profile: Any, reached: Any, inner: Any, reuse: bool | None) -> Any:
        """On a ``local`` via host, with ``reuse`` (the default): spare drivers, warm, for the next runs
        (``transports/spare.py``), as many as the host has ``workers``."""
        if reached.type != "local" or not profile.reuse or reuse is False:
            return inner
        from .transports.spare import SpareTransport

        return SpareTransport(inner, idle=float(profile.reuse_idle), most=self.slots(profile, 1))

    def call_options(self, profile: Any, in_driver: bool = False) -> dict[str, Any] | None:
        """Run the call as a Ray task (``in_driver``: in the driver itself, connected to the cluster)."""
        return {"ray": {
            "address": profile.ray_address,
            "resources": _plain(profile.resources),
            "runtime_env": _plain(profile.runtime_env) if profile.runtime_env is not None else None,
            "connect_timeout": profile.connect_timeout,
            "in_driver": in_driver,
        }}

    def worker_env(self, profile: Any) -> dict[str, str]:
        """``SKYCTL_RAY``: the driver imports ray, connects and submits a first task as it starts
        (``raydriver.warm``), while the first call is on its way."""
        import json

        return {"SKYCTL_RAY": json.dumps({
            "address": profile.ray_address,
            "connect_timeout": profile.connect_timeout,
            "resources": _plain(profile.resources),
            "runtime_env": _plain(profile.runtime_env) if profile.runtime_env is not None else None,
        })}

    def slots(self, profile: Any, workers: int) -> int:
        """Its own ``workers:``: chunk tasks in flight."""
        return int(getattr(profile, "workers", 1))

    def listed_python(self, profile: Any, config: Any) -> str:
        """The driver's: the via host's."""
        via = config.hosts.get(profile.via or "")
        return f"{via.effective_python} (on {profile.via})" if via is not None else ""

    def check_info(self, session: Any, profile: Any) -> Any:
        """Connect the driver to the cluster and ask it what it is."""
        from .remote.raydriver import cluster_info

        call = session.call(cluster_info, (), {}, options=self.call_options(profile, in_driver=True))
        for _ in call:
            pass
        return call.result

    def check_lines(self, info: Any) -> list[str]:
        if not isinstance(info, dict):
            return []
        return [f"  ray {info.get('ray')} at {info.get('address')}: {info.get('nodes')} nodes, "
                f"{info.get('cpus', 0):g} CPUs, {info.get('gpus', 0):g} GPUs"]


#: every host type, by its ``type:``
TYPES: dict[str, HostType] = {kind.name: kind for kind in (Local(), Ssh(), Command(), Ray())}


def host_type(profile: Any) -> HostType:
    """The ``HostType`` of a profile (an unknown type: the defaults, which have no transport)."""
    return TYPES.get(getattr(profile, "type", None) or "", _UNKNOWN)


def make_transport(profile: Any, config: Any, *, reuse: bool | None = None,
                   warn: Callable[[str], None] | None = None) -> Any:
    """The transport that starts a profile's worker: its type's, for the profile it is ``reached_via``
    (a ray host's driver runs on its via host, reached as that host is)."""
    kind = host_type(profile)
    reached = kind.reached_via(profile, config)
    if reached is not profile:
        return kind.via_transport(profile, reached, make_transport(reached, config, reuse=reuse, warn=warn), reuse)
    return kind.transport(profile, config, reuse, warn)


def _plain(value: Any) -> Any:
    """A config value as plain dicts and lists (to pickle for a worker that has no ``skyctl.config``)."""
    from collections.abc import Mapping

    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_UNKNOWN = HostType()

__all__ = ["HostType", "TYPES", "host_type", "make_transport"]
