"""The ``ssh`` transport: commands in exec channels on one paramiko connection per host.

``SshTransport(profile, resolve_profile)`` starts commands on the host a
``HostProfile`` names; ``start(argv)`` returns the command's ``SshPipes``.
Constructing reads ``~/.ssh/config`` but does no network I/O; the first
``start()`` connects, later ones reuse the connection. Imports only
paramiko/fabric, ``skyctl.errors`` and ``skyctl.config``; knows nothing of frames.

The modules, each one job (``docs/architecture.md``, "Transports"):

- ``endpoint``: the profile resolved against ``~/.ssh/config`` (``Endpoint``).
- ``hostkeys``: known_hosts and the ``strict``/``accept-new`` policies.
- ``liveness``: keepalives that must be answered (``Liveness``).
- ``pipes``: one exec channel as ``WorkerPipes`` (``SshPipes``).
- ``failures``: the one table from exceptions to errors, messages and hints.
- ``connect``: ``SshTransport``, the connection object.
"""

from .connect import MAX_HOPS, WINDOW_SIZE, SshTransport
from .endpoint import DEFAULT_SSH_CONFIG, Endpoint, resolve_endpoint
from .failures import FAILURES, SessionRefused, SshConnectError
from .hostkeys import SYSTEM_KNOWN_HOSTS, fingerprint
from .liveness import KEEPALIVE_REQUEST, Liveness
from .pipes import CLOSE_GRACE, STDERR_TAIL, SshPipes

__all__ = [
    "CLOSE_GRACE",
    "DEFAULT_SSH_CONFIG",
    "FAILURES",
    "KEEPALIVE_REQUEST",
    "MAX_HOPS",
    "STDERR_TAIL",
    "SYSTEM_KNOWN_HOSTS",
    "WINDOW_SIZE",
    "Endpoint",
    "Liveness",
    "SessionRefused",
    "SshConnectError",
    "SshPipes",
    "SshTransport",
    "fingerprint",
    "resolve_endpoint",
]
