"""``skyward.yaml`` → validated host profiles.

This module owns the config file: where it is found, how it is parsed, every
rule it is validated against, and the template ``skyctl init`` writes. The
whole file is validated when loaded, whichever host is then used; each
problem is a ``ConfigError`` whose message names the file, the host and the
key (``skyward.yaml: host 'gpu-1': unknown key 'prot'``) and whose hint says
what to do (``did you mean 'port'?``).

Rules beyond the contract's example, chosen here:

- ``${VAR}`` and ``${VAR:-fallback}`` are expanded in every string value (not
  in keys); ``:-`` uses the fallback when ``VAR`` is unset *or empty*, as the
  shell does. ``$${`` is a literal ``${``.
- A key set to ``null`` means "not set": the built-in default applies, and it
  overrides a value from ``defaults:`` (``gateway: null`` opts a host out).
- ``~`` is expanded in paths on this machine: ``identity_file``,
  ``known_hosts``, and a local host's ``workdir`` and ``python``. An ssh or
  command host's ``workdir`` and ``python`` are left alone (the remote home applies).
- Each ``type:`` accepts its own keys (``_TYPE_KEYS``); a key of another type
  is an error naming the types it belongs to. A new host type adds its name
  to ``HOST_TYPES``, its keys to ``_TYPE_KEYS`` and its checks to ``CHECKS``.
- ``type: command``: ``argv`` is a non-empty list of strings (a number must be
  quoted, as in ``pip``), ``shell`` a boolean; ``defaults:`` do not apply to it.
- Duplicate keys in one mapping are an error, not "last one wins".
- ``host`` and ``user`` are checked as OpenSSH's ``ssh`` checks a host and a
  user name given on its command line (``valid_hostname``/``valid_ruser`` in
  its ``misc.c``), after ``${VAR}`` expansion: ``~/.ssh/config`` may run them
  through a shell (``Match exec``, ``%h``/``%r``), so shell metacharacters,
  control characters and a leading ``-`` are refused.
- ``keepalive_count`` is a whole number, at least 1. There is no way to turn
  keepalives off: liveness rests on them (a stalled host would otherwise hang
  a call for ever); a flaky link wants larger values, not none.

It imports only the stdlib and ``skyctl.errors`` (PyYAML when a text has to
be parsed): no typer, rich or paramiko, so loading a config costs little and
the CLI, the Python API and the transports can all use it.

A parsed document is remembered (``_Documents``): in this process, and as
JSON in the private runtime directory beside the kept connections' sockets,
keyed by the file's path and checked against the sha256 of its text. A warm
``skyctl run`` then reads its config without importing PyYAML (~20 ms of
every call's start). Only what JSON gives back unchanged is remembered;
validation always runs on the document, so messages do not change.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import pathlib
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, NoReturn, TypeVar

from skyctl import runtime
from skyctl.errors import ConfigError, did_you_mean

__all__ = [
    "BUILTIN_LOCAL",
    "CONFIG_FILENAME",
    "INIT_TEMPLATE",
    "Config",
    "HostProfile",
    "builtin_config",
    "find_config_path",
    "load_config",
    "parse_config",
    "write_init",
    "hostname_problem",
    "user_problem",
]

#: the host that exists with no config file at all
BUILTIN_LOCAL = "local"

#: the file name looked for in the current directory and in ~/.config/skyctl/
CONFIG_FILENAME = "skyward.yaml"

#: environment variables that choose the file and the host
ENV_CONFIG = "SKYCTL_CONFIG"
ENV_HOST = "SKYCTL_HOST"

#: every ``type:`` a host may have; ``ssh`` is implied by ``host:``
HOST_TYPES = ("local", "ssh", "command", "ray")
HOST_KEY_POLICIES = ("strict", "accept-new")
#: ``trust:``: what the Python API rebuilds from values a host sends (the CLI never unpickles)
TRUST_LEVELS = ("data", "full")

#: the text ``skyctl init`` writes, and the project's own ./skyward.yaml
INIT_TEMPLATE = """\
# skyward.yaml: the hosts skyctl can run your functions on.
#
# skyctl reads the first of: --config PATH, $SKYCTL_CONFIG, ./skyward.yaml,
# ~/.config/skyctl/skyward.yaml. The host used is --host NAME, else
# $SKYCTL_HOST, else `default` below. Any string value may use ${VAR} or
# ${VAR:-fallback} from the environment. There are no passwords in this
# file: ssh hosts authenticate with keys and ssh-agent only.
# See them with `skyctl hosts`; try one with `skyctl check NAME`.

default: local                 # host used when none is named

# defaults:                    # merged under every ssh host's own keys (the host's win)
#   user: deploy
#   identity_file: ~/.ssh/id_ed25519

hosts:
  local:
    type: local                # the worker runs as a child process on this machine
    # python: python3          # default: the Python that runs skyctl
    # env: {OMP_NUM_THREADS: "4"}

  # gpu-1:
  #   host: gpu-1.example.com    # address, or an alias from ~/.ssh/config
  #   port: 22                   # default: ~/.ssh/config, else 22
  #   user: ubuntu               # default: ~/.ssh/config, else your user name
  #   identity_file: ~/.ssh/id_ed25519   # or a list; ssh-agent is used too
  #   python: python3            # interpreter on the remote (same major.minor as here)
  #   workdir: ~/.cache/skyctl   # on the remote: where the worker bundle and envs are kept
  #   env: {OMP_NUM_THREADS: "8"}
  #   pip: ["numpy>=2"]          # installed once into a cached venv on the remote
  #   known_hosts: ~/.ssh/known_hosts
  #   host_key_policy: strict    # strict: unknown or changed key refused; accept-new: trust on first use
  #   gateway: bastion           # reach this host through another profile (like ProxyJump)
  #   connect_timeout: 10        # seconds
  #   keepalive: 15              # seconds between SSH keepalives (each one must be answered)
  #   keepalive_count: 3         # unanswered keepalives in a row before the connection counts as lost
  #   reuse: true                # keep the SSH connection for later calls (like ControlPersist)
  #   reuse_idle: 60             # seconds an unused kept connection stays open
  #   trust: data                # Python API: rebuild only plain data from this host (full: anything)
  #   allow: ["mypkg.models.Result"]   # Python API: more classes to rebuild from this host's values
  # bastion:
  #   host: bastion.example.com

  # trainer:                     # a program here that runs a command there, stdin/stdout piped
  #   type: command              # recipes (docker, kubectl, srun, sudo, ssh): docs/hosts.md
  #   argv: [docker, exec, -i, trainer]   # skyctl appends: python3 -c <stub>; never -t
  #   shell: false               # true: append one shell-quoted string instead (for ssh)
  #   python: python3            # as the program finds it (same major.minor as here)
  #   workdir: ~/.cache/skyctl   # over there: the worker bundle and envs
  # cluster:                     # a Ray cluster: each call (each pipe chunk) runs as a Ray task
  #   type: ray
  #   via: gpu-1                 # the host where the Ray driver runs; its python must have ray
  #   address: auto              # ray.init address on that host
  #   resources: {num_cpus: 1}   # per task: num_cpus, num_gpus, memory, resources: {NAME: amount}
  #   runtime_env: {env_vars: {OMP_NUM_THREADS: "1"}}   # passed through to every task
  #   workers: 2                 # pipe: chunk tasks in flight (one driver process each)
"""

_K = TypeVar("_K")
_V = TypeVar("_V")


class _FrozenMap(Mapping[_K, _V]):
    """A read-only, hashable, picklable dict: what ``env`` and ``hosts`` are."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[_K, _V] | None = None) -> None:
        self._data: dict[_K, _V] = dict(data or {})

    def __getitem__(self, key: _K) -> _V:
        return self._data[key]

    def __iter__(self) -> Iterator[_K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __repr__(self) -> str:
        return repr(self._data)

    def __reduce__(self) -> tuple[type, tuple[dict[_K, _V]]]:
        return (type(self), (self._data,))


def _empty_env() -> Mapping[str, str]:
    return _FrozenMap()


@dataclass(frozen=True)
class HostProfile:
    """One validated host: where the worker runs and how to reach it.

    Built by :func:`parse_config`; may also be built directly (``env`` is
    frozen, sequences become tuples, local paths get ``~`` expanded).
    """

    #: the profile's name in ``hosts:``
    name: str
    #: ``"local"`` (a child process here), ``"ssh"`` or ``"command"`` (``argv`` run here)
    type: str
    #: address or ``~/.ssh/config`` alias (ssh only)
    host: str | None = None
    #: None: ``~/.ssh/config``, else 22 (resolved by the transport)
    port: int | None = None
    #: None: ``~/.ssh/config``, else the current user
    user: str | None = None
    #: private key files on this machine, ``~`` expanded; ssh-agent is used too
    identity_file: tuple[str, ...] = ()
    #: None: local → ``sys.executable``; ssh, command → ``"python3"`` (see :attr:`effective_python`)
    python: str | None = None
    #: bundle and venv cache; ``~`` expanded for local, left for the remote side for ssh and command
    workdir: str = "~/.cache/skyctl"
    #: extra environment for the worker
    env: Mapping[str, str] = field(default_factory=_empty_env)
    #: requirements installed into a cached venv on the remote
    pip: tuple[str, ...] = ()
    #: known_hosts file on this machine, ``~`` expanded
    known_hosts: str = "~/.ssh/known_hosts"
    #: ``"strict"``: unknown or changed key refused; ``"accept-new"``: trust on first use
    host_key_policy: str = "strict"
    #: name of another (ssh) profile to jump through
    gateway: str | None = None
    #: seconds
    connect_timeout: float = 10.0
    #: seconds between SSH keepalives (requests the server must answer, like ServerAliveInterval)
    keepalive: float = 15.0
    #: unanswered keepalives in a row after which the connection is lost (like ServerAliveCountMax)
    keepalive_count: int = 3
    #: keep the SSH connection for later calls
    reuse: bool = True
    #: seconds an unused kept connection stays open
    reuse_idle: float = 60.0
    #: ``"data"``: the API rebuilds only plain data types from this host's values; ``"full"``: anything
    trust: str = "data"
    #: more classes (``"pkg.mod.Class"``) the API may rebuild from this host's values
    allow: tuple[str, ...] = ()
    #: command only: the program run here, ``[python, "-c", stub]`` appended
    argv: tuple[str, ...] = ()
    #: command only: append ``[python, "-c", stub]`` as one shell-quoted argument (for ``ssh``)
    shell: bool = False
    #: ray: the host (local, ssh, ...) whose worker is the Ray driver
    via: str | None = None
    #: ray: what the driver passes to ``ray.init(address=...)`` (YAML key ``address``)
    ray_address: str = "auto"
    #: ray: per task: ``num_cpus``, ``num_gpus``, ``memory``, ``resources`` ({NAME: amount})
    resources: Mapping[str, Any] = field(default_factory=_empty_env)
    #: ray: passed through to each task's ``runtime_env`` when given
    runtime_env: Mapping[str, Any] | None = None
    #: ray: a distributed ``pipe``'s chunk tasks in flight (one driver process each)
    workers: int = 2

    def __post_init__(self) -> None:
        if self.type not in HOST_TYPES:
            raise ValueError(f"HostProfile {self.name!r}: type must be one of {', '.join(HOST_TYPES)}, not {self.type!r}")
        if self.type == "ssh" and not self.host:
            raise ValueError(f"HostProfile {self.name!r}: an ssh host needs 'host'")
        if self.type == "command" and (not self.argv or isinstance(self.argv, str)
                                       or not all(isinstance(a, str) for a in self.argv) or not self.argv[0]):
            raise ValueError(f"HostProfile {self.name!r}: a command host needs 'argv', a non-empty list of strings")
        if self.type == "ray" and not self.via:
            raise ValueError(f"HostProfile {self.name!r}: a ray host needs 'via'")
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        resources = dict(self.resources)
        if isinstance(resources.get("resources"), Mapping):
            resources["resources"] = _FrozenMap(resources["resources"])
        set_("resources", _FrozenMap(resources))
        if self.runtime_env is not None:
            set_("runtime_env", _FrozenMap(self.runtime_env))
        set_("workers", int(self.workers))
        if self.workers < 1:
            raise ValueError(f"HostProfile {self.name!r}: workers must be at least 1, not {self.workers}")
        set_("env", _FrozenMap({str(k): str(v) for k, v in self.env.items()}))
        set_("identity_file", tuple(os.path.expanduser(p) for p in self.identity_file))
        set_("pip", tuple(self.pip))
        set_("allow", tuple(self.allow))
        set_("argv", tuple(self.argv))
        set_("known_hosts", os.path.expanduser(self.known_hosts))
        if self.type == "local":
            set_("workdir", os.path.expanduser(self.workdir))
            if self.python is not None:
                set_("python", os.path.expanduser(self.python))
        for name in ("connect_timeout", "keepalive", "reuse_idle"):
            set_(name, float(getattr(self, name)))
        set_("keepalive_count", int(self.keepalive_count))
        if self.keepalive_count < 1:
            raise ValueError(f"HostProfile {self.name!r}: keepalive_count must be at least 1, not {self.keepalive_count}")
        # the same rules as the config file, for a profile built in code (defence in depth)
        for key, value, check in (("host", self.host, hostname_problem), ("user", self.user, user_problem)):
            problem = check(value) if value is not None else None
            if problem:
                raise ValueError(f"HostProfile {self.name!r}: {key} {value!r} {problem}")

    @property
    def address(self) -> str:
        """``local`` for a local host, the command line for a command host, else
        ``user@host:port`` with only the parts known."""
        if self.type == "local":
            return "local"
        if self.type == "command":
            import shlex

            return shlex.join(self.argv)
        if self.type == "ray":
            return f"ray {self.ray_address} via {self.via}"
        host = self.host or ""
        if self.port is not None and ":" in host:
            host = f"[{host}]"  # IPv6 literal
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{user}{host}{port}"

    @property
    def effective_python(self) -> str:
        """The interpreter that will run the worker: ``python``, else the type's default."""
        if self.python:
            return self.python
        return sys.executable if self.type == "local" else "python3"


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
    groups: Mapping[str, Group] = field(default_factory=lambda: _FrozenMap({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "hosts", _FrozenMap(self.hosts))
        object.__setattr__(self, "groups", _FrozenMap(self.groups))

    def resolve(self, name: str | None = None, environ: Mapping[str, str] | None = None) -> Target:
        """What ``name`` (``--host``; else ``$SKYCTL_HOST``, else ``default``) stands for:
        a host, a group, or ``a,b`` (an ad-hoc group of hosts)."""
        environ = os.environ if environ is None else environ
        if name is None:
            name = environ.get(ENV_HOST) or self.default
        if "," in name:
            names = [part.strip() for part in name.split(",") if part.strip()]
            profiles = []
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
        where = _display(self.path) if self.path is not None else "built-in config"
        if name in self.groups:
            raise ConfigError(f"{where}: {name!r} is a group, not one host",
                              f"its hosts: {', '.join(self.groups[name].hosts)}")
        known = ", ".join([*self.hosts, *self.groups])
        hint = f"known hosts: {known}"
        suggestion = did_you_mean(name, [*self.hosts, *self.groups])
        if suggestion:
            hint = f"{suggestion} {hint}"
        if self.path is None:
            hint += "; no skyward.yaml was found (run 'skyctl init' to write one)"
        raise ConfigError(f"{where}: unknown host {name!r}{origin}", hint)


def builtin_config(environ: Mapping[str, str] | None = None) -> Config:
    """The config used when no file is found: only ``local``, the default."""
    environ = os.environ if environ is None else environ
    return Config(path=None, default=BUILTIN_LOCAL, hosts={BUILTIN_LOCAL: _builtin_local(environ)})


def find_config_path(
    explicit: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> pathlib.Path | None:
    """The config file to read, or None when there is none.

    In order: ``explicit`` (``--config``), ``$SKYCTL_CONFIG``, ``./skyward.yaml``
    (in ``cwd``), ``~/.config/skyctl/skyward.yaml`` (``~`` from ``environ``'s
    ``HOME``). A file named by ``--config`` or ``$SKYCTL_CONFIG`` must exist.
    """
    environ = os.environ if environ is None else environ
    base = pathlib.Path.cwd() if cwd is None else pathlib.Path(cwd)
    named: list[tuple[str, str]] = []
    if explicit is not None:
        named.append((os.fspath(explicit), "--config"))
    elif environ.get(ENV_CONFIG):
        named.append((environ[ENV_CONFIG], f"${ENV_CONFIG}"))
    for text, origin in named:
        path = base / _expanduser(text, environ)
        if path.is_dir():
            raise ConfigError(f"config file {text} (from {origin}) is a directory", f"name the file, e.g. {path / CONFIG_FILENAME}")
        if not path.is_file():
            raise ConfigError(
                f"config file not found: {text} (from {origin})",
                "check the path, or run 'skyctl init' to write a skyward.yaml",
            )
        return path
    candidates = (base / CONFIG_FILENAME, pathlib.Path(_expanduser("~/.config/skyctl", environ)) / CONFIG_FILENAME)
    for path in candidates:
        if path.exists():
            return path
    return None


def load_config(
    explicit: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Config:
    """Find (see :func:`find_config_path`), read and validate the config; built-in if none."""
    environ = os.environ if environ is None else environ
    path = find_config_path(explicit, environ, cwd)
    if path is None:
        return builtin_config(environ)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a leading BOM is dropped
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{_display(path)}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{_display(path)}: cannot read: {exc.strerror or exc}") from None
    return parse_config(text, path, environ)


def parse_config(text: str, path: pathlib.Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Validate the YAML ``text`` of a config file (``path`` is where it came from, for messages)."""
    environ = os.environ if environ is None else environ
    return _Parser(_display(path), environ).parse(text, path)


def write_init(path: pathlib.Path) -> None:
    """Write :data:`INIT_TEMPLATE` to ``path``; ``FileExistsError`` (file untouched) if it exists."""
    with open(path, "x", encoding="utf-8") as handle:  # "x": O_EXCL, never overwrites
        handle.write(INIT_TEMPLATE)


# --------------------------------------------------------------------------- helpers

#: every key a host may have, in the order HostProfile declares them
_HOST_KEYS = (
    "type", "host", "port", "user", "identity_file", "python", "workdir", "env", "pip", "known_hosts",
    "host_key_policy", "gateway", "connect_timeout", "keepalive", "keepalive_count", "reuse", "reuse_idle",
    "trust", "allow",
)  # fmt: skip
#: ``keepalive`` × ``keepalive_count`` is every host's liveness bound (the worker's heartbeats: docs/protocol.md)
_LOCAL_KEYS = frozenset({"type", "python", "workdir", "env", "trust", "allow", "keepalive", "keepalive_count"})
#: keys of the other host types only: not for ssh hosts, so not for ``defaults:`` either
_NON_SSH_KEYS = ("argv", "shell")
_HOST_KEYS += _NON_SSH_KEYS
_COMMAND_KEYS = frozenset({"type", "argv", "shell", "python", "workdir", "env", "pip", "trust", "allow", "connect_timeout",
                           "keepalive", "keepalive_count"})
#: the keys each host type accepts; ssh: all but the other types' own
_TYPE_KEYS: dict[str, frozenset[str]] = {
    "local": _LOCAL_KEYS,
    "ssh": frozenset(k for k in _HOST_KEYS if k not in _NON_SSH_KEYS),
    "command": _COMMAND_KEYS,
}
_DEFAULTS_KEYS = tuple(k for k in _HOST_KEYS if k not in ("type", "host") and k not in _NON_SSH_KEYS)
#: every key a ``type: ray`` host may have (its driver runs as the ``via`` host says: python, env, ...)
_RAY_KEYS = ("type", "via", "address", "resources", "runtime_env", "workers", "connect_timeout", "trust", "allow")
_RAY_ONLY_KEYS = frozenset(_RAY_KEYS) - frozenset(_HOST_KEYS)
#: what ``resources:`` may hold, as Ray's task options name them
_RAY_RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory", "resources")
#: seconds a ray host's driver may take to connect to the cluster (``ray.init``) unless ``connect_timeout`` says
RAY_CONNECT_TIMEOUT = 30.0
_TYPE_KEYS["ray"] = frozenset(_RAY_KEYS)
_TOP_KEYS = ("default", "defaults", "hosts", "groups")
_GROUP_KEYS = ("hosts", "workers")
_PASSWORD_KEYS = frozenset({"password", "passwd", "passphrase", "key_passphrase"})
_NO_PASSWORDS = "no passwords in skyward.yaml: use keys or ssh-agent"
_VAR_REF = re.compile(r"\$(\$)?\{([^}]*)(\})?")
_VAR_BODY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


#: characters OpenSSH refuses anywhere in a host name (``valid_hostname``): the shell's own
_HOST_BAD_CHARS = "'`\"$\\;&<>|(){},"
#: characters OpenSSH refuses anywhere in a remote user name (``valid_ruser``)
_USER_BAD_CHARS = "'`\";&<>|(){}"
#: the hints of a refused host or user: the rule, and why it exists
HOST_RULES_HINT = (
    f"a host name may not start with '-' or contain spaces, control characters or any of {_HOST_BAD_CHARS} "
    "(OpenSSH refuses the same: ~/.ssh/config can hand the name to a shell)"
)
USER_RULES_HINT = (
    f"a user name may not start with '-', end with '\\', or contain control characters or any of {_USER_BAD_CHARS} "
    "(OpenSSH refuses the same: ~/.ssh/config can hand the name to a shell)"
)


def _unsafe_char(char: str) -> bool:
    """A control character (C0, DEL, C1, or any Unicode Cc/Cf/Zl/Zp), as ``iscntrl`` sees it and more."""
    import unicodedata

    return ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F or unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")


def _show(char: str) -> str:
    return repr(char) if char.isprintable() and not char.isspace() else f"U+{ord(char):04X}"


def hostname_problem(name: str) -> str | None:
    """Why ``name`` is not a host name OpenSSH would accept (``valid_hostname``), or None when it is.

    Refused: empty, a leading ``-`` (it would read as an option), whitespace,
    control characters and ``'`"$\\;&<>|(){},``. Everything else is left to
    the resolver and ``~/.ssh/config``: IPv6 literals (``::1``, ``fe80::1%eth0``),
    ``_`` and non-ASCII names pass, as in OpenSSH.
    """
    if not name:
        return "is empty"
    if name.startswith("-"):
        return "starts with '-'"
    for char in name:
        if char.isspace():
            return f"contains whitespace ({_show(char)})"
        if _unsafe_char(char):
            return f"contains a control character ({_show(char)})"
        if char in _HOST_BAD_CHARS:
            return f"contains {char!r}"
    return None


def user_problem(name: str) -> str | None:
    """Why ``name`` is not a remote user name OpenSSH would accept (``valid_ruser``), or None when it is.

    Refused: empty, a leading ``-``, control characters, ``'`";&<>|(){}``,
    whitespace followed by ``-``, and a trailing ``\\``. As in OpenSSH, ``$``,
    ``\\`` (``DOMAIN\\user``) and ``@`` (``user@domain``) are allowed.
    """
    if not name:
        return "is empty"
    if name.startswith("-"):
        return "starts with '-'"
    for index, char in enumerate(name):
        if _unsafe_char(char):
            return f"contains a control character ({_show(char)})"
        if char in _USER_BAD_CHARS:
            return f"contains {char!r}"
        if char.isspace() and name[index + 1 : index + 2] == "-":
            return "has a space before '-'"
    if name.endswith("\\"):
        return "ends with '\\'"
    return None


def _display(path: pathlib.Path | None) -> str:
    """How a config path appears in messages: relative to the cwd or ``~`` when shorter."""
    if path is None:
        return CONFIG_FILENAME
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.relative_to(pathlib.Path.cwd()))
    except (ValueError, OSError):
        pass
    try:
        return "~/" + str(path.relative_to(pathlib.Path.home()))
    except (ValueError, RuntimeError, OSError):
        return str(path)


def _expanduser(path: str, environ: Mapping[str, str]) -> str:
    """``~`` and ``~/...`` from ``environ['HOME']`` (falling back to the real home); ``~user`` as usual."""
    if path == "~" or path.startswith("~/"):
        home = environ.get("HOME")
        if home:
            return home if path == "~" else home.rstrip("/") + path[1:]
    return os.path.expanduser(path)


def _builtin_local(environ: Mapping[str, str]) -> HostProfile:
    return HostProfile(
        name=BUILTIN_LOCAL,
        type="local",
        workdir=_expanduser(HostProfile.workdir, environ),
        known_hosts=_expanduser(HostProfile.known_hosts, environ),
    )


def _describe(value: Any) -> str:
    """A value as it appears after ``got`` in a message."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{type(value).__name__} {value!r}"


@functools.lru_cache(maxsize=1)
def _unique_key_loader() -> Any:
    """A SafeLoader that refuses a key given twice in one mapping (merge keys excepted);
    made on first use, so that a remembered document never imports PyYAML."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # unhashable key; SafeConstructor reports it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


class _Documents:
    """Parsed config documents, remembered as JSON by file path and checked by the text's sha256.

    In this process (the CLI reads its config more than once) and in a file
    ``config-<hash of the path>.json`` in the private runtime directory (the
    kept connections' one: ours, a real directory, mode 0700; when it is not
    usable nothing is remembered on disk). Only a document that JSON gives
    back equal (so no dates, non-string keys, NaN) is remembered.
    """

    def __init__(self) -> None:
        self._here: dict[str, str] = {}

    def load(self, text: str, path: pathlib.Path | None, parse: Callable[[str], Any]) -> Any:
        """The document of ``text``: the remembered one, else ``parse(text)`` (remembered when JSON holds it)."""
        digest = _sha256(text)
        dumped = self._here.get(digest)
        file = None  # an in-process hit does no file-system work
        if dumped is None and path is not None:
            file = runtime.memo(f"config-{_sha256(os.path.abspath(path))[:32]}.json")
            dumped = self._entry(runtime.recall(file), digest)
        if dumped is not None:
            self._here[digest] = dumped
            return json.loads(dumped)
        document = parse(text)
        try:
            dumped = json.dumps(document, allow_nan=False)
            if json.loads(dumped) != document:
                return document
        except (TypeError, ValueError):
            return document
        self._here[digest] = dumped
        runtime.remember(file, json.dumps({"sha256": digest, "document": dumped}).encode())
        return document

    @staticmethod
    def _entry(data: bytes | None, digest: str) -> str | None:
        """The remembered document in ``data``, if it is the one of the text whose sha256 is ``digest``."""
        if data is None:
            return None
        try:
            entry = json.loads(data)
        except ValueError:
            return None
        if isinstance(entry, dict) and entry.get("sha256") == digest and isinstance(entry.get("document"), str):
            return entry["document"]
        return None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


_DOCUMENTS = _Documents()


#: a key that was set to null: use the built-in default, overriding ``defaults:``
_UNSET = object()


class _Parser:
    """One validation pass over one file; raises the first problem found, in file order."""

    def __init__(self, where: str, environ: Mapping[str, str]) -> None:
        self.where = where
        self.environ = environ
        self.section = ""  # "host 'gpu-1'" / "defaults" / "" (top level)

    # -- errors

    def fail(self, message: str, hint: str | None = None) -> NoReturn:
        prefix = f"{self.where}: {self.section}: " if self.section else f"{self.where}: "
        raise ConfigError(prefix + message, hint)

    def unknown_key(self, key: Any, valid: tuple[str, ...]) -> NoReturn:
        if isinstance(key, str) and key.lower() in _PASSWORD_KEYS:
            self.fail(f"{key!r} is not allowed: {_NO_PASSWORDS}", "load the key with ssh-add, or set identity_file")
        hint = did_you_mean(key, valid) if isinstance(key, str) else None
        self.fail(f"unknown key {key!r}", hint or "valid keys: " + ", ".join(valid))

    # -- the file

    def parse(self, text: str, path: pathlib.Path | None) -> Config:
        data = _DOCUMENTS.load(text, path, self.load_yaml)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.fail(f"the file must be a mapping with keys {', '.join(_TOP_KEYS)}; got {_describe(data)}")
        for key in data:
            if key not in _TOP_KEYS:
                self.unknown_key(key, _TOP_KEYS)

        default = data.get("default")
        if default is not None:
            default = self.string("default", default)
        defaults = self.defaults(data.get("defaults"))
        hosts = self.hosts(data.get("hosts"), defaults)
        groups = self.groups(data.get("groups"), hosts)
        if default is None:
            default = BUILTIN_LOCAL
        self.section = ""
        if default not in hosts and default not in groups:
            self.fail(f"'default' is {default!r}, which names no host or group", self.hosts_hint(default, hosts))
        self.check_gateways(hosts)
        self.check_vias(hosts)
        return Config(path=path, default=default, hosts=hosts, groups=groups)

    def groups(self, raw: Any, hosts: dict[str, HostProfile]) -> dict[str, Group]:
        self.section = ""
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.fail(f"'groups' must be a mapping of group name to hosts, got {_describe(raw)}",
                      "e.g. groups: {farm: [box-1, box-2]}")
        groups: dict[str, Group] = {}
        for name, spec in raw.items():
            if not isinstance(name, str) or not name or "," in name:
                self.fail(f"group name {name!r} must be a non-empty string without commas")
            self.section = f"group {name!r}"
            if name in hosts:
                self.fail(f"{name!r} names a host too: hosts and groups share one namespace", "rename the group or the host")
            workers: Any = 1
            members: Any = spec
            if isinstance(spec, dict):
                for key in spec:
                    if key not in _GROUP_KEYS:
                        self.unknown_key(key, _GROUP_KEYS)
                members = spec.get("hosts")
                workers = spec.get("workers", 1)
                if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
                    self.fail(f"'workers' must be a whole number of at least 1, got {_describe(workers)}")
            if not isinstance(members, list) or not members:
                self.fail(f"a group is a non-empty list of host names (or a mapping with 'hosts:'), got {_describe(members)}",
                          "e.g. farm: [box-1, box-2]")
            names: list[str] = []
            for index, member in enumerate(members, 1):
                if not isinstance(member, str):
                    self.fail(f"item {index} must be a host name, got {_describe(member)}")
                if member in raw and member not in hosts:
                    self.fail(f"{member!r} is a group: a group lists hosts only")
                if member not in hosts:
                    self.fail(f"{member!r} names no host", self.hosts_hint(member, hosts))
                if member not in names:
                    names.append(member)
            groups[name] = Group(name, tuple(names), workers)
        self.section = ""
        return groups

    def load_yaml(self, text: str) -> Any:
        import yaml

        try:
            return yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            if mark is None:
                self.fail(problem)
            lines = text.splitlines()
            source = lines[mark.line] if mark.line < len(lines) else ""
            hint = f"line {mark.line + 1}: {source.strip()}" if source.strip() else None
            if "\t" in source:
                hint = "YAML indents with spaces, not tabs"
            raise ConfigError(f"{self.where} line {mark.line + 1}: {problem}", hint) from None

    def defaults(self, raw: Any) -> dict[str, Any]:
        self.section = "defaults"
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.section = ""
            self.fail(f"'defaults' must be a mapping of host keys, got {_describe(raw)}")
        for key in raw:
            if key in ("host", "type") or key in _NON_SSH_KEYS:
                self.fail(f"{key!r} cannot be a default", "each ssh host sets its own 'host'; defaults apply only to ssh hosts")
            if key not in _DEFAULTS_KEYS:
                self.unknown_key(key, _DEFAULTS_KEYS)
        return {key: self.value(key, value, local=False) for key, value in raw.items()}

    def hosts(self, raw: Any, defaults: dict[str, Any]) -> dict[str, HostProfile]:
        self.section = ""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.fail(f"'hosts' must be a mapping of host name to settings, got {_describe(raw)}")
        profiles: dict[str, HostProfile] = {}
        if BUILTIN_LOCAL not in raw:
            profiles[BUILTIN_LOCAL] = _builtin_local(self.environ)
        for name, settings in raw.items():
            self.section = ""
            if not isinstance(name, str) or not name.strip():
                self.fail(f"host name {_describe(name)} is not a name", "quote it, e.g. \"gpu-1\":")
            profiles[name] = self.host(name, settings, defaults)
        return profiles

    def host(self, name: str, raw: Any, defaults: dict[str, Any]) -> HostProfile:
        self.section = f"host {name!r}"
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.fail(f"settings must be a mapping, got {_describe(raw)}", "e.g. 'host: gpu-1.example.com' or 'type: local'")
        if isinstance(raw.get("type"), str) and self.expand("type", raw["type"]).strip() == "ray":
            return self.ray_host(name, raw)
        for key in raw:
            if key in _RAY_ONLY_KEYS:
                self.fail(f"{key!r} is only for ray hosts", "add 'type: ray' (and 'via: HOST') to run calls as Ray tasks")
            if key not in _HOST_KEYS:
                self.unknown_key(key, _HOST_KEYS)

        kind = raw.get("type")
        if kind is not None:
            kind = self.choice("type", kind, HOST_TYPES)
        has_host = raw.get("host") is not None
        if kind == "local" and has_host:
            self.fail("'host' is set but 'type' is local", "remove 'type: local' to make it an ssh host, or remove 'host'")
        if kind not in (None, "local", "ssh") and has_host:
            self.fail(f"'host' is set but 'type' is {kind}", f"a {kind} host has no 'host': remove it, or remove 'type: {kind}'")
        if kind == "ssh" and not has_host:
            self.fail("type ssh needs 'host'", "add 'host: ADDRESS' (an address or a ~/.ssh/config alias)")
        if kind is None and not has_host:
            self.fail("needs 'host' (an ssh host) or 'type: local'", "add 'host: ADDRESS', or 'type: local' to run here")
        if kind is None:
            kind = "ssh"
        if kind == "command" and raw.get("argv") is None:
            self.fail("type command needs 'argv'", "the program to run, e.g. argv: [docker, exec, -i, trainer]")
        accepted = _TYPE_KEYS[kind]
        local = kind == "local"  # paths on this machine: ``~`` expanded here

        own: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "type":
                continue
            if key not in accepted:
                if value is None:
                    continue  # nothing set: harmless
                self.wrong_type_key(key, kind)
            own[key] = self.value(key, value, local=local)

        merged: dict[str, Any] = {}
        if kind == "ssh":
            merged.update(defaults)
        for key, value in own.items():
            if key == "env" and isinstance(value, dict) and isinstance(merged.get("env"), dict):
                value = {**merged["env"], **value}
            merged[key] = value
        fields = {key: value for key, value in merged.items() if value is not _UNSET}
        if local and "workdir" not in fields:
            fields["workdir"] = _expanduser(HostProfile.workdir, self.environ)
        if "known_hosts" not in fields:
            fields["known_hosts"] = _expanduser(HostProfile.known_hosts, self.environ)
        return HostProfile(name=name, type=kind, **fields)

    def wrong_type_key(self, key: str, kind: str) -> NoReturn:
        """``key`` is valid for some host types, not for this host's ``kind``."""
        owners = [t for t in HOST_TYPES if key in _TYPE_KEYS[t]]
        if kind == "local" and "ssh" in owners and len(owners) == 1:
            self.fail(f"{key!r} is only for ssh hosts; this host is local", "give it 'host: ADDRESS' to make it an ssh host")
        where = " and ".join(owners)
        keys = ", ".join(k for k in _HOST_KEYS if k in _TYPE_KEYS[kind])
        hint = f"a {kind} host takes: {keys}"
        if owners == ["command"]:
            hint = f"{key!r} belongs to 'type: command'; " + hint
        self.fail(f"{key!r} is only for {where} hosts; this host is {kind}", hint)

    def ray_host(self, name: str, raw: dict[str, Any]) -> HostProfile:
        """A ``type: ray`` host: its own keys only; the driver's python, env, workdir are the via host's."""
        for key, value in raw.items():
            if key in _RAY_KEYS:
                continue
            if key in _HOST_KEYS:
                if value is None:
                    continue
                self.fail(f"{key!r} does not apply to a ray host",
                          "set it on the 'via' host, where the Ray driver runs (its python must have ray)")
            self.unknown_key(key, _RAY_KEYS)
        if raw.get("via") is None:
            self.fail("type ray needs 'via'", "add 'via: HOST': the host (local or ssh) where the Ray driver runs")
        fields: dict[str, Any] = {"connect_timeout": RAY_CONNECT_TIMEOUT}
        for key, value in raw.items():
            if key == "type" or value is None:
                continue
            if key == "via":
                fields["via"] = self.string(key, value).strip()
            elif key == "address":
                fields["ray_address"] = self.string(key, value).strip()
            elif key == "resources":
                fields["resources"] = self.check_resources(key, value)
            elif key == "runtime_env":
                if not isinstance(value, dict):
                    self.fail(f"{key!r} must be a mapping (Ray's runtime_env), got {_describe(value)}",
                              'e.g. runtime_env: {env_vars: {OMP_NUM_THREADS: "1"}}')
                fields["runtime_env"] = self.expand_tree(key, value)
            elif key == "workers":
                fields["workers"] = self.check_workers(key, value)
            else:
                fields[key] = self.value(key, value, local=False)
        return HostProfile(name=name, type="ray", **{k: v for k, v in fields.items() if v is not _UNSET})

    def check_resources(self, key: str, raw: Any) -> dict[str, Any]:
        example = "e.g. resources: {num_cpus: 1, num_gpus: 0.5, resources: {TPU: 1}}"
        if not isinstance(raw, dict):
            self.fail(f"{key!r} must be a mapping, got {_describe(raw)}", example)
        out: dict[str, Any] = {}
        for name, value in raw.items():
            if name not in _RAY_RESOURCE_KEYS:
                hint = did_you_mean(name, _RAY_RESOURCE_KEYS) if isinstance(name, str) else None
                self.fail(f"{key!r} has an unknown key {name!r}",
                          hint or f"valid keys: {', '.join(_RAY_RESOURCE_KEYS)} (custom resources go under 'resources:')")
            if name == "resources":
                if not isinstance(value, dict):
                    self.fail(f"'{key}.resources' must be a mapping of custom resource name to amount, got {_describe(value)}",
                              example)
                out[name] = {str(k): self.amount(f"{key}.resources.{k}", v) for k, v in value.items()}
            else:
                out[name] = self.amount(f"{key}.{name}", value)
        return out

    def amount(self, key: str, raw: Any) -> float | int:
        value = self.number(key, raw)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            self.fail(f"{key!r} must be a number of at least 0, got {_describe(value)}")
        return int(value) if float(value).is_integer() else float(value)

    def check_workers(self, key: str, raw: Any) -> int:
        return self.whole_number(key, raw)

    def number(self, key: str, raw: Any) -> Any:
        """``raw`` as a float when it is text that reads as one (``${VAR}`` expanded), else as it is."""
        text = self.scalar_text(key, raw)
        if text is None:
            return raw
        try:
            return float(text)
        except ValueError:
            return text

    def whole_number(self, key: str, raw: Any, hint: str | None = None) -> int:
        """A whole number of at least 1 (``${VAR}`` expanded)."""
        value: Any = raw
        text = self.scalar_text(key, raw)
        if text is not None:
            value = int(text) if text.isdigit() else text
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.fail(f"{key!r} must be a whole number of at least 1, got {_describe(value)}", hint)
        return value

    def expand_tree(self, key: str, raw: Any) -> Any:
        """``${VAR}`` expanded in every string of a nested mapping or list (keys left alone)."""
        if isinstance(raw, str):
            return self.expand(key, raw)
        if isinstance(raw, dict):
            return {k: self.expand_tree(f"{key}.{k}", v) for k, v in raw.items()}
        if isinstance(raw, list):
            return [self.expand_tree(key, v) for v in raw]
        return raw

    # -- cross references

    def check_vias(self, hosts: Mapping[str, HostProfile]) -> None:
        for profile in hosts.values():
            if profile.type != "ray":
                continue
            self.section = f"host {profile.name!r}"
            target = hosts.get(profile.via or "")
            if target is None:
                self.fail(f"'via' is {profile.via!r}, which names no host", self.hosts_hint(profile.via or "", hosts))
            if target.type == "ray":
                self.fail(f"'via' is {profile.via!r}, which is a ray host too",
                          "name the host (local or ssh) where the Ray driver runs")

    def hosts_hint(self, name: str, hosts: Mapping[str, HostProfile]) -> str:
        known = "known hosts: " + ", ".join(hosts)
        suggestion = did_you_mean(name, list(hosts))
        return f"{suggestion} {known}" if suggestion else known

    def check_gateways(self, hosts: Mapping[str, HostProfile]) -> None:
        for profile in hosts.values():
            if profile.gateway is None:
                continue
            self.section = f"host {profile.name!r}"
            target = hosts.get(profile.gateway)
            if target is None:
                self.fail(f"'gateway' is {profile.gateway!r}, which names no host", self.hosts_hint(profile.gateway, hosts))
            if target.type != "ssh":
                self.fail(f"'gateway' is {profile.gateway!r}, which is a {target.type} host", "a gateway must be an ssh host")
        for profile in hosts.values():
            chain = [profile.name]
            current = profile
            while current.gateway is not None:
                if current.gateway in chain:
                    cycle = chain[chain.index(current.gateway):] + [current.gateway]
                    self.section = f"host {cycle[0]!r}"
                    self.fail(
                        "'gateway' makes a cycle: " + " -> ".join(cycle),
                        "one host in the chain must connect directly (set 'gateway: null' to opt out of defaults)",
                    )
                chain.append(current.gateway)
                current = hosts[current.gateway]

    # -- values

    def value(self, key: str, raw: Any, *, local: bool) -> Any:
        if raw is None:
            return _UNSET
        return self.CHECKS[key](self, key, raw, local)

    def expand(self, key: str, text: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            escaped, body, closed = match.groups()
            if escaped:
                return "${" + body + (closed or "")
            if not closed:
                self.fail(f"{key!r} has an unterminated '${{' in {text!r}", "write ${VAR} or ${VAR:-fallback}; $${ for a literal ${")
            ref = _VAR_BODY.fullmatch(body)
            if ref is None:
                self.fail(f"{key!r} has a bad variable reference '${{{body}}}'", "write ${VAR} or ${VAR:-fallback}; $${ for a literal ${")
            name, fallback = ref.groups()
            value = self.environ.get(name)
            if value is None or (value == "" and fallback is not None):
                if fallback is None:
                    self.fail(f"{key!r} uses ${{{name}}}, which is not set", f"set {name}, or write ${{{name}:-fallback}}")
                return fallback
            return value

        return _VAR_REF.sub(substitute, text)

    def string(self, key: str, raw: Any, *, empty: bool = False) -> str:
        if not isinstance(raw, str):
            hint = "quote it" if isinstance(raw, (int, float)) else None
            self.fail(f"{key!r} must be a string, got {_describe(raw)}", hint)
        value = self.expand(key, raw)
        if not empty and not value.strip():
            self.fail(f"{key!r} must not be empty")
        return value

    def choice(self, key: str, raw: Any, choices: tuple[str, ...]) -> str:
        value = self.expand(key, raw) if isinstance(raw, str) else raw
        if value not in choices:
            quoted = [repr(c) for c in choices]
            options = " or ".join(quoted) if len(quoted) < 3 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
            hint = did_you_mean(value, choices) if isinstance(value, str) else None
            self.fail(f"{key!r} must be {options}, got {_describe(value)}", hint)
        return value

    def scalar_text(self, key: str, raw: Any) -> str | None:
        """A string value expanded and stripped (so ``port: ${PORT}`` works), else None."""
        if isinstance(raw, str):
            return self.expand(key, raw).strip()
        return None

    def check_host(self, key: str, raw: Any, local: bool) -> str:
        """An address or ``~/.ssh/config`` alias, held to OpenSSH's host name rules (after expansion)."""
        value = self.string(key, raw)
        if "@" in value:
            self.fail(f"{key!r} must be an address or alias, got {value!r}", "put the user in 'user:'")
        problem = hostname_problem(value)
        if problem:
            self.fail(f"{key!r} is not a valid host name: {value!r} {problem}", HOST_RULES_HINT)
        return value

    def check_user(self, key: str, raw: Any, local: bool) -> str:
        """A remote login name, held to OpenSSH's user name rules (after expansion)."""
        value = self.string(key, raw)
        problem = user_problem(value)
        if problem:
            self.fail(f"{key!r} is not a valid user name: {value!r} {problem}", USER_RULES_HINT)
        return value

    def check_port(self, key: str, raw: Any, local: bool) -> int:
        value: Any = raw
        text = self.scalar_text(key, raw)
        if text is not None:
            value = int(text) if text.isdigit() else text
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            self.fail(f"{key!r} must be an integer from 1 to 65535, got {_describe(value)}")
        return value

    def check_text(self, key: str, raw: Any, local: bool) -> str:
        return self.string(key, raw)

    def check_path(self, key: str, raw: Any, local: bool) -> str:
        """A path on this machine: ``~`` expanded."""
        return _expanduser(self.string(key, raw), self.environ)

    def check_maybe_local_path(self, key: str, raw: Any, local: bool) -> str:
        """``python``/``workdir``: a local path (``~`` expanded) or a remote one (left alone)."""
        value = self.string(key, raw)
        return _expanduser(value, self.environ) if local else value

    def check_identity_file(self, key: str, raw: Any, local: bool) -> tuple[str, ...]:
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list):
            self.fail(f"{key!r} must be a path or a list of paths, got {_describe(raw)}")
        paths = []
        for index, item in enumerate(items, 1):
            if not isinstance(item, str):
                self.fail(f"{key!r} item {index} must be a path, got {_describe(item)}")
            paths.append(_expanduser(self.string(key, item), self.environ))
        return tuple(paths)

    def check_env(self, key: str, raw: Any, local: bool) -> dict[str, str]:
        if not isinstance(raw, dict):
            self.fail(f"{key!r} must be a mapping of NAME: value, got {_describe(raw)}", 'e.g. env: {OMP_NUM_THREADS: "8"}')
        env: dict[str, str] = {}
        for name, value in raw.items():
            if not isinstance(name, str) or not name or "=" in name or "\0" in name:
                self.fail(f"{key!r} has a bad variable name {_describe(name)}", "names are strings without '='")
            item = f"{key}.{name}"
            if value is None:
                env[name] = ""
            elif isinstance(value, bool):
                env[name] = "true" if value else "false"
            elif isinstance(value, str):
                env[name] = self.expand(item, value)
            elif isinstance(value, (int, float)):
                env[name] = str(value)
            elif hasattr(value, "isoformat"):  # a YAML date or timestamp
                env[name] = value.isoformat()
            else:
                self.fail(f"{item!r} must be a string, number or boolean, got {_describe(value)}")
        return env

    def check_pip(self, key: str, raw: Any, local: bool) -> tuple[str, ...]:
        if not isinstance(raw, list):
            self.fail(f"{key!r} must be a list of requirements, got {_describe(raw)}", 'e.g. pip: ["numpy>=2", "pandas"]')
        requirements = []
        for index, item in enumerate(raw, 1):
            if not isinstance(item, str):
                self.fail(f"{key!r} item {index} must be a string, got {_describe(item)}", f'quote it: "{item}"')
            requirements.append(self.string(key, item).strip())
        return tuple(requirements)

    def check_argv(self, key: str, raw: Any, local: bool) -> tuple[str, ...]:
        example = "e.g. argv: [docker, exec, -i, trainer]"
        if isinstance(raw, str):
            import shlex

            import yaml

            try:
                words = shlex.split(raw)
                example = "write it as a list: argv: " + yaml.safe_dump(words, default_flow_style=True, width=1 << 16).strip()
            except ValueError:
                pass
        if not isinstance(raw, list):
            self.fail(f"{key!r} must be a list of strings (the program and its arguments), got {_describe(raw)}", example)
        if not raw:
            self.fail(f"{key!r} must not be empty: it names the program to run", example)
        items = []
        for index, item in enumerate(raw, 1):
            if not isinstance(item, str):
                hint = f'quote it: "{item}"' if isinstance(item, (int, float)) else example
                self.fail(f"{key!r} item {index} must be a string, got {_describe(item)}", hint)
            value = self.expand(key, item)
            if "\0" in value:
                self.fail(f"{key!r} item {index} contains a NUL character")
            items.append(value)
        if not items[0].strip():
            self.fail(f"{key!r} item 1 (the program) must not be empty", example)
        return tuple(items)

    def check_trust(self, key: str, raw: Any, local: bool) -> str:
        return self.choice(key, raw, TRUST_LEVELS)

    def check_allow(self, key: str, raw: Any, local: bool) -> tuple[str, ...]:
        example = 'e.g. allow: ["mypkg.models.Result"]'
        if not isinstance(raw, list):
            self.fail(f"{key!r} must be a list of class names (module.Class), got {_describe(raw)}", example)
        names = []
        for index, item in enumerate(raw, 1):
            name = self.string(key, item).strip() if isinstance(item, str) else None
            if not name or "." not in name or any(not part.isidentifier() for part in name.split(".")):
                self.fail(f"{key!r} item {index} must be a dotted class name like pkg.mod.Class, got {_describe(item)}",
                          example)
            names.append(name)
        return tuple(names)

    def check_policy(self, key: str, raw: Any, local: bool) -> str:
        if raw is False or (isinstance(raw, str) and raw.strip().lower() in ("no", "off", "false", "ignore", "none")):
            self.fail(
                f"{key!r} must be 'strict' or 'accept-new', got {_describe(raw)}",
                "skyctl never turns host-key checking off; use 'accept-new' to trust a new host on first use",
            )
        return self.choice(key, raw, HOST_KEY_POLICIES)

    def check_seconds(self, key: str, raw: Any, local: bool) -> float:
        value = self.number(key, raw)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            self.fail(f"{key!r} must be a number of seconds greater than 0, got {_describe(value)}")
        return float(value)

    def check_count(self, key: str, raw: Any, local: bool) -> int:
        """A whole number, at least 1 (``${VAR}`` expanded, so ``keepalive_count: ${N}`` works)."""
        return self.whole_number(key, raw, "keepalives cannot be turned off; for a slow link raise 'keepalive' or this count")

    def check_bool(self, key: str, raw: Any, local: bool) -> bool:
        if isinstance(raw, bool):
            return raw
        text = self.scalar_text(key, raw)
        if text is not None and text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        self.fail(f"{key!r} must be true or false, got {_describe(raw if text is None else text)}")

    CHECKS: dict[str, Callable[[_Parser, str, Any, bool], Any]] = {
        "host": check_host,
        "port": check_port,
        "user": check_user,
        "identity_file": check_identity_file,
        "python": check_maybe_local_path,
        "workdir": check_maybe_local_path,
        "env": check_env,
        "pip": check_pip,
        "known_hosts": check_path,
        "host_key_policy": check_policy,
        "gateway": check_text,
        "connect_timeout": check_seconds,
        "keepalive": check_seconds,
        "keepalive_count": check_count,
        "reuse": check_bool,
        "reuse_idle": check_seconds,
        "trust": check_trust,
        "allow": check_allow,
        "argv": check_argv,
        "shell": check_bool,
    }
