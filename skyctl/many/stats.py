"""What a group run did and how it ended: per-host counts, failures, totals, and their words.

``HostStats`` are the live counters the CLI's summary, the report and the API's
``Pool.stats`` read; ``describe``/``plural`` are the words those use for them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..errors import ExitStatus, Interrupted, RemoteError, SkyctlError
from .chunks import Chunk


@dataclass
class HostStats:
    """What one host did, for the per-host summary."""

    name: str
    chunks: int = 0
    records: int = 0
    values: int = 0
    reruns: int = 0
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    #: how the host ended: None while running or when it ended well
    error: BaseException | None = None
    connected: bool = False
    #: the host is not given more chunks (it died)
    dead: bool = False
    #: broadcast: the call was cancelled because another host failed (``--fail-fast``); not a failure
    cancelled: bool = False
    #: chunks whose function raised on this host (counted in ``chunks`` too); with ``--keep-going``
    #: the host goes on, ``error`` stays None and these make its status 1
    failed: int = 0

    @property
    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    @property
    def status(self) -> int:
        if self.error is None:
            return ExitStatus.REMOTE_RAISED if self.failed else ExitStatus.OK
        return exit_status_of(self.error)


def exit_status_of(error: BaseException) -> int:
    """The exit status a failure gives the run (a host's, a chunk's or the run's own)."""
    if isinstance(error, SkyctlError):
        return int(error.exit_status)
    if isinstance(error, (KeyboardInterrupt, Interrupted)):
        return ExitStatus.INTERRUPTED
    return ExitStatus.REMOTE_RAISED


@dataclass
class Failure:
    """Something that went wrong in a distributed run, in the order it happened: a chunk whose
    function raised (``chunk`` set, ``host_failure`` False), or a host or chunk attempt that failed
    and was worked around (a host that never connected, died, or lost a chunk's task). ``--strict``
    takes the first; the report lists the chunks."""

    host: str
    error: BaseException
    chunk: Chunk | None = None
    host_failure: bool = False


def describe(error: BaseException | None) -> str:
    """``exit N, what`` for a summary line."""
    if error is None:
        return "ok"
    if isinstance(error, RemoteError):
        return f"exit 1, raised {error.message}"
    if isinstance(error, (KeyboardInterrupt, Interrupted)):
        return "exit 130, interrupted"
    status = int(error.exit_status) if isinstance(error, SkyctlError) else 1
    what = {4: "could not connect: ", 5: "remote environment: ", 6: "connection lost: "}.get(status, "")
    message = error.message if isinstance(error, SkyctlError) else str(error)
    return f"exit {status}, {what}{message}"


@dataclass
class Totals:
    """A distributed run's counts: the per-host counts summed, plus the chunks cut from
    the input that did not run to their end (cancelled after a failure, or by Ctrl-C)."""

    chunks: int
    records: int
    values: int
    reruns: int
    cancelled_chunks: int
    cancelled_records: int
    #: chunks whose function raised (counted in ``chunks``)
    failed_chunks: int = 0


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 chunk``, ``2 chunks``, ``0 re-runs``."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"
