"""The profile schema: one table, one entry per key, and every key list derived from it.

The table is :class:`HostProfile`'s body: each field made with :func:`key`
is one key of ``hosts:``, and its entry says everything about it: its type
(the annotation), its default, its check (a ``Checker.check_*``), which host
types take it, one doc line, and how ``skyctl init``'s template shows it.
:data:`KEYS` reads the table back; the key lists below (what each type
accepts, what ``defaults:`` may set, what a ray host takes), the parser's
per-key checks, the unknown-key did-you-mean, the "only for ssh hosts"
hints and the template (:mod:`skyctl.config.template`) all come from it.

Ray's options go through the same table (like Ray's ``ray_option_utils``):
``via``, ``address``, ``resources``, ``runtime_env``, ``workers`` are
entries taken by ``ray`` only.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Mapping

from .checks import HOST_TYPES, Check, Checker
from .files import CONFIG_FILENAME
from .names import address_label, hostname_problem, user_problem
from .normalize import (
    FrozenMap, Normalize, as_float, as_tuple, at_least_one, expand_path, expand_paths, frozen_env, frozen_or_none,
    frozen_resources, name_rule, worker_path,
)  # fmt: skip

__all__ = [
    "DEFAULTS_KEYS", "HOST_KEYS", "KEY", "KEYS", "RAY_CONNECT_TIMEOUT", "RAY_KEYS", "RAY_ONLY_KEYS", "TYPE_KEYS",
    "UNSET", "FrozenMap", "HostProfile", "Key", "key", "shown_keys",
]  # fmt: skip

#: a key that was set to null: use the built-in default, overriding ``defaults:``
UNSET: Any = object()

#: seconds a ray host's driver may take to connect to the cluster (``ray.init``) unless ``connect_timeout`` says
RAY_CONNECT_TIMEOUT = 30.0

SSH, LOCAL, COMMAND, RAY = "ssh", "local", "command", "ray"


@dataclass(frozen=True)
class Key:
    """One key of a host in ``skyward.yaml``: an entry of the table (see :func:`key`)."""

    #: the YAML key
    name: str
    #: the ``HostProfile`` field it fills (the name, but for ``address`` → ``ray_address``)
    field: str
    #: the field's annotation, as written
    type: str
    #: the built-in default (``MISSING``: none, the key is required)
    default: Any
    #: turns the raw YAML value into the field's value, or fails with the message and hint
    check: Check
    #: the host types that accept it, in ``HOST_TYPES`` order
    takes: tuple[str, ...]
    #: what it means, in one line
    doc: str
    #: per host type: (value, comment) as ``skyctl init``'s template shows it; types missing are not shown
    examples: Mapping[str, tuple[str, str]]
    #: a host's own (``type``, ``host``): never set from ``defaults:``
    per_host: bool = False
    #: a mapping that merges over the one from ``defaults:`` (``env``) rather than replacing it
    merges: bool = False
    #: "here": a path on this machine, its default ``~``-expanded too; "worker": on the machine the worker
    #: runs on (``~``-expanded only for a local host); "": not a path
    path: str = ""
    #: a default that differs by host type (a ray host's ``connect_timeout``)
    type_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: for a profile built in code: the value made what the profile holds (None: as given)
    normalize: Normalize | None = None


def key(
    default: Any = MISSING,
    *,
    check: Check,
    takes: tuple[str, ...],
    doc: str,
    examples: Mapping[str, tuple[str, str]] | None = None,
    yaml: str | None = None,
    per_host: bool = False,
    merges: bool = False,
    path: str = "",
    type_defaults: Mapping[str, Any] | None = None,
    normalize: Normalize | None = None,
) -> Any:
    """A ``HostProfile`` field that is a key of ``skyward.yaml``: one entry of the table."""
    entry = dict(check=check, takes=tuple(t for t in HOST_TYPES if t in takes), doc=doc, examples=examples or {},
                 yaml=yaml, per_host=per_host, merges=merges, path=path, type_defaults=type_defaults or {},
                 normalize=normalize)
    return field(default=default, metadata={"key": entry})


_ALL = (LOCAL, SSH, COMMAND, RAY)
_NOT_RAY = (LOCAL, SSH, COMMAND)


@dataclass(frozen=True)
class HostProfile:
    """One validated host: where the worker runs and how to reach it. Its fields are the schema's table.

    Built by :func:`skyctl.config.parse_config`; may also be built directly
    (``env`` is frozen, sequences become tuples, local paths get ``~`` expanded).
    """

    #: the profile's name in ``hosts:``
    name: str
    type: str = key(
        check=Checker.check_type, takes=_ALL, per_host=True,
        doc="local (a child process here), ssh (implied by host:), command (argv run here) or ray",
        examples={LOCAL: ("local", "the worker runs as a child process on this machine"),
                  COMMAND: ("command", "recipes (docker, kubectl, srun, sudo, ssh): docs/hosts.md"), RAY: ("ray", "")})
    host: str | None = key(
        None, check=Checker.check_host, takes=(SSH,), per_host=True, normalize=name_rule(hostname_problem),
        doc="address or ~/.ssh/config alias",
        examples={SSH: ("gpu-1.example.com", "address, or an alias from ~/.ssh/config")})
    port: int | None = key(
        None, check=Checker.check_port, takes=(SSH,), doc="None: ~/.ssh/config, else 22 (resolved by the transport)",
        examples={SSH: ("22", "default: ~/.ssh/config, else 22")})
    user: str | None = key(
        None, check=Checker.check_user, takes=(SSH,), normalize=name_rule(user_problem),
        doc="None: ~/.ssh/config, else the current user",
        examples={SSH: ("ubuntu", "default: ~/.ssh/config, else your user name")})
    identity_file: tuple[str, ...] = key(
        (), check=Checker.check_identity_file, takes=(SSH,), path="here", normalize=expand_paths,
        doc="private key files on this machine, ~ expanded; ssh-agent is used too",
        examples={SSH: ("~/.ssh/id_ed25519", "or a list; ssh-agent is used too")})
    python: str | None = key(
        None, check=Checker.check_maybe_local_path, takes=_NOT_RAY, path="worker", normalize=worker_path,
        doc="None: local → sys.executable; ssh, command → python3 (see effective_python)",
        examples={LOCAL: ("python3", "default: the Python that runs skyctl"),
                  SSH: ("python3", "interpreter on the remote (same major.minor as here)"),
                  COMMAND: ("python3", "as the program finds it (same major.minor as here)")})
    workdir: str = key(
        "~/.cache/skyctl", check=Checker.check_maybe_local_path, takes=_NOT_RAY, path="worker", normalize=worker_path,
        doc="bundle and venv cache; ~ expanded for local, left for the remote side for ssh and command",
        examples={SSH: ("~/.cache/skyctl", "on the remote: where the worker bundle and envs are kept"),
                  COMMAND: ("~/.cache/skyctl", "over there: the worker bundle and envs")})
    env: Mapping[str, str] = key(
        FrozenMap(), check=Checker.check_env, takes=_NOT_RAY, merges=True, normalize=frozen_env,
        doc="extra environment for the worker",
        examples={LOCAL: ('{OMP_NUM_THREADS: "4"}', ""), SSH: ('{OMP_NUM_THREADS: "8"}', "")})
    pip: tuple[str, ...] = key(
        (), check=Checker.check_pip, takes=(SSH, COMMAND), normalize=as_tuple,
        doc="requirements installed into a cached venv on the remote",
        examples={SSH: ('["numpy>=2"]', "installed once into a cached venv on the remote")})
    known_hosts: str = key(
        "~/.ssh/known_hosts", check=Checker.check_path, takes=(SSH,), path="here", normalize=expand_path,
        doc="known_hosts file on this machine, ~ expanded", examples={SSH: ("~/.ssh/known_hosts", "")})
    host_key_policy: str = key(
        "strict", check=Checker.check_policy, takes=(SSH,),
        doc="strict: unknown or changed key refused; accept-new: trust on first use",
        examples={SSH: ("strict", "strict: unknown or changed key refused; accept-new: trust on first use")})
    gateway: str | None = key(
        None, check=Checker.check_text, takes=(SSH,), doc="name of another (ssh) profile to jump through",
        examples={SSH: ("bastion", "reach this host through another profile (like ProxyJump)")})
    connect_timeout: float = key(
        10.0, check=Checker.check_seconds, takes=(SSH, COMMAND, RAY), normalize=as_float,
        type_defaults={RAY: RAY_CONNECT_TIMEOUT}, doc="seconds", examples={SSH: ("10", "seconds")})
    keepalive: float = key(
        15.0, check=Checker.check_seconds, takes=_NOT_RAY, normalize=as_float,
        doc="seconds between SSH keepalives (requests the server must answer, like ServerAliveInterval)",
        examples={SSH: ("15", "seconds between SSH keepalives (each one must be answered)")})
    keepalive_count: int = key(
        3, check=Checker.check_count, takes=_NOT_RAY, normalize=at_least_one,
        doc="unanswered keepalives in a row after which the connection is lost (like ServerAliveCountMax)",
        examples={SSH: ("3", "unanswered keepalives in a row before the connection counts as lost")})
    timeout: float | None = key(
        None, check=Checker.check_duration, takes=_ALL,
        doc="how long a call may run (per chunk attempt in a distributed pipe): 90, 30s, 5m, 2h (None: no limit)",
        examples={SSH: ("1h", "a call (a pipe's chunk) running longer is ended: exit 124 (--timeout)")})
    reuse: bool = key(
        True, check=Checker.check_bool, takes=(SSH, RAY),
        doc="keep the SSH connection for later calls (ray, via a local host: a spare driver, warm)",
        examples={SSH: ("true", "keep the SSH connection for later calls (like ControlPersist)"),
                  RAY: ("true", "via a local host: spare drivers wait, warm, for the next runs")})
    reuse_idle: float = key(
        60.0, check=Checker.check_seconds, takes=(SSH, RAY), normalize=as_float,
        doc="seconds an unused kept connection stays open (ray: a spare driver waits)",
        examples={SSH: ("60", "seconds an unused kept connection stays open"),
                  RAY: ("60", "seconds a spare driver waits for a run")})
    trust: str = key(
        "data", check=Checker.check_trust, takes=_ALL,
        doc="data: the API rebuilds only plain data types from this host's values; full: anything",
        examples={SSH: ("data", "Python API: rebuild only plain data from this host (full: anything)")})
    allow: tuple[str, ...] = key(
        (), check=Checker.check_allow, takes=_ALL, normalize=as_tuple,
        doc="more classes (pkg.mod.Class) the API may rebuild from this host's values",
        examples={SSH: ('["mypkg.models.Result"]', "Python API: more classes to rebuild from this host's values")})
    argv: tuple[str, ...] = key(
        (), check=Checker.check_argv, takes=(COMMAND,), normalize=as_tuple,
        doc="the program run here, [python, -c, stub] appended",
        examples={COMMAND: ("[docker, exec, -i, trainer]", "skyctl appends: python3 -c <stub>; never -t")})
    shell: bool = key(
        False, check=Checker.check_bool, takes=(COMMAND,),
        doc="append [python, -c, stub] as one shell-quoted argument (for ssh)",
        examples={COMMAND: ("false", "true: append one shell-quoted string instead (for ssh)")})
    via: str | None = key(
        None, check=Checker.check_stripped, takes=(RAY,), doc="the host (local, ssh, ...) whose worker is the Ray driver",
        examples={RAY: ("gpu-1", "the host where the Ray driver runs; its python must have ray")})
    ray_address: str = key(
        "auto", check=Checker.check_stripped, takes=(RAY,), yaml="address",
        doc="what the driver passes to ray.init(address=...)", examples={RAY: ("auto", "ray.init address on that host")})
    resources: Mapping[str, Any] = key(
        FrozenMap(), check=Checker.check_resources, takes=(RAY,), normalize=frozen_resources,
        doc="per task: num_cpus, num_gpus, memory, resources ({NAME: amount})",
        examples={RAY: ("{num_cpus: 1}", "per task: num_cpus, num_gpus, memory, resources: {NAME: amount}")})
    runtime_env: Mapping[str, Any] | None = key(
        None, check=Checker.check_runtime_env, takes=(RAY,), normalize=frozen_or_none,
        doc="passed through to each task's runtime_env when given",
        examples={RAY: ('{env_vars: {OMP_NUM_THREADS: "1"}}', "passed through to every task")})
    workers: int = key(
        2, check=Checker.check_workers, takes=(RAY,), normalize=at_least_one,
        doc="a distributed pipe's chunk tasks in flight (one driver process each)",
        examples={RAY: ("2", "pipe: chunk tasks in flight (one driver process each)")})
    #: the config file the profile was read from, as messages name it (None: built in code); not compared
    config_file: str | None = field(default=None, compare=False, repr=False)

    @property
    def config_name(self) -> str:
        """The config file as a hint names it: the one read (``-c other.yaml``), else ``skyward.yaml``."""
        return self.config_file or CONFIG_FILENAME

    def __post_init__(self) -> None:
        if self.type not in HOST_TYPES:
            raise ValueError(f"HostProfile {self.name!r}: type must be one of {', '.join(HOST_TYPES)}, not {self.type!r}")
        if self.type == SSH and not self.host:
            raise ValueError(f"HostProfile {self.name!r}: an ssh host needs 'host'")
        if self.type == COMMAND and (not self.argv or isinstance(self.argv, str)
                                     or not all(isinstance(a, str) for a in self.argv) or not self.argv[0]):
            raise ValueError(f"HostProfile {self.name!r}: a command host needs 'argv', a non-empty list of strings")
        if self.type == RAY and not self.via:
            raise ValueError(f"HostProfile {self.name!r}: a ray host needs 'via'")
        for entry in KEYS:
            if entry.normalize is not None:
                value = entry.normalize(self, entry.field, getattr(self, entry.field))
                object.__setattr__(self, entry.field, value)

    @property
    def address(self) -> str:
        """``local`` for a local host, the command line for a command host, else
        ``user@host:port`` with only the parts known."""
        if self.type == LOCAL:
            return "local"
        if self.type == COMMAND:
            import shlex

            return shlex.join(self.argv)
        if self.type == RAY:
            return f"ray {self.ray_address} via {self.via}"
        return address_label(self.user, self.host or "", self.port)

    @property
    def effective_python(self) -> str:
        """The interpreter that will run the worker: ``python``, else the type's default."""
        if self.python:
            return self.python
        return sys.executable if self.type == LOCAL else "python3"


def _entry(spec: Field[Any]) -> Key:
    meta = dict(spec.metadata["key"])
    return Key(name=meta.pop("yaml") or spec.name, field=spec.name, type=str(spec.type), default=spec.default, **meta)


# -- what is derived from the table

#: every key, in table order
KEYS: tuple[Key, ...] = tuple(_entry(f) for f in fields(HostProfile) if "key" in f.metadata)
#: the entry of each YAML key
KEY: Mapping[str, Key] = {entry.name: entry for entry in KEYS}
#: the keys each host type accepts, in table order
TYPE_KEYS: Mapping[str, tuple[str, ...]] = {t: tuple(k.name for k in KEYS if t in k.takes) for t in HOST_TYPES}
#: the keys of a ray host that no other type takes
RAY_ONLY_KEYS: frozenset[str] = frozenset(k.name for k in KEYS if k.takes == (RAY,))
#: every key a local, ssh or command host may have: what an unknown key is matched against
HOST_KEYS: tuple[str, ...] = tuple(k.name for k in KEYS if k.name not in RAY_ONLY_KEYS)
#: what ``defaults:`` may set: an ssh host's keys, but for its own ``type`` and ``host``
DEFAULTS_KEYS: tuple[str, ...] = tuple(k for k in TYPE_KEYS[SSH] if not KEY[k].per_host)


def shown_keys(kind: str) -> tuple[str, ...]:
    """A host type's keys as a ray host's "valid keys" and the template list them: ``type``, then the
    keys only this type takes, then the others; ssh (which takes nearly all) in table order."""
    names = TYPE_KEYS[kind]
    if kind == SSH:
        return names
    own = tuple(k for k in names if KEY[k].takes == (kind,))
    return ("type", *own, *(k for k in names if k != "type" and k not in own))


#: every key a ``type: ray`` host may have (its driver runs as the ``via`` host says: python, env, ...)
RAY_KEYS: tuple[str, ...] = shown_keys(RAY)
