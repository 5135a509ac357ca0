"""What a broadcast (``run`` on a group) and a distributed ``pipe`` share: the group, its
``Host``s, each host's values tagged, and the per-host summary at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Collection

from ..errors import RemoteError, SkyctlError
from ..hosttypes import host_type
from ..remote.flow import Rendered
from ..render import Stderr, tagged
from ..trust import escape_controls
from .state import time_limits


def resolve_group(host: str | None, config: Path | None, jobs: int | None = None, distribute: bool = False) -> Any:
    """The ``config.Target`` when ``--host`` names a group (or ``a,b``), or ``-j`` is given, or (``distribute``:
    ``pipe``) a ray host, whose chunks are Ray tasks; else None.

    A config error is left for the single-host path to report (after the target's own errors)."""
    from ..config import load_config

    try:
        target = load_config(config).resolve(host)
    except SkyctlError:
        if jobs is not None:
            raise
        return None
    if distribute and any(host_type(p).distributed_alone for p in target.profiles):
        return target
    return target if target.is_group or jobs is not None else None


def host_for(profile: Any, config: Path | None, no_reuse: bool, stderr: Stderr) -> Any:
    """One member's ``Host``: its remote lines prefixed with its name, the command's time limits."""
    from ..api import Host
    from ..session import Hooks

    return Host(profile.name, config, hooks=Hooks(log=stderr.log_for(profile.name)), reuse=False if no_reuse else None,
                **time_limits)


def as_output(batch: Any, host: str, output: str, tag: bool) -> Any:
    """A batch of one host's values (or its return value) as the lines to write, tagged ``HOST<TAB>`` if asked.
    Called per batch: a rendered batch (the usual one) meets no import statement (one cost a sparse
    stream ~3 µs a value)."""
    if type(batch) is not Rendered:
        from ..many import Result

        if type(batch) is Result:  # rendered by the worker; a value the client decoded itself is one of a batch
            batch = batch.value if type(batch.value) is Rendered else [batch.value]
    return tagged(batch, host, output) if tag else batch


def report_hosts(stderr: Stderr, stats: Collection[Any], *, show: bool, parts: Callable[[Any], list[str]],
                 where: Callable[[Any], str | None] | None = None, totals: str | None = None) -> None:
    """After a many-host call: each remote traceback under ``[HOST]``, then (``show``) one summary line
    per host (``where(stat)``: what to add to its outcome, e.g. the chunk that failed) and ``totals``."""
    from ..many import describe, plural
    from ..render import summary_line

    stderr.stop()
    for stat in stats:
        if isinstance(stat.error, RemoteError):
            stderr.remote_text_for(stat.name, stat.error.traceback_text)
    if show:
        for stat in stats:
            outcome = ("cancelled (--fail-fast)" if stat.cancelled
                       else f"exit 1, {plural(stat.failed, 'chunk')} raised" if stat.error is None and stat.failed
                       else escape_controls(describe(stat.error)))
            extra = where(stat) if where is not None else None
            stderr.write(summary_line(stat.name, outcome + (f"; {extra}" if extra else ""), parts(stat)) + "\n")
        if totals:
            stderr.write(totals + "\n")
