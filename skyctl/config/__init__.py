"""``skyward.yaml`` → validated host profiles.

The package owns the config file: where it is found, how it is parsed,
every rule it is validated against, and the template ``skyctl init``
writes. The whole file is validated when loaded, whichever host is then
used; each problem is a ``ConfigError`` whose message names the file, the
host and the key (``skyward.yaml: host 'gpu-1': unknown key 'prot'``) and
whose hint says what to do (``did you mean 'port'?``).

Modules (each imports only those above it, the stdlib and ``skyctl.errors``;
PyYAML only when a text has to be parsed; no typer, rich or paramiko, so the
CLI, the Python API and the transports can all use it cheaply):

- ``names``: OpenSSH's host and user name rules (``hostname_problem``, ``user_problem``).
- ``expand``: ``${VAR}`` / ``${VAR:-fallback}`` in values, ``~`` in local paths.
- ``files``: which file is read (``--config``, ``$SKYCTL_CONFIG``, ...), read with a size cap.
- ``yamldoc``: YAML → document, refusing duplicate keys and alias bombs (size/depth limits).
- ``memo``: parsed documents remembered as JSON in the private runtime dir (a warm call skips PyYAML).
- ``checks``: ``Checker``, one ``check_*`` per kind of value, each failing with file, host, key and hint.
- ``normalize``: ``FrozenMap`` and what a profile built in code is made to hold (tuples, floats, ``~``).
- ``schema``: **the table**: ``HostProfile``'s fields, one per key, and the key lists derived from it.
- ``destination``: ``-H user@host[:port]``: an ssh host without a profile (``skyctl.destination`` re-exports it).
- ``model``: ``Config``, ``Group``, ``Target``: what ``--host`` resolves to.
- ``template``: ``INIT_TEMPLATE``, built from the table's examples.
- ``parser``: one validation pass (types, ``defaults:``, groups, gateway/via references); ``load_config``.

Rules beyond the contract's example, chosen here:

- ``${VAR}`` and ``${VAR:-fallback}`` are expanded in every string value (not
  in keys); ``:-`` uses the fallback when ``VAR`` is unset *or empty*, as the
  shell does. ``$${`` is a literal ``${``.
- A key set to ``null`` means "not set": the built-in default applies, and it
  overrides a value from ``defaults:`` (``gateway: null`` opts a host out).
- ``~`` is expanded in paths on this machine: ``identity_file``,
  ``known_hosts``, and a local host's ``workdir`` and ``python``. An ssh or
  command host's ``workdir`` and ``python`` are left alone (the remote home applies).
- Each ``type:`` accepts its own keys (the table's ``takes``); a key of another
  type is an error naming the types it belongs to.
- ``type: command``: ``argv`` is a non-empty list of strings (a number must be
  quoted, as in ``pip``), ``shell`` a boolean; ``defaults:`` do not apply to it.
- Duplicate keys in one mapping are an error, not "last one wins".
- ``host`` and ``user`` are checked as OpenSSH's ``ssh`` checks a host and a
  user name given on its command line, after ``${VAR}`` expansion (see ``names``).
- ``keepalive_count`` is a whole number, at least 1. There is no way to turn
  keepalives off: liveness rests on them (a stalled host would otherwise hang
  a call for ever); a flaky link wants larger values, not none.

How to add a key (say ``timeout:``, a duration): add one field to
``HostProfile`` in ``schema.py`` with :func:`~skyctl.config.schema.key`::

    timeout: float | None = key(
        None, check=Checker.check_seconds, takes=(SSH, LOCAL, COMMAND, RAY),
        doc="seconds a call may run (None: no limit)",
        examples={SSH: ("3600", "seconds a call may run before it is stopped")})

That one entry makes the key accepted by the types in ``takes`` (and by
``defaults:`` when ssh takes it), checked by ``check`` (add a ``check_*`` to
``Checker`` for a new kind of value, e.g. ``check_duration`` for ``90s``),
listed in did-you-mean and "valid keys" hints, and shown by ``skyctl init``
where ``examples`` says (regenerate the repository's ``skyward.yaml`` from
``INIT_TEMPLATE``: a test compares them). ``normalize=`` makes a profile
built in code hold what the parser would have made (``float``, a tuple, ...);
``type_defaults=`` gives a default that differs by host type. Its place in
the class is its place in hints and in the template. A new host type adds its name to ``checks.HOST_TYPES``,
its keys' ``takes``, and a ``_Section`` in ``template.py``.
"""

from __future__ import annotations

from .checks import HOST_KEY_POLICIES, HOST_TYPES, TRUST_LEVELS
from .files import CONFIG_FILENAME, ENV_CONFIG, MAX_CONFIG_BYTES, find_config_path
from .model import BUILTIN_LOCAL, ENV_HOST, Config, Group, Target, builtin_config
from .names import HOST_RULES_HINT, USER_RULES_HINT, hostname_problem, user_problem
from .parser import load_config, parse_config
from .schema import RAY_CONNECT_TIMEOUT, HostProfile
from .template import INIT_TEMPLATE, write_init
from .yamldoc import MAX_CONFIG_DEPTH, MAX_CONFIG_NODES

__all__ = [
    "BUILTIN_LOCAL",
    "CONFIG_FILENAME",
    "ENV_CONFIG",
    "ENV_HOST",
    "HOST_KEY_POLICIES",
    "HOST_RULES_HINT",
    "HOST_TYPES",
    "INIT_TEMPLATE",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_NODES",
    "RAY_CONNECT_TIMEOUT",
    "TRUST_LEVELS",
    "USER_RULES_HINT",
    "Config",
    "Group",
    "HostProfile",
    "Target",
    "builtin_config",
    "find_config_path",
    "hostname_problem",
    "load_config",
    "parse_config",
    "user_problem",
    "write_init",
]
