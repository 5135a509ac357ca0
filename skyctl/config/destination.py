"""``-H user@host[:port]`` and ``-H ssh://[user@]host[:port]``: an ssh host without a profile.

A name given to ``--host`` is first a profile, then a group; only then is it
read as a destination, and only when it says so: it has an ``@`` or starts
with ``ssh://``. A bare word (``gpu-2``) is never dialled, so a typo of a
profile name stays a config error with a did-you-mean.

Accepted forms (as ``ssh`` and ``scp`` take them):

- ``user@host``, ``user@host:port``
- ``user@[v6]``, ``user@[v6]:port``, and ``user@v6`` (no port: two or more ``:``)
- ``ssh://host``, ``ssh://user@host``, ``ssh://user@host:port``, ``ssh://user@[v6]:port``

The user and host are held to OpenSSH's rules (``names.user_problem`` and
``names.hostname_problem``): no shell metacharacters, no leading ``-``. The
user is everything before the *last* ``@`` (OpenSSH allows ``user@domain``
as a user name). A destination is not ``${VAR}``-expanded: it is what was typed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

from skyctl.errors import ConfigError

from .names import HOST_RULES_HINT, USER_RULES_HINT, hostname_problem, user_problem

__all__ = ["Destination", "FORMS", "looks_like_destination", "parse_destination"]

#: how the forms are named in messages
FORMS = "user@host[:port] or ssh://[user@]host[:port]"

_SCHEME = "ssh://"


@dataclass(frozen=True)
class Destination:
    """Where a profile-less ``--host`` points: what was typed, and its parts."""

    #: the destination as written: the host's name in messages, summaries and ``[HOST]`` tags
    text: str
    host: str
    user: str | None = None
    port: int | None = None


def looks_like_destination(text: str) -> bool:
    """Whether ``text`` is meant as a destination rather than a profile name."""
    return "@" in text or text.lower().startswith(_SCHEME)


def parse_destination(text: str) -> Destination:
    """``text`` (see the module docstring) as its parts; ``ConfigError`` (exit 3) saying what is wrong."""
    rest = text[len(_SCHEME):] if text.lower().startswith(_SCHEME) else text
    uri = rest is not text
    if uri and "/" in rest:
        _fail(text, "an ssh:// destination has no path", f"write it as {FORMS}")
    user: str | None = None
    if "@" in rest:
        user, _, rest = rest.rpartition("@")
        problem = user_problem(user)
        if problem:
            _fail(text, f"user {user!r} {problem}", USER_RULES_HINT)
    elif not uri:
        _fail(text, "it names no user", f"write it as {FORMS}")
    host, port_text = _split_port(text, rest)
    problem = hostname_problem(host)
    if problem:
        _fail(text, f"host {host!r} {problem}", HOST_RULES_HINT)
    port = None
    if port_text is not None:
        if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            _fail(text, f"port {port_text!r} is not a number from 1 to 65535", f"write it as {FORMS}")
        port = int(port_text)
    return Destination(text, host, user, port)


def _split_port(text: str, rest: str) -> tuple[str, str | None]:
    """``host[:port]`` / ``[v6][:port]`` / ``v6`` → (host, port text or None)."""
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            _fail(text, "an IPv6 address in [] must be followed by nothing or :PORT", "e.g. root@[::1]:2222")
        return host, (tail[1:] if tail else None)
    if rest.count(":") == 1:
        host, _, port = rest.partition(":")
        return host, port
    return rest, None  # a bare IPv6 address (no port), or a name


def _fail(text: str, problem: str, hint: str) -> NoReturn:
    raise ConfigError(f"{text!r} is not a valid ssh destination: {problem}", hint)
