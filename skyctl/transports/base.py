"""What every transport gives the session: byte pipes to one started worker process.

A transport knows how to start a command on its host (a child process for
``local``, an exec channel for ``ssh``) and nothing about frames or calls; the
bootstrap and the session speak the protocol over the pipes it returns.
"""

from __future__ import annotations

from typing import Callable, Protocol, TypeVar

_Self = TypeVar("_Self", bound="ClosedOnExit")

#: seconds ``close`` gives a worker to exit after EOF on its stdin before SIGTERM
CLOSE_GRACE = 2.0
#: seconds after SIGTERM before SIGKILL
KILL_GRACE = 1.0


class WorkerPipes(Protocol):
    """The started command's stdin/stdout as blocking byte pipes, plus its stderr tail."""

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes from the command's stdout; fewer only at EOF."""

    def write(self, data: bytes) -> None:
        """All of ``data`` to the command's stdin; raises ``OSError`` when it is gone."""

    def close_stdin(self) -> None:
        """Signal EOF on the command's stdin (the worker then finishes and exits)."""

    def close(self) -> None:
        """Release the pipes and make sure the command is gone. Safe to call twice."""

    def stderr_text(self) -> str:
        """What the command wrote to its own stderr outside the protocol (last few KiB)."""

    def exit_status(self, timeout: float = 0.0) -> int | None:
        """The command's exit status once it has ended (waiting up to ``timeout``), else None."""

    # Optional: ``lost() -> ConnectionLost | None``, why the connection under
    # the pipes was given up (ssh keepalives unanswered); the session asks it
    # when a read hits EOF, so the error says more than "closed".


class Transport(Protocol):
    """Starts commands on one host; one object per host, reused across calls."""

    #: what to show in messages: ``local``, ``user@host:port``
    label: str

    def start(self, argv: list[str]) -> WorkerPipes:
        """Start ``argv`` (argv[0] is the remote python) and return its pipes.

        Raises ``ConnectError`` when the host cannot be reached and
        ``RemoteEnvironmentError`` when the command cannot be started.
        """

    def close(self) -> None:
        """Close any connection held. Safe to call twice."""

    # Optional: ``failed_before_stub(pipes, python, answer) -> SkyctlError``, the
    # error for a command that ended (answer ``""``) or wrote something else
    # (``"?<text>"``) before the stub's first line; see ``transports.command``.
    # Optional: ``profile``, the ``HostProfile`` it serves (for ``describe``).
    # Optional: ``start_for(argv, args) -> WorkerPipes``, ``start`` told the stub's arguments too, so
    # that a transport keeping spare workers can hand over one started for the same (``transports.spare``).


class ClosedOnExit:
    """``with`` closes it at the end: for transports and pipes, whose ``close`` is safe to call twice."""

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # type: ignore[attr-defined]


def end_command(pipes: WorkerPipes, signal: Callable[[str], None], *, kill_grace: float = KILL_GRACE) -> bool:
    """How every transport's ``close`` ends a started command: EOF on its stdin, up to ``CLOSE_GRACE``
    seconds to exit, then ``signal("TERM")`` (the worker ends what the function started), up to
    ``kill_grace`` seconds, then ``signal("KILL")``. True when it exited before the KILL."""
    pipes.close_stdin()
    for name, grace in (("TERM", CLOSE_GRACE), ("KILL", kill_grace)):
        if pipes.exit_status(timeout=grace) is not None:
            return True
        signal(name)
    return False


def read_exact(recv: Callable[[int], bytes], n: int) -> bytes:
    """Exactly ``n`` bytes from ``recv`` (a socket's or a channel's: up to n bytes, ``b""`` at EOF);
    fewer only at EOF. One ``recv`` when it gives them all (the common case: no join)."""
    if n <= 0:
        return b""
    first = recv(n)
    if len(first) == n or not first:
        return first
    parts = [first]
    got = len(first)
    while got < n:
        chunk = recv(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def describe(transport: Transport) -> str:
    """How a message names the host of ``transport``: its profile first, then the address when that
    says more (``box (root@127.0.0.1:2222)``), as several profiles may share one address."""
    label = transport.label
    name = getattr(getattr(transport, "profile", None), "name", None)
    return f"{name} ({label})" if name and name != label else label
