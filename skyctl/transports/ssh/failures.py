"""Every way an SSH connection or command can fail, as the user is told it: one table.

A failure is an exception caught at one ``Stage`` of getting a command
running (resolving the name, the TCP connect, the SSH handshake, opening a
channel through a gateway, opening the session, exec). ``FAILURES`` maps
(stage, exception class, pattern in its text) to the error class, the
one-line message and the hint; the first row that matches wins, so the
specific rows come before the general ones. ``explain`` looks a failure up;
nothing else in skyctl reads an exception's text to decide what it was.

Patterns are searched (lower case) in the exception's text, to which an
``OSError`` adds `` [errno NAME]`` and a refused channel `` [code N]``, so
errno values and channel codes are matched the same way. Templates are
``str.format`` over the caller's facts (``Facts``): ``hostname``, ``port``,
``phase``, ``timeout``, ``gateway``, ``text`` (the exception's text), ...

Also here: the errors these failures become (``SshConnectError``,
``SessionRefused``) and ``HostKeyRefused``, which carries a finished error
out of paramiko's host key callback.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import re
from dataclasses import dataclass
from typing import Any

import paramiko

from ...errors import ConnectError, RemoteEnvironmentError, SkyctlError

__all__ = ["FAILURES", "Explained", "Facts", "HostKeyRefused", "OpenFailures", "SessionRefused", "SshConnectError",
           "Stage", "explain"]


class SshConnectError(ConnectError):
    """``cannot connect to <host>: <reason>``, the reason also kept alone (a gateway's error quotes it).

    ``final``: the message already names its host and says all there is (a
    changed host key, a gateway loop); a connection through that host as its
    gateway passes it on unchanged.
    """

    def __init__(self, message: str, hint: str | None = None, *, reason: str | None = None, final: bool = False) -> None:
        super().__init__(message, hint)
        self.reason = message if reason is None else reason
        self.final = final


class SessionRefused(SshConnectError):
    """The server refused a session channel (MaxSessions, or restrictions on the key): a kept
    connection gives up its spare, or the call connects on its own."""


class HostKeyRefused(paramiko.SSHException):
    """Raised by the host key policy inside paramiko's connect; carries the finished error."""

    def __init__(self, error: ConnectError) -> None:
        super().__init__(error.message)
        self.error = error


class Stage(enum.Enum):
    """Where in getting a command running a failure happened."""

    RESOLVE = "resolving the host name"
    TCP = "connecting (TCP)"
    BANNER = "waiting for the SSH banner"
    HANDSHAKE = "key exchange or authentication"
    GATEWAY = "opening a tunnel through the gateway"
    SESSION = "opening a session channel"
    EXEC = "running the command"
    KEY_FILE = "reading an identity file"


class Facts(dict):  # type: ignore[type-arg]
    """Values for the templates; a callable value is called only when a template names it
    (the keys an authentication offered: asked of ssh-agent)."""

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        return value() if callable(value) else value


@dataclass(frozen=True)
class Failure:
    """One row: at ``stages``, an instance of ``catches`` whose text matches ``pattern`` is ``error(message, hint)``."""

    stages: tuple[Stage, ...]
    catches: tuple[type[BaseException], ...]
    pattern: str
    error: type[SkyctlError]
    message: str
    hint: str | None = None
    #: also match when the exception's ``__context__``/``__cause__`` is one of ``catches``
    cause: bool = False
    #: ``text`` when the exception has none
    blank: str = ""


_TIMEOUT_HINT = ("the host may be down, or a firewall drops the packets; check the address and port, "
                 "or raise 'connect_timeout'")
_CLOSED_BEFORE_BANNER = "the connection was closed before the SSH banner (is port {port} an SSH server?)"
_CLOSED_BEFORE_BANNER_HINT = "check 'port:'; an sshd under load (MaxStartups) or a tcpwrapper can also drop connections"
_SERVER_CLOSED = "the server closed the connection {phase}"
_SERVER_CLOSED_HINT = ("see the server's sshd log (too many authentication failures, AllowUsers, or an incompatible "
                       "algorithm)")
_PASSPHRASE = "{path} is passphrase-protected (skyctl never prompts: add it to ssh-agent with ssh-add)"
_CLOSED = (EOFError, ConnectionResetError, BrokenPipeError)
_HANDSHAKE = (Stage.BANNER, Stage.HANDSHAKE)
_AUTH = paramiko.AuthenticationException

#: the table (first match wins)
FAILURES: tuple[Failure, ...] = (
    # -- finding the host
    Failure((Stage.RESOLVE,), (TimeoutError,), "", ConnectError, "timed out after {timeout:g}s resolving the host name",
            _TIMEOUT_HINT),
    Failure((Stage.RESOLVE,), (OSError,), "", ConnectError,
            "host name '{hostname}'{source} could not be resolved ({text})",
            "check 'host:' in {config_name} (or HostName in ~/.ssh/config) for a typo, and that DNS works here"),
    Failure((Stage.TCP,), (TimeoutError,), "", ConnectError, "timed out after {timeout:g}s connecting (TCP)",
            _TIMEOUT_HINT),
    Failure((Stage.TCP,), (OSError,), r"\[errno econnrefused\]", ConnectError, "connection refused on port {port}",
            "is sshd running on {hostname} and listening on port {port}? check 'port:' in {config_name}"),
    Failure((Stage.TCP,), (OSError,), r"\[errno (ehostunreach|enetunreach)\]", ConnectError,
            "{hostname} is unreachable ({text})", "check the address, your network/VPN, or reach it through a 'gateway:'"),
    Failure((Stage.TCP,), (OSError,), "", ConnectError, "{text}"),
    # -- the SSH handshake (banner, key exchange, authentication); ``phase`` says how far it got
    Failure(_HANDSHAKE, (TimeoutError,), "", ConnectError, "timed out after {timeout:g}s {phase}", _TIMEOUT_HINT),
    Failure(_HANDSHAKE, (BaseException,), "timeout", ConnectError, "timed out after {timeout:g}s {phase}", _TIMEOUT_HINT),
    Failure((Stage.BANNER,), (_AUTH,), "transport shut down", ConnectError, _CLOSED_BEFORE_BANNER,
            _CLOSED_BEFORE_BANNER_HINT),
    Failure((Stage.HANDSHAKE,), (_AUTH,), "transport shut down", ConnectError, _SERVER_CLOSED, _SERVER_CLOSED_HINT),
    Failure(_HANDSHAKE, (_AUTH,), "", ConnectError,
            "authentication failed for user '{user}': the server accepted none of {keys}{notes}",
            "set 'identity_file' (or IdentityFile in ~/.ssh/config) to a key whose .pub is in "
            "~{user}/.ssh/authorized_keys on the host, or load it into ssh-agent (ssh-add); check 'user:'"),
    Failure((Stage.BANNER,), _CLOSED, "", ConnectError, _CLOSED_BEFORE_BANNER, _CLOSED_BEFORE_BANNER_HINT),
    Failure((Stage.BANNER,), (EOFError, ConnectionResetError), "", ConnectError, _CLOSED_BEFORE_BANNER,
            _CLOSED_BEFORE_BANNER_HINT, cause=True),
    Failure((Stage.HANDSHAKE,), _CLOSED, "", ConnectError, _SERVER_CLOSED, _SERVER_CLOSED_HINT),
    Failure((Stage.HANDSHAKE,), (EOFError, ConnectionResetError), "", ConnectError, _SERVER_CLOSED,
            _SERVER_CLOSED_HINT, cause=True),
    Failure(_HANDSHAKE, (paramiko.SSHException,), "", ConnectError, "SSH error {phase}: {text}"),
    Failure(_HANDSHAKE, (OSError,), "", ConnectError, "{text} ({phase})"),
    Failure(_HANDSHAKE, (BaseException,), "", ConnectError, "{type}: {text} ({phase})"),
    # -- a tunnel (direct-tcpip) through the gateway; ``text`` is the gateway's reason
    Failure((Stage.GATEWAY,), (TimeoutError,), "", ConnectError, "timed out after {timeout:g}s connecting to the gateway",
            _TIMEOUT_HINT),
    Failure((Stage.GATEWAY,), (paramiko.ChannelException,), r"prohibited|\[code 1\]", ConnectError,
            "gateway '{gateway}' does not allow forwarding to {hostname}:{port} ({text})",
            "the gateway's sshd needs AllowTcpForwarding yes (and PermitOpen allowing this address)"),
    Failure((Stage.GATEWAY,), (paramiko.ChannelException,), "refused", ConnectError,
            "connection refused on port {port} (seen from gateway '{gateway}')",
            "is sshd running on {hostname} port {port}, as reached from the gateway? check 'host:'/'port:'"),
    Failure((Stage.GATEWAY,), (paramiko.ChannelException,), "name|resolve|not known|nodename", ConnectError,
            "host name '{hostname}' could not be resolved by gateway '{gateway}' ({text})",
            "check 'host:' in {config_name}: through a gateway it is resolved on the gateway"),
    Failure((Stage.GATEWAY,), (paramiko.ChannelException,), "timed out", ConnectError,
            "timed out after {timeout:g}s connecting from the gateway", _TIMEOUT_HINT),
    Failure((Stage.GATEWAY,), (paramiko.ChannelException,), "", ConnectError,
            "gateway '{gateway}' could not connect to {hostname}:{port} ({text})",
            "check 'host:'/'port:' as seen from the gateway"),
    Failure((Stage.GATEWAY,), (paramiko.SSHException,), "timeout", ConnectError,
            "timed out after {timeout:g}s connecting from the gateway", _TIMEOUT_HINT),
    Failure((Stage.GATEWAY,), (paramiko.SSHException,), "", ConnectError, "gateway '{gateway}' connection failed: {text}"),
    # -- the command's channel
    Failure((Stage.SESSION,), (paramiko.ChannelException,), "", SessionRefused,
            "the server refused a session channel ({text})",
            "the server's MaxSessions or a ForceCommand/restrictions on this key may forbid it"),
    Failure((Stage.SESSION,), (paramiko.SSHException, EOFError, OSError), "", ConnectError,
            "could not open a channel: {text}"),
    Failure((Stage.EXEC,), (paramiko.SSHException, EOFError, OSError), "", RemoteEnvironmentError,
            "the SSH server on {where} refused to run the worker command ({text})",
            "a ForceCommand or a restricted key (command=\"...\" in authorized_keys) may be in the way",
            blank="exec request denied"),
    # -- an identity file that could not be offered (a note in the authentication error)
    Failure((Stage.KEY_FILE,), (paramiko.PasswordRequiredException,), "", ConnectError, _PASSPHRASE),
    Failure((Stage.KEY_FILE,), (BaseException,), "password|encrypted", ConnectError, _PASSPHRASE),  # paramiko 5: TypeError
    Failure((Stage.KEY_FILE,), (BaseException,), "", ConnectError, "{path} could not be read ({text})", blank="{type}"),
    # -- anything else, anywhere: named by its type
    Failure(tuple(Stage), (BaseException,), "", ConnectError, "{type}: {text} ({phase})"),
)


@dataclass(frozen=True)
class Explained:
    """What a failure is, for the user: ``error(message, hint)`` (a ``ConnectError`` also gets the host in front)."""

    error: type[SkyctlError]
    message: str
    hint: str | None


def explain(stage: Stage, exc: BaseException, facts: Facts, *, text: str | None = None) -> Explained:
    """The first row of ``FAILURES`` for ``exc`` at ``stage``; ``text`` replaces the exception's own text
    (a refused tunnel: the reason the gateway gave, from paramiko's log)."""
    own = text if text is not None else _text(exc)
    subject = (text if text is not None else str(exc)).lower() + _tags(exc)
    for row in FAILURES:
        if stage not in row.stages:
            continue
        linked = (exc.__context__ or exc.__cause__) if row.cause else exc
        if not isinstance(linked, row.catches) or (row.pattern and not re.search(row.pattern, subject)):
            continue
        values = Facts(facts, type=type(exc).__name__)
        values["text"] = own or row.blank.format_map(values)
        return Explained(row.error, row.message.format_map(values),
                         row.hint.format_map(values) if row.hint else None)
    raise AssertionError("the last row of FAILURES matches anything")


def _text(exc: BaseException) -> str:
    if isinstance(exc, paramiko.ChannelException):
        return str(exc.text or exc.code)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _tags(exc: BaseException) -> str:
    if isinstance(exc, paramiko.ChannelException):
        return f" [code {exc.code}]"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f" [errno {errno.errorcode.get(exc.errno, exc.errno)}]".lower()
    return ""


class OpenFailures(logging.Handler):
    """Catches the reason a server gave for refusing a channel: paramiko keeps only the generic text
    of the code, and logs "Secsh channel N open FAILED: <server's reason>: <code text>"."""

    _MARK = "open FAILED:"

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.reason = ""

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            message = record.getMessage()
            if self._MARK in message:
                self.reason = message.split(self._MARK, 1)[1].strip()

