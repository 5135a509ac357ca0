"""``${VAR}`` and ``${VAR:-fallback}`` in string values, and ``~`` in paths on this machine.

Both read the ``environ`` the config is loaded with (not ``os.environ``), so
tests and the API can pass their own. ``:-`` uses the fallback when ``VAR``
is unset *or empty*, as the shell does; ``$${`` is a literal ``${``. Keys are
never expanded, only values.

Standard library only.
"""

from __future__ import annotations

import os
import re
from typing import Mapping

__all__ = ["ExpansionError", "expand_vars", "expanduser"]

_VAR_REF = re.compile(r"\$(\$)?\{([^}]*)(\})?")
_VAR_BODY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)
_SYNTAX_HINT = "write ${VAR} or ${VAR:-fallback}; $${ for a literal ${"


class ExpansionError(Exception):
    """A value's ``${...}`` cannot be expanded: the caller adds where (file, host) to ``message``."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def expand_vars(key: str, text: str, environ: Mapping[str, str]) -> str:
    """``text`` (the value of ``key``, named in errors) with every ``${VAR}`` replaced from ``environ``."""

    def substitute(match: re.Match[str]) -> str:
        escaped, body, closed = match.groups()
        if escaped:
            return "${" + body + (closed or "")
        if not closed:
            raise ExpansionError(f"{key!r} has an unterminated '${{' in {text!r}", _SYNTAX_HINT)
        ref = _VAR_BODY.fullmatch(body)
        if ref is None:
            raise ExpansionError(f"{key!r} has a bad variable reference '${{{body}}}'", _SYNTAX_HINT)
        name, fallback = ref.groups()
        value = environ.get(name)
        if value is None or (value == "" and fallback is not None):
            if fallback is None:
                raise ExpansionError(f"{key!r} uses ${{{name}}}, which is not set", f"set {name}, or write ${{{name}:-fallback}}")
            return fallback
        return value

    return _VAR_REF.sub(substitute, text)


def expanduser(path: str, environ: Mapping[str, str]) -> str:
    """``~`` and ``~/...`` from ``environ['HOME']`` (falling back to the real home); ``~user`` as usual."""
    if path == "~" or path.startswith("~/"):
        home = environ.get("HOME")
        if home:
            return home if path == "~" else home.rstrip("/") + path[1:]
    return os.path.expanduser(path)
