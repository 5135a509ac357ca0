"""OpenSSH's rules for a host name and a remote user name, as ``ssh`` checks them on its command line.

Why here and not in the SSH transport: the config (``host:``, ``user:``), a
profile-less destination (``-H user@host``) and the transport (names from
``~/.ssh/config``) all hold names to the same rules, and ``~/.ssh/config`` may
hand a name to a shell (``Match exec``, ``%h``/``%r``): shell
metacharacters, control characters and a leading ``-`` are refused
(``valid_hostname``/``valid_ruser`` in OpenSSH's ``misc.c``).

Standard library only.
"""

from __future__ import annotations

__all__ = ["HOST_RULES_HINT", "USER_RULES_HINT", "hostname_problem", "user_problem"]

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
