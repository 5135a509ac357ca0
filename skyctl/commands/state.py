"""The state of the one command this process runs: its time limits, its report account, SIGTERM.

Kept here, not in ``cli.py``, because the code that runs the command (``one``,
``group``, ``distribute``) reads it while ``cli.main`` sets it up and writes the account.
"""

from __future__ import annotations

import os
from typing import Any

from ..render import Env

#: ``--timeout``/``--idle-timeout`` of this command, given to every ``Host`` it makes
time_limits: dict[str, Any] = {}

#: the command line as given (for the report), and the current command's account (``--report``/``--junit``),
#: written by ``cli.main`` once the exit status is known
_argv: list[str] = []
_account: Any = None

#: set once SIGTERM arrived (the exit status is then 143)
_terminated: list[bool] = []


def set_time_limits(timeout: str | None, idle_timeout: str | None) -> None:
    """Check the flags now (exit 2 for a bad duration); every host of the command gets them."""
    from ..api import duration_limit

    time_limits.update(timeout=duration_limit(timeout, "--timeout"), idle_timeout=duration_limit(idle_timeout, "--idle-timeout"),
                       limit_names=("--timeout", "--idle-timeout"))
    for name in ("SKYCTL_TIMEOUT", "SKYCTL_IDLE_TIMEOUT"):  # checked now too, not at the first chunk's call
        duration_limit(os.environ.get(name, "").strip() or None, name)


def begin(args: list[str]) -> None:
    """A new command: its arguments (for the report), no account yet."""
    global _account
    _argv[:] = args
    _account = None


def open_account(command: str, report: str | None, junit: str | None) -> None:
    """Start this command's account if ``--report`` or ``--junit`` asks for one (their paths checked now)."""
    global _account
    if report is not None or junit is not None:
        from ..report import RunAccount

        _account = RunAccount(command, ["skyctl", *_argv], report, junit)


def track(mode: str, hosts: Any, **more: Any) -> None:
    """Hand the live per-host counters to the account, if there is one."""
    if _account is not None:
        _account.track(mode, hosts, **more)


def write_account(status: int, error: BaseException | None, env: Env) -> None:
    """``--report`` / ``--junit``, once the status this process exits with is known."""
    if _account is None:
        return
    try:
        _account.write(int(status), error, env.stderr, lambda m: env.stderr.write(f"warning: {m}\n"))
    except KeyboardInterrupt:  # a second Ctrl-C while writing: the run's status stands
        pass


class Terminated(KeyboardInterrupt):
    """SIGTERM: raised where Ctrl-C would be, so the same clean-up runs (the call
    is cancelled, the remote closed); the exit status is then 143, not 130."""


def on_sigterm(signum: int, frame: Any) -> None:
    """The SIGTERM handler: the first one raises ``Terminated`` in the main thread."""
    if not _terminated:
        _terminated.append(True)
        raise Terminated()


def terminated() -> bool:
    """Whether SIGTERM ended this command (its exit status is then 128 + SIGTERM)."""
    return bool(_terminated)
