"""One validation pass over one ``skyward.yaml``: the file's shape, each host, groups, cross references.

What each key accepts comes from the schema's table (:mod:`skyctl.config.schema`);
this module owns the rules between keys: which type a host is, what
``defaults:`` merge into, the keys a type does not take, ``groups:``, and
that ``gateway:`` and ``via:`` name hosts (no cycles). The whole file is
validated when loaded, whichever host is then used; the first problem found,
in file order, is raised as a ``ConfigError``.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping, NoReturn

from skyctl.errors import ConfigError, did_you_mean

from .checks import HOST_TYPES, Checker, describe
from .expand import expanduser
from .files import MAX_CONFIG_BYTES, display, find_config_path, read_config, too_big
from .memo import DOCUMENTS
from .model import BUILTIN_LOCAL, Config, Group, builtin_config, builtin_local
from .schema import DEFAULTS_KEYS, HOST_KEYS, KEY, KEYS, RAY_KEYS, RAY_ONLY_KEYS, TYPE_KEYS, UNSET, HostProfile
from .yamldoc import load_yaml

__all__ = ["Parser", "load_config", "parse_config"]

_TOP_KEYS = ("default", "defaults", "hosts", "groups")
_GROUP_KEYS = ("hosts", "workers")


def load_config(
    explicit: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Config:
    """Find (see :func:`~skyctl.config.files.find_config_path`), read and validate the config; built-in if none."""
    environ = os.environ if environ is None else environ
    path = find_config_path(explicit, environ, cwd)
    if path is None:
        return builtin_config(environ)
    return parse_config(read_config(path), path, environ)


def parse_config(text: str, path: pathlib.Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Validate the YAML ``text`` of a config file (``path`` is where it came from, for messages)."""
    environ = os.environ if environ is None else environ
    return Parser(display(path), environ).parse(text, path)


class Parser(Checker):
    """One validation pass over one file; raises the first problem found, in file order."""

    def value(self, key: str, raw: Any, *, local: bool) -> Any:
        """The checked value of ``key`` (its table entry's check), or ``UNSET`` for null."""
        if raw is None:
            return UNSET
        return KEY[key].check(self, key, raw, local)

    def hosts_hint(self, name: str, hosts: Mapping[str, HostProfile]) -> str:
        known = "known hosts: " + ", ".join(hosts)
        suggestion = did_you_mean(name, list(hosts))
        return f"{suggestion} {known}" if suggestion else known

    # -- the file

    def parse(self, text: str, path: pathlib.Path | None) -> Config:
        if len(text) > MAX_CONFIG_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
            raise ConfigError(*too_big(self.where))
        data = DOCUMENTS.load(text, path, lambda text: load_yaml(text, self.where))
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.fail(f"the file must be a mapping with keys {', '.join(_TOP_KEYS)}; got {describe(data)}")
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
        return Config(path=path, default=default, hosts=hosts, groups=groups, defaults=defaults)

    def defaults(self, raw: Any) -> dict[str, Any]:
        self.section = "defaults"
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.section = ""
            self.fail(f"'defaults' must be a mapping of host keys, got {describe(raw)}")
        for key in raw:
            if key in HOST_KEYS and key not in DEFAULTS_KEYS:
                self.fail(f"{key!r} cannot be a default", "each ssh host sets its own 'host'; defaults apply only to ssh hosts")
            if key not in DEFAULTS_KEYS:
                self.unknown_key(key, DEFAULTS_KEYS)
        return {key: self.value(key, value, local=False) for key, value in raw.items()}

    def groups(self, raw: Any, hosts: dict[str, HostProfile]) -> dict[str, Group]:
        self.section = ""
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.fail(f"'groups' must be a mapping of group name to hosts, got {describe(raw)}",
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
                    self.fail(f"'workers' must be a whole number of at least 1, got {describe(workers)}")
            if not isinstance(members, list) or not members:
                self.fail(f"a group is a non-empty list of host names (or a mapping with 'hosts:'), got {describe(members)}",
                          "e.g. farm: [box-1, box-2]")
            names: list[str] = []
            for index, member in enumerate(members, 1):
                if not isinstance(member, str):
                    self.fail(f"item {index} must be a host name, got {describe(member)}")
                if member in raw and member not in hosts:
                    self.fail(f"{member!r} is a group: a group lists hosts only")
                if member not in hosts:
                    self.fail(f"{member!r} names no host", self.hosts_hint(member, hosts))
                if member not in names:
                    names.append(member)
            groups[name] = Group(name, tuple(names), workers)
        self.section = ""
        return groups

    # -- hosts

    def hosts(self, raw: Any, defaults: dict[str, Any]) -> dict[str, HostProfile]:
        self.section = ""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.fail(f"'hosts' must be a mapping of host name to settings, got {describe(raw)}")
        profiles: dict[str, HostProfile] = {}
        if BUILTIN_LOCAL not in raw:
            profiles[BUILTIN_LOCAL] = builtin_local(self.environ)
        for name, settings in raw.items():
            self.section = ""
            if not isinstance(name, str) or not name.strip():
                self.fail(f"host name {describe(name)} is not a name", "quote it, e.g. \"gpu-1\":")
            profiles[name] = self.host(name, settings, defaults)
        return profiles

    def host(self, name: str, raw: Any, defaults: dict[str, Any]) -> HostProfile:
        self.section = f"host {name!r}"
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.fail(f"settings must be a mapping, got {describe(raw)}", "e.g. 'host: gpu-1.example.com' or 'type: local'")
        if isinstance(raw.get("type"), str) and self.expand("type", raw["type"]).strip() == "ray":
            return self.ray_host(name, raw)
        for key in raw:
            if key in RAY_ONLY_KEYS:
                self.fail(f"{key!r} is only for ray hosts", "add 'type: ray' (and 'via: HOST') to run calls as Ray tasks")
            if key not in HOST_KEYS:
                self.unknown_key(key, HOST_KEYS)

        kind = raw.get("type")
        if kind is not None:
            kind = self.check_type("type", kind, False)
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
        accepted = TYPE_KEYS[kind]
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
            if KEY[key].merges and isinstance(value, dict) and isinstance(merged.get(key), dict):
                value = {**merged[key], **value}
            merged[key] = value
        fields = {KEY[key].field: value for key, value in merged.items() if value is not UNSET}
        for entry in KEYS:  # a path default is one on this machine too: ``~`` from the config's HOME
            here = entry.path == "here" or (entry.path == "worker" and local)
            if here and entry.field not in fields and isinstance(entry.default, str):
                fields[entry.field] = expanduser(entry.default, self.environ)
        return HostProfile(name=name, type=kind, config_file=self.where, **fields)

    def wrong_type_key(self, key: str, kind: str) -> NoReturn:
        """``key`` is valid for some host types, not for this host's ``kind``."""
        owners = [t for t in HOST_TYPES if key in TYPE_KEYS[t]]
        if kind == "local" and "ssh" in owners and len(owners) == 1:
            self.fail(f"{key!r} is only for ssh hosts; this host is local", "give it 'host: ADDRESS' to make it an ssh host")
        where = " and ".join(owners)
        keys = ", ".join(k for k in HOST_KEYS if k in TYPE_KEYS[kind])
        hint = f"a {kind} host takes: {keys}"
        if owners == ["command"]:
            hint = f"{key!r} belongs to 'type: command'; " + hint
        self.fail(f"{key!r} is only for {where} hosts; this host is {kind}", hint)

    def ray_host(self, name: str, raw: dict[str, Any]) -> HostProfile:
        """A ``type: ray`` host: its own keys only; the driver's python, env, workdir are the via host's."""
        for key, value in raw.items():
            if key in RAY_KEYS:
                continue
            if key in HOST_KEYS:
                if value is None:
                    continue
                self.fail(f"{key!r} does not apply to a ray host",
                          "set it on the 'via' host, where the Ray driver runs (its python must have ray)")
            self.unknown_key(key, RAY_KEYS)
        if raw.get("via") is None:
            self.fail("type ray needs 'via'", "add 'via: HOST': the host (local or ssh) where the Ray driver runs")
        fields = {k.field: k.type_defaults["ray"] for k in KEYS if "ray" in k.type_defaults}
        for key, value in raw.items():
            if key == "type" or value is None:
                continue
            fields[KEY[key].field] = self.value(key, value, local=False)
        return HostProfile(name=name, type="ray", config_file=self.where, **fields)

    # -- cross references

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
