"""Exit statuses and the exception for each: the one place a failure gets its code.

Every failure a user can cause is a ``SkyctlError`` subclass carrying a one-line
message and an optional hint; ``cli.main`` turns it into that line on stderr and
the exit status below. ``Interrupted``/``Cancelled`` (at the end) are no failures
but the signals that cancel a call in a group run. Nothing here imports the rest of skyctl.
"""

from __future__ import annotations

from enum import IntEnum, unique
from typing import Any


@unique
class ExitStatus(IntEnum):
    """Process exit codes, as the contract lists them."""

    OK = 0
    REMOTE_RAISED = 1
    USAGE = 2
    CONFIG = 3
    CONNECT = 4
    REMOTE_ENVIRONMENT = 5
    CONNECTION_LOST = 6
    BAD_RECORD = 65
    TIMED_OUT = 124
    INTERRUPTED = 130


class SkyctlError(Exception):
    """Base of every skyctl failure: a one-line message, a hint, an exit status.

    The CLI prints the hint on a line of its own; for API code the hint is
    also a note of the exception (``add_note``), so the traceback a user sees
    says what to do, not only what went wrong."""

    exit_status: ExitStatus = ExitStatus.REMOTE_RAISED
    #: text shown above the message (a remote traceback), or ""
    details: str = ""
    _hint: str | None = None
    _hint_note: str | None = None

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    @property
    def hint(self) -> str | None:
        """What to do about it (the CLI's ``hint:`` line), or None."""
        return self._hint

    @hint.setter
    def hint(self, value: str | None) -> None:
        notes = getattr(self, "__notes__", None)
        if notes is not None and self._hint_note in notes:
            notes.remove(self._hint_note)
        self._hint = value
        self._hint_note = f"hint: {value}" if value else None
        if self._hint_note is not None and hasattr(self, "add_note"):  # Python 3.11+: tracebacks print notes
            self.add_note(self._hint_note)

    def __str__(self) -> str:
        return self.message


class UsageError(SkyctlError):
    """Bad flags, bad TARGET, bad ``--arg``, no stream parameter for ``pipe``."""

    exit_status = ExitStatus.USAGE


class ConfigError(SkyctlError):
    """The config file is malformed, names an unknown host, or is missing."""

    exit_status = ExitStatus.CONFIG


class ConnectError(SkyctlError):
    """The host could not be reached or authenticated."""

    exit_status = ExitStatus.CONNECT


class RemoteEnvironmentError(SkyctlError):
    """The remote Python, bootstrap, pip install or a needed module is unusable."""

    exit_status = ExitStatus.REMOTE_ENVIRONMENT


class ConnectionLost(SkyctlError):
    """The worker died or the connection dropped during a call."""

    exit_status = ExitStatus.CONNECTION_LOST


class ChunkLost(ConnectionLost):
    """A call (a ``pipe`` chunk) was lost, not the host: the Ray task running it
    (its Ray worker process or node died), or a call queued on a worker that was
    ended over the time limit of the call before it. A distributed ``pipe`` runs the chunk
    again (skipping the values already written) and keeps using the host; on
    its own, a call that ends so is exit 6 like any lost connection."""

    #: what happened to the task, without the host's name (for a re-run's warning)
    reason: str = ""


class TimedOut(SkyctlError):
    """A call ran past its ``--timeout`` (or sent no value and took no record for its
    ``--idle-timeout``): the worker ended the function (its ``finally`` ran, its processes
    were ended), or the client ended the connection to a worker that did not answer.
    Exit status 124, as coreutils ``timeout``."""

    exit_status = ExitStatus.TIMED_OUT

    def __init__(self, message: str, hint: str | None = None, *, host: str = "", limit: float = 0.0,
                 idle: bool = False) -> None:
        super().__init__(message, hint)
        #: the host it timed out on, the limit in seconds, and whether it was the idle limit
        self.host = host
        self.limit = limit
        self.idle = idle

    def in_chunk(self, where: str) -> TimedOut:
        """The same timeout, its message naming the chunk (``chunk 4 (stdin lines 301–400)``)."""
        if where and where not in self.message:
            self.message = f"{self.message} in {where}"
            self.args = (self.message,)
        return self


class BadRecord(SkyctlError):
    """A stdin record could not be read as the stream parameter's type."""

    exit_status = ExitStatus.BAD_RECORD

    def __init__(self, message: str, hint: str | None = None, *, line: int = 0) -> None:
        super().__init__(message, hint)
        self.line = line


class RemoteError(SkyctlError):
    """A remote exception that could not be rebuilt locally, or that is not an
    ``Exception`` (a remote ``SystemExit`` must not end the client); ``str()``
    is its traceback, ``type_name`` its class."""

    exit_status = ExitStatus.REMOTE_RAISED

    def __init__(self, type_name: str, message: str, traceback_text: str) -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.remote_message = message
        self.traceback_text = traceback_text
        #: the remote exception rebuilt locally, when its type could be
        self.exception: BaseException | None = None

    def __str__(self) -> str:
        return self.traceback_text or self.message


class RemoteTraceback(Exception):
    """Chained as ``__cause__`` of a rebuilt remote exception so tracebacks show the remote frames."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n\n" + self.text.rstrip("\n")


def error_info(exc: SkyctlError) -> dict[str, str | None]:
    """How an error crosses a process boundary (JSON-able): the nearest class this module
    defines that ``error_from_info`` can rebuild, the message and the hint."""
    known = _rebuildable()
    name = next((cls.__name__ for cls in type(exc).__mro__ if known.get(cls.__name__) is cls), SkyctlError.__name__)
    return {"type": name, "message": exc.message, "hint": exc.hint}


def error_from_info(info: "dict[str, object]", default: "type[SkyctlError]" = SkyctlError,
                    message: str = "failed") -> SkyctlError:
    """The error ``error_info`` gave (``default`` for a type not known here; ``message`` when it has none)."""
    cls = _rebuildable().get(str(info.get("type")), default)
    hint = info.get("hint")
    return cls(str(info.get("message") or message), str(hint) if hint else None)


def _rebuildable() -> "dict[str, type[SkyctlError]]":
    """This module's error classes made from (message, hint) alone, by name."""
    found: dict[str, type[SkyctlError]] = {}
    todo: list[type[SkyctlError]] = [SkyctlError]
    while todo:
        cls = todo.pop()
        if cls.__module__ == __name__ and cls.__init__ is SkyctlError.__init__:
            found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


def did_you_mean(word: str, choices: "list[str] | tuple[str, ...] | set[str]") -> str | None:
    """A hint naming the closest of ``choices`` to ``word``, or None."""
    import difflib

    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


class GroupError(SkyctlError):
    """A call on several hosts failed on some: ``results`` holds, per host in
    group order, its value or the exception it ended with."""

    def __init__(self, message: str, results: dict[str, Any] | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.results = results = results if results is not None else {}
        first = next((r for r in results.values() if isinstance(r, SkyctlError)), None)
        self.exit_status = first.exit_status if first is not None else ExitStatus.REMOTE_RAISED


class Interrupted(Exception):
    """Raised in a host's thread to make it cancel its call (Ctrl-C, ``--fail-fast``, a fatal error elsewhere)."""


class Cancelled(Interrupted):
    """A call cancelled because of a failure elsewhere (``--fail-fast``, or a chunk after a failed one
    with ``--keep-order``): the host did not fail, and its exit status is not the run's."""
