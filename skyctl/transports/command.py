"""The ``command`` transport: any program that runs a command with its stdin/stdout piped.

A ``type: command`` profile names a program (``argv``) that runs another
command somewhere and connects that command's stdin/stdout to its own:
``docker exec -i CONTAINER``, ``kubectl exec -i POD --``, ``srun -N1 -n1``,
``setpriv``/``runuser`` to another user, or the OpenSSH client. ``start``
runs ``argv + [python, "-c", STUB]`` here as a child process (no shell
here); with ``shell: true`` it appends ``shlex.join([python, "-c", STUB])``
as ONE argument instead, for programs (``ssh``) that hand their arguments to
a shell on the other side, which splits them again. From there on it is the
``local`` transport: the same ``ProcessPipes``, the same protocol.

The child gets its own session (its own process group) so that a Ctrl-C at
the terminal reaches only the client, which cancels the call over the
protocol; EOF on its stdin ends the worker, and so, normally, the program.
``close`` then gives it ``CLOSE_GRACE`` seconds to exit before SIGTERM and
SIGKILL go to its whole process group.

Failures before the worker runs are told apart by what the program said:

- the program cannot be started here (ENOENT, EACCES): ``ConnectError``;
- it ended, or wrote something else than the stub's first line, before our
  stub said a word (``failed_before_stub``, called by the bootstrap):
  ``ConnectError`` with the tail of its stderr, unless that tail says the
  interpreter itself is missing or crashed (``RemoteEnvironmentError``, as
  for the other hosts);
- once the stub has spoken, the bootstrap reports as for every host (a
  Python of another version, a failed ``pip``: ``RemoteEnvironmentError``).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
from typing import TYPE_CHECKING, Sequence

from ..errors import ConnectError, RemoteEnvironmentError, SkyctlError
from .base import CLOSE_GRACE, end_command
from .local import ProcessPipes

if TYPE_CHECKING:
    from ..config import HostProfile

#: stderr lines shown when the program failed before the worker started
TAIL_LINES = 20
#: what a shell, ``env``, ``setpriv``, ``docker`` or ``kubectl`` says when the interpreter is missing or unusable
_MISSING = ("not found", "No such file or directory", "Permission denied", "cannot execute", "not executable")


class CommandPipes(ProcessPipes):
    """``ProcessPipes`` whose ``close`` ends the program's whole process group."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # the program has CLOSE_GRACE to exit after EOF, then as long again after SIGTERM before SIGKILL
        signals = {"TERM": signal.SIGTERM, "KILL": signal.SIGKILL}
        if not end_command(self, lambda name: _signal_group(self._proc.pid, signals[name]), kill_grace=CLOSE_GRACE):
            self._proc.wait()
        # what the program left in its group (a helper it forked) goes with it;
        # the group's id cannot be reused while any member is alive
        _signal_group(self._proc.pid, signal.SIGKILL)
        self._stdout.close()

    def final_stderr(self, timeout: float = 5.0) -> str:
        """The stderr tail of a program that has exited: everything it wrote, however slow
        the machine (``stderr_text`` waits only half a second for the last bytes)."""
        self._stderr_thread.join(timeout)
        return self.stderr_text()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class CommandTransport:
    """Starts the worker through the profile's ``argv`` (see the module docstring)."""

    def __init__(self, profile: HostProfile) -> None:
        self.profile = profile
        self.argv = list(profile.argv)
        self.shell = profile.shell
        #: the profile's name, as in messages (``the worker on trainer ...``)
        self.label = profile.name

    def command_line(self, argv: Sequence[str]) -> list[str]:
        """What is run here to start ``argv`` (the remote python and its arguments) there.

        With ``shell``, one string that a POSIX shell splits back into ``argv``;
        a ``~/`` at the start of the interpreter's path is left for that shell
        to expand (the home over there).
        """
        if not self.shell:
            return [*self.argv, *argv]
        words = [shlex.quote(word) for word in argv]
        if argv and argv[0].startswith("~/"):
            words[0] = "~/" + shlex.quote(argv[0][2:])
        return [*self.argv, " ".join(words)]

    def start(self, argv: list[str]) -> CommandPipes:
        try:
            proc = subprocess.Popen(
                self.command_line(argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            program = self.argv[0]
            reason = exc.strerror or str(exc)
            if isinstance(exc, FileNotFoundError) and os.sep not in program:
                hint = f"install {program} here, or fix 'argv:' of host {self.label!r} ({program} is looked up in PATH)"
            elif isinstance(exc, PermissionError):
                hint = f"make {program} executable, or fix 'argv:' of host {self.label!r}"
            else:
                hint = f"fix 'argv:' of host {self.label!r}"
            raise ConnectError(f"could not start {program!r}: {reason}", hint=hint) from None
        return CommandPipes(proc)

    def failed_before_stub(self, pipes: CommandPipes, python: str, answer: str) -> SkyctlError:
        """Why the worker did not start when our stub never said a word.

        ``answer`` is what came instead of the stub's first line: ``""`` (the
        program's stdout ended) or ``"?<text>"`` (it wrote something else).
        """
        program = self.argv[0]
        by_hand = shlex.join(self.command_line([python, "-V"]))
        if answer.startswith("?"):  # it may still run: what it says on stderr is not waited for
            return ConnectError(
                f"{program!r} wrote {answer[1:][:200]!r} to stdout before the worker started",
                hint="stdout must carry only skyctl's protocol: the program, a wrapper or a login script "
                     f"(for ssh: the remote ~/.bashrc) printed it; try: {by_hand}",
            )
        status = pipes.exit_status(timeout=self.profile.connect_timeout)  # its stdout ended: it is exiting
        tail = (pipes.final_stderr() if status is not None else pipes.stderr_text()).strip()
        lines = tail.splitlines()
        if _python_missing(lines, python):
            err = RemoteEnvironmentError(
                f"python '{python}' was not found or cannot run on {self.label}",
                hint=f"install Python there, or set 'python:' of host {self.label!r} to its path; try: {by_hand}",
            )
            err.details = _last_lines(tail)
            return err
        last = lines[-1].strip() if lines else ""
        if "Traceback (most recent call last)" in tail:
            err = RemoteEnvironmentError(
                f"python '{python}' on {self.label} failed before the worker started: {last}",
                hint=f"check that '{python}' runs there: {by_hand}",
            )
            err.details = _last_lines(tail)
            return err
        if status is None:
            how = "closed its stdout"
        elif status < 0:
            how = f"was killed by signal {-status}"
        else:
            how = f"exited with status {status}"
        err = ConnectError(
            f"{program!r} {how} before the worker started: {last}" if last
            else f"{program!r} {how} before the worker started (nothing on its stderr)",
            hint=f"host {self.label!r} could not run the worker through its 'argv:'; try: {by_hand}",
        )
        if len(lines) > 1:
            err.details = _last_lines(tail)
        return err

    def close(self) -> None:
        pass


def _python_missing(lines: list[str], python: str) -> bool:
    """Whether a line of the program's stderr says that ``python`` is missing or cannot be executed.

    The interpreter must be named as shells and exec wrappers name it (``sh: 1:
    python9: not found``, ``exec: "python9": executable file not found``), so
    that the program's own complaints (``root@python3: Permission denied``)
    are not taken for it.
    """
    named = re.compile(r"(?:^|[\s'\"`])" + re.escape(python) + r"(?:['\"`]|:)")
    return any(named.search(line) and any(m.lower() in line.lower() for m in _MISSING) for line in lines)


def _last_lines(text: str) -> str:
    return "\n".join(text.splitlines()[-TAIL_LINES:])
