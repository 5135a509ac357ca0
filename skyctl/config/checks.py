"""The checks a value of ``skyward.yaml`` goes through: one method per kind of value.

:class:`Checker` holds where a value is (file, section) so that every problem
is a ``ConfigError`` naming the file, the host and the key, with a hint. The
``check_*`` methods have one signature, ``(key, raw, local) -> value``, and
are what the schema's table (:mod:`skyctl.config.schema`) names per key;
``local`` is true for a host that runs on this machine (its paths get ``~``
expanded here). A check returns the value as ``HostProfile`` holds it.

Standard library, ``skyctl.errors`` and the name rules only.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, NoReturn

from skyctl.errors import ConfigError, did_you_mean

from .expand import ExpansionError, expand_vars, expanduser
from .names import HOST_RULES_HINT, USER_RULES_HINT, hostname_problem, user_problem

__all__ = ["HOST_KEY_POLICIES", "HOST_TYPES", "RAY_RESOURCE_KEYS", "TRUST_LEVELS", "Check", "Checker", "describe"]

#: every ``type:`` a host may have; ``ssh`` is implied by ``host:``
HOST_TYPES = ("local", "ssh", "command", "ray")
HOST_KEY_POLICIES = ("strict", "accept-new")
#: ``trust:``: what the Python API rebuilds from values a host sends (the CLI never unpickles)
TRUST_LEVELS = ("data", "full")
#: what a ray host's ``resources:`` may hold, as Ray's task options name them
RAY_RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory", "resources")

#: what a duration looks like, for hints
DURATION_FORMS = "a number of seconds or a duration such as 90, 30s, 5m, 2h, 1h30m"

_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``1.5``, ``30s``, ``5m``, ``2h`` or ``1h30m`` (units in that order, each once);
    ``ValueError`` for anything else, or for a duration that is not greater than 0."""
    import re

    raw = text.strip().lower()
    if not raw:
        raise ValueError("empty")
    try:
        seconds = float(raw)
    except ValueError:
        match = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", raw)
        if match is None or not any(match.groups()):
            raise ValueError(f"not a duration: {text!r}") from None
        seconds = sum(float(part) * unit for part, unit in zip(match.groups(), _DURATION_UNITS.values()) if part)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"not greater than 0: {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``30s``, ``5m``, ``1h30m``, ``1.5s``: how messages name a limit."""
    if seconds < 60 or seconds != int(seconds):
        return f"{seconds:g}s"
    whole, out = int(seconds), ""
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            out += f"{whole // size}{unit}"
            whole %= size
    return out

_PASSWORD_KEYS = frozenset({"password", "passwd", "passphrase", "key_passphrase"})
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def describe(value: Any) -> str:
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


class Checker:
    """Where in the file a value is, and the checks that turn a raw YAML value into a profile's value."""

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
            self.fail(f"{key!r} is not allowed: no passwords in {self.where}: use keys or ssh-agent",
                      "load the key with ssh-add, or set identity_file")
        hint = did_you_mean(key, valid) if isinstance(key, str) else None
        self.fail(f"unknown key {key!r}", hint or "valid keys: " + ", ".join(valid))

    # -- building blocks

    def expand(self, key: str, text: str) -> str:
        try:
            return expand_vars(key, text, self.environ)
        except ExpansionError as err:
            problem = err
        self.fail(problem.message, problem.hint)  # outside the except: the message is the whole story

    def string(self, key: str, raw: Any, *, empty: bool = False) -> str:
        if not isinstance(raw, str):
            hint = "quote it" if isinstance(raw, (int, float)) else None
            self.fail(f"{key!r} must be a string, got {describe(raw)}", hint)
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
            self.fail(f"{key!r} must be {options}, got {describe(value)}", hint)
        return value

    def scalar_text(self, key: str, raw: Any) -> str | None:
        """A string value expanded and stripped (so ``port: ${PORT}`` works), else None."""
        if isinstance(raw, str):
            return self.expand(key, raw).strip()
        return None

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
            self.fail(f"{key!r} must be a whole number of at least 1, got {describe(value)}", hint)
        return value

    def amount(self, key: str, raw: Any) -> float | int:
        """A number of at least 0 (a Ray resource amount), whole numbers kept whole."""
        value = self.number(key, raw)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            self.fail(f"{key!r} must be a number of at least 0, got {describe(value)}")
        return int(value) if float(value).is_integer() else float(value)

    def expand_tree(self, key: str, raw: Any) -> Any:
        """``${VAR}`` expanded in every string of a nested mapping or list (keys left alone)."""
        if isinstance(raw, str):
            return self.expand(key, raw)
        if isinstance(raw, dict):
            return {k: self.expand_tree(f"{key}.{k}", v) for k, v in raw.items()}
        if isinstance(raw, list):
            return [self.expand_tree(key, v) for v in raw]
        return raw

    # -- the checks the schema names: (key, raw, local) -> value

    def check_type(self, key: str, raw: Any, local: bool) -> str:
        return self.choice(key, raw, HOST_TYPES)

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
            self.fail(f"{key!r} must be an integer from 1 to 65535, got {describe(value)}")
        return value

    def check_text(self, key: str, raw: Any, local: bool) -> str:
        return self.string(key, raw)

    def check_stripped(self, key: str, raw: Any, local: bool) -> str:
        """A non-empty string, surrounding spaces dropped (a ray host's ``via`` and ``address``)."""
        return self.string(key, raw).strip()

    def check_path(self, key: str, raw: Any, local: bool) -> str:
        """A path on this machine: ``~`` expanded."""
        return expanduser(self.string(key, raw), self.environ)

    def check_maybe_local_path(self, key: str, raw: Any, local: bool) -> str:
        """``python``/``workdir``: a local path (``~`` expanded) or a remote one (left alone)."""
        value = self.string(key, raw)
        return expanduser(value, self.environ) if local else value

    def check_identity_file(self, key: str, raw: Any, local: bool) -> tuple[str, ...]:
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list):
            self.fail(f"{key!r} must be a path or a list of paths, got {describe(raw)}")
        paths = []
        for index, item in enumerate(items, 1):
            if not isinstance(item, str):
                self.fail(f"{key!r} item {index} must be a path, got {describe(item)}")
            paths.append(expanduser(self.string(key, item), self.environ))
        return tuple(paths)

    def check_env(self, key: str, raw: Any, local: bool) -> dict[str, str]:
        if not isinstance(raw, dict):
            self.fail(f"{key!r} must be a mapping of NAME: value, got {describe(raw)}", 'e.g. env: {OMP_NUM_THREADS: "8"}')
        env: dict[str, str] = {}
        for name, value in raw.items():
            if not isinstance(name, str) or not name or "=" in name or "\0" in name:
                self.fail(f"{key!r} has a bad variable name {describe(name)}", "names are strings without '='")
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
                self.fail(f"{item!r} must be a string, number or boolean, got {describe(value)}")
        return env

    def check_pip(self, key: str, raw: Any, local: bool) -> tuple[str, ...]:
        if not isinstance(raw, list):
            self.fail(f"{key!r} must be a list of requirements, got {describe(raw)}", 'e.g. pip: ["numpy>=2", "pandas"]')
        requirements = []
        for index, item in enumerate(raw, 1):
            if not isinstance(item, str):
                self.fail(f"{key!r} item {index} must be a string, got {describe(item)}", f'quote it: "{item}"')
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
            self.fail(f"{key!r} must be a list of strings (the program and its arguments), got {describe(raw)}", example)
        if not raw:
            self.fail(f"{key!r} must not be empty: it names the program to run", example)
        items = []
        for index, item in enumerate(raw, 1):
            if not isinstance(item, str):
                hint = f'quote it: "{item}"' if isinstance(item, (int, float)) else example
                self.fail(f"{key!r} item {index} must be a string, got {describe(item)}", hint)
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
            self.fail(f"{key!r} must be a list of class names (module.Class), got {describe(raw)}", example)
        names = []
        for index, item in enumerate(raw, 1):
            name = self.string(key, item).strip() if isinstance(item, str) else None
            if not name or "." not in name or any(not part.isidentifier() for part in name.split(".")):
                self.fail(f"{key!r} item {index} must be a dotted class name like pkg.mod.Class, got {describe(item)}",
                          example)
            names.append(name)
        return tuple(names)

    def check_policy(self, key: str, raw: Any, local: bool) -> str:
        if raw is False or (isinstance(raw, str) and raw.strip().lower() in ("no", "off", "false", "ignore", "none")):
            self.fail(
                f"{key!r} must be 'strict' or 'accept-new', got {describe(raw)}",
                "skyctl never turns host-key checking off; use 'accept-new' to trust a new host on first use",
            )
        return self.choice(key, raw, HOST_KEY_POLICIES)

    def check_seconds(self, key: str, raw: Any, local: bool) -> float:
        value = self.number(key, raw)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            self.fail(f"{key!r} must be a number of seconds greater than 0, got {describe(value)}")
        return float(value)

    def check_duration(self, key: str, raw: Any, local: bool) -> float:
        """Seconds, from a number or text such as ``30s``, ``5m``, ``2h``, ``1h30m`` (``${VAR}`` expanded)."""
        if isinstance(raw, bool):
            self.fail(f"{key!r} must be a duration, got {describe(raw)}", DURATION_FORMS)
        if isinstance(raw, (int, float)):
            raw = str(raw)
        text = self.scalar_text(key, raw)
        try:
            return parse_duration(text if text is not None else "")
        except ValueError:
            self.fail(f"{key!r} must be a duration greater than 0, got {describe(raw)}", DURATION_FORMS)

    def check_count(self, key: str, raw: Any, local: bool) -> int:
        """A whole number, at least 1 (``${VAR}`` expanded, so ``keepalive_count: ${N}`` works)."""
        return self.whole_number(key, raw, "keepalives cannot be turned off; for a slow link raise 'keepalive' or this count")

    def check_workers(self, key: str, raw: Any, local: bool) -> int:
        return self.whole_number(key, raw)

    def check_bool(self, key: str, raw: Any, local: bool) -> bool:
        if isinstance(raw, bool):
            return raw
        text = self.scalar_text(key, raw)
        if text is not None and text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        self.fail(f"{key!r} must be true or false, got {describe(raw if text is None else text)}")

    def check_resources(self, key: str, raw: Any, local: bool) -> dict[str, Any]:
        """Ray's per-task resources: ``num_cpus``, ``num_gpus``, ``memory``, ``resources: {NAME: amount}``."""
        example = "e.g. resources: {num_cpus: 1, num_gpus: 0.5, resources: {TPU: 1}}"
        if not isinstance(raw, dict):
            self.fail(f"{key!r} must be a mapping, got {describe(raw)}", example)
        out: dict[str, Any] = {}
        for name, value in raw.items():
            if name not in RAY_RESOURCE_KEYS:
                hint = did_you_mean(name, RAY_RESOURCE_KEYS) if isinstance(name, str) else None
                self.fail(f"{key!r} has an unknown key {name!r}",
                          hint or f"valid keys: {', '.join(RAY_RESOURCE_KEYS)} (custom resources go under 'resources:')")
            if name == "resources":
                if not isinstance(value, dict):
                    self.fail(f"'{key}.resources' must be a mapping of custom resource name to amount, got {describe(value)}",
                              example)
                out[name] = {str(k): self.amount(f"{key}.resources.{k}", v) for k, v in value.items()}
            else:
                out[name] = self.amount(f"{key}.{name}", value)
        return out

    def check_runtime_env(self, key: str, raw: Any, local: bool) -> dict[str, Any]:
        """Ray's ``runtime_env``, passed through with ``${VAR}`` expanded in its strings."""
        if not isinstance(raw, dict):
            self.fail(f"{key!r} must be a mapping (Ray's runtime_env), got {describe(raw)}",
                      'e.g. runtime_env: {env_vars: {OMP_NUM_THREADS: "1"}}')
        return self.expand_tree(key, raw)  # type: ignore[no-any-return]


#: what the schema's table names for a key: an unbound ``Checker.check_*``
Check = Callable[[Checker, str, Any, bool], Any]
