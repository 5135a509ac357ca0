"""Which kept connection a call may use: the connection key, what the holder is told of the
profiles, and the start lock a holder and its clients share.

The key is a hash of everything the connection depends on: the profile and
its gateway chain (host, port, user, identity files, known_hosts, host key
policy, timeouts, keepalive and keepalive_count), the login name, the size
and mtime of ``~/.ssh/config``, the known_hosts files and the identity
files, the protocol version and the code of the holder and the SSH
transport. Editing any of them makes the next call use (start) a new
holder; the old one idles out. Standard library only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Callable

from .protocol import PROTOCOL

if TYPE_CHECKING:
    from ...config import HostProfile

__all__ = ["CONNECTION_FIELDS", "DEFAULT_SSH_CONFIG", "SYSTEM_KNOWN_HOSTS", "connection_key", "gateway_chain",
           "login_name", "profile_fields", "take_start_lock"]

#: same defaults as ``SshTransport`` (not imported from there: that would load paramiko)
DEFAULT_SSH_CONFIG = "~/.ssh/config"
SYSTEM_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"
#: the profile fields a connection depends on (sent to the holder, hashed into the key)
CONNECTION_FIELDS = ("name", "type", "host", "port", "user", "identity_file", "known_hosts", "host_key_policy",
                     "gateway", "connect_timeout", "keepalive", "keepalive_count")
#: the packages whose code a holder runs: a change starts a new holder
_CODE_DIRS = ("reuse", "ssh")


def login_name() -> str:
    """What ``getpass.getuser()`` gives (the default ssh user), without importing getpass."""
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        value = os.environ.get(name)
        if value:
            return value
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _stat_sig(path: str) -> list[int] | None:
    try:
        st = os.stat(os.path.expanduser(path))
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _code_files() -> list[str]:
    transports = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = []
    for name in _CODE_DIRS:
        folder = os.path.join(transports, name)
        with_py = sorted(f for f in os.listdir(folder) if f.endswith(".py")) if os.path.isdir(folder) else []
        files.extend(os.path.join(folder, f) for f in with_py)
    return files


def gateway_chain(profile: "HostProfile", resolve: Callable[[str], "HostProfile"]) -> list["HostProfile"]:
    """``profile`` and every profile reached through ``gateway:`` (a config never has a cycle; guarded anyway)."""
    chain = [profile]
    seen = {profile.name}
    while chain[-1].gateway and chain[-1].gateway not in seen:
        nxt = resolve(chain[-1].gateway)
        seen.add(nxt.name)
        chain.append(nxt)
    return chain


def profile_fields(profile: "HostProfile") -> dict[str, Any]:
    """What the holder needs to rebuild ``profile`` for its transport (JSON-able)."""
    out = {name: getattr(profile, name) for name in CONNECTION_FIELDS}
    out["identity_file"] = list(out["identity_file"])
    return out


def connection_key(chain: list["HostProfile"], ssh_config_path: str | None = DEFAULT_SSH_CONFIG,
                   system_known_hosts: str | None = SYSTEM_KNOWN_HOSTS) -> str:
    """A short hash naming one kept connection (see the module docstring)."""
    files = [p for p in (ssh_config_path, system_known_hosts) if p]
    for p in chain:
        files.append(p.known_hosts)
        files.extend(p.identity_file)
    data = {
        "protocol": PROTOCOL,
        "login": login_name(),
        "cwd": os.getcwd() if any(not os.path.isabs(os.path.expanduser(f)) for f in files) else "",  # relative paths: other files elsewhere
        "profiles": [profile_fields(p) for p in chain],
        "ssh_config": ssh_config_path,
        "system_known_hosts": system_known_hosts,
        "files": {f: _stat_sig(f) for f in files},
        "code": [_stat_sig(f) for f in _code_files()],
        "python": sys.executable,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]



def take_start_lock(fd: int, deadline: float) -> bool:
    """Take the exclusive ``flock`` of ``fd`` (``<key>.lock``: a client starting a holder, or a holder
    retiring), trying until ``deadline`` (``time.monotonic``); False when another process still holds it."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
