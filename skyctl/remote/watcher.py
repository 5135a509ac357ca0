"""The watcher: a process beside the worker that ends it when its client is gone and it cannot tell.

Why: a function stuck in one C call that never releases the GIL (``sum(itertools.repeat(1))``, a
regex that backtracks for ever, some extension code) stops every thread of its worker: the reader
that would see EOF, the heartbeat thread that would notice the client's silence, the watchdog.
With its client killed or its link cut, such a worker would spin on at 100 % CPU for good. The
watcher needs none of the worker's threads: it is a process of its own.

How (Linux): as it starts, the worker spawns ``/bin/sh`` (``posix_spawn``), which starts the watcher
in the background and exits; the worker reaps the shell (``started``) before it becomes a subreaper,
so the watcher goes to init: it is no descendant of the worker, the reaper's sweep after each call
neither sees nor ends it, and a worker without children still ends a call in one system call. The
background job waits ``START_DELAY`` (1 s, a ``sleep``; none when the input is a socket, which may
carry the output too and is held meanwhile), then, if the worker still runs, becomes the watcher:
``python -I -S -c CODE`` (the worker's interpreter, the bundle's module, nothing of the
environment's). It gets the protocol's input (to watch, never to read), a pidfd of the worker and
the ``Clock``; fds 0-2 are /dev/null (the client's streams end when the worker's do), and it holds
no other fd. It leaves the worker's session, calls itself ``skyctl-watcher`` (its comm: ``top``,
``ps -o comm``) and sleeps in ``poll`` until

- the worker exits (its pidfd turns readable): the watcher exits at once; or
- the client hangs up: POLLHUP or POLLERR on the input (POLLRDHUP on a socket); or
- the client is silent for the liveness ``bound``, the worker's own (``wire.liveness``): no byte
  read by the worker (``Connection`` stamps each read's time on the ``Clock``) and none waiting
  unread in the input (FIONREAD: a stuck worker reads nothing), looked at every ``step`` s (a
  quarter of the bound, at most ``STEP``). Bytes waiting count, so the watcher takes the client
  for silent no sooner than the worker itself would.

The client gone, the worker has ``grace`` s to leave by itself (a healthy one does: on EOF, or on
its own silence check); then its descendants are ended (``reaper.end_descendants``: SIGTERM, then
SIGKILL), the worker gets SIGKILL, and after a silence (a partition) its sshd session is ended, as
the worker would have done (``reaper.end_ssh_session_when_alone``; only while the worker is still
that session's child). It writes nothing: no one reads.

Cost: the worker spends about 1 ms spawning the shell (before HELLO; the shell's own work runs
beside the worker's); the watcher's interpreter (about 10 ms of CPU) starts only after
``START_DELAY``, so a first value never waits behind it and a worker that is gone by then (a short
``skyctl run``) never pays for it; then it wakes once a step. Not a fork of the worker: a fork
write-protects every page of the worker, which then takes a fault at its first write to each, and a
copy while the forked watcher lives (measured: about a thousand in a first call, +3 to 5 ms of the
worker's CPU, and time to first value with it); ``posix_spawn`` copies nothing.

Without pidfds (Linux < 5.3, or a seccomp filter that refuses them) the watcher looks at the
worker's ``/proc`` entry (pid and start time) once a step instead; without memfds (Linux < 3.17)
it goes by hangups only; without ``/bin/sh``, no watcher. Elsewhere (no ``/proc``): no watcher,
and the limit stays (docs/security.md).

Stdlib only: shipped to the remote inside the worker bundle; the watcher's interpreter imports it
from there.
"""

from __future__ import annotations

import mmap
import os
import select
import signal
import stat
import sys
import time

#: the longest sleep, in seconds, between two looks at the client's silence (and, without pidfds, at the worker)
STEP = 1.0
#: the watcher's comm (``top``, ``ps -o comm``)
NAME = "skyctl-watcher"
#: what the watcher's interpreter runs: the bundle (or source tree) first on its path, then ``main``
CODE = "import sys;sys.path[:0]=sys.argv[1:2];from skyctl.remote.watcher import main;main(sys.argv[2:])"
#: the shell that starts the watcher in the background and exits, handing it to init
SHELL = "/bin/sh"
#: seconds the watcher's interpreter waits to start (in a ``sleep``): a worker that is gone by then (a short
#: call) never pays for it, and a first value never waits behind it for a CPU
START_DELAY = 1
#: the shell's script, ``sh -c SCRIPT sh DELAY WORKER ARGS…``: a background job that waits, then becomes the
#: watcher (``$SKYCTL_WATCHER_PYTHON ARGS…``) if the worker still runs, while the shell itself exits at once.
#: The interpreter comes in the environment, so that the waiting job's command line does not name it: whatever
#: looks for workers by their interpreter (``pgrep -f``, a test) must not take the job for one
SCRIPT = ('p=$SKYCTL_WATCHER_PYTHON d=$1 w=$2; unset SKYCTL_WATCHER_PYTHON; shift 2; '
          '{ [ "$d" = 0 ] || sleep "$d"; kill -0 "$w" 2>/dev/null && exec "$p" "$@"; } &')

#: the shell that starts the watcher, until ``started`` reaps it (0: none)
_shell = 0
#: the running worker's clock, once its watcher was started
_clock: Clock | None = None


class Clock:
    """Two floats in a memfd that the worker and its watcher both map: ``view[0]`` when the worker last
    read bytes from its client (``time.monotonic()``, the same clock in every process), ``view[1]``
    the watcher's pid, once it runs. ``fd`` -1: no memfds here, the view is the worker's alone."""

    def __init__(self) -> None:
        try:
            self.fd = os.memfd_create("skyctl-clock", os.MFD_CLOEXEC)
            os.ftruncate(self.fd, 16)
            self.view = memoryview(mmap.mmap(self.fd, 16)).cast("d")
        except (AttributeError, OSError):  # Python < 3.8, Linux < 3.17: the watcher goes by hangups only
            self.fd = -1
            self.view = memoryview(bytearray(16)).cast("d")
        self.view[0] = time.monotonic()


def start(proto_in: int, clock: Clock, bound: float | None, grace: float) -> None:
    """Start the watcher of this process, the worker (Linux; elsewhere nothing happens); ``started``
    reaps the shell that starts it. Call it before the worker becomes a subreaper.

    ``proto_in``: the protocol's input (any fd: one of 0-2 is handed over as a copy above them, as the
    background job's 0-2 are /dev/null); ``bound``: seconds of the client's silence that make it gone
    (None: only a hangup does); ``grace``: seconds the worker has to leave by itself once its client
    is gone."""
    global _shell, _clock
    if not sys.platform.startswith("linux") or not sys.executable or not os.path.isdir("/proc/self"):
        return
    worker, start_time = os.getpid(), 0
    try:
        pidfd = os.pidfd_open(worker)
    except (AttributeError, OSError):  # Python < 3.9, Linux < 5.3, a seccomp filter
        pidfd = -1
        start_time = _start_time(worker)
        if not start_time:
            return
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    watched = proto_in if proto_in > 2 else _dup_above_2(proto_in)
    # no delay on a socket: while it waits, the watcher holds the input, which may be the output too
    delay = 0 if stat.S_ISSOCK(os.fstat(watched).st_mode) else START_DELAY
    argv = ["sh", "-c", SCRIPT, "sh", str(delay), str(worker), "-I", "-S", "-c", CODE, root,
            *(str(n) for n in (watched, pidfd, clock.fd, worker, start_time, os.getppid())),
            repr(bound or 0.0), repr(grace)]
    try:
        for fd in (watched, pidfd, clock.fd):
            if fd >= 0:
                os.set_inheritable(fd, True)
        _shell = os.posix_spawn(SHELL, argv, {**os.environ, "SKYCTL_WATCHER_PYTHON": sys.executable}, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0), (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, 1, 2)])
        _clock = clock
    except (AttributeError, OSError):  # no posix_spawn (Python < 3.8), no /bin/sh: no watcher
        pass
    finally:
        os.set_inheritable(watched, False)
        for fd in (pidfd, clock.fd, watched if watched != proto_in else -1):
            if fd >= 0:
                os.close(fd)  # the watcher has its own; the clock's mapping stays
        clock.fd = -1


def started() -> None:
    """Reap the shell that starts the watcher: it exits as soon as it has forked the background job that
    becomes the watcher, which goes to init then (or to a subreaper above the worker). Call it before the
    worker becomes a subreaper: the job would be the worker's otherwise."""
    global _shell
    if _shell:
        try:
            os.waitpid(_shell, 0)
        except ChildProcessError:
            pass
        _shell = 0


def pid() -> int:
    """The watcher's pid once it runs (0 until then, or when there is none)."""
    return int(_clock.view[1]) if _clock is not None else 0


def main(argv: list[str]) -> None:
    """The watcher process (``CODE``): watch the worker and its client, act if need be, exit."""
    try:
        fd, pidfd, clock_fd, worker, start_time, session = (int(a) for a in argv[:6])
        bound, grace = float(argv[6]), float(argv[7])
        try:
            os.setsid()  # no signal meant for the worker's session or group
            with open("/proc/self/comm", "w") as f:
                f.write(NAME)
        except OSError:
            pass
        clock = None
        if clock_fd >= 0:
            clock = memoryview(mmap.mmap(clock_fd, 16)).cast("d")
            clock[1] = os.getpid()
        for name in os.listdir("/proc/self/fd"):  # nothing else of anyone's is held
            if int(name) > 2 and int(name) not in (fd, pidfd):
                _close(int(name))
        watch = _Watch(fd, pidfd, worker, start_time or None, session, clock,
                       bound if clock is not None and bound > 0 else None, grace)  # no clock: no silence to see
        watch.run()
    finally:
        os._exit(0)


class _Watch:
    """What the watcher knows of its worker, and its one job (``run``)."""

    def __init__(self, fd: int, pidfd: int, worker: int, started: int | None, session: int,
                 clock: memoryview | None, bound: float | None, grace: float) -> None:
        self.fd, self.pidfd, self.worker, self.started, self.session = fd, pidfd, worker, started, session
        self.clock, self.bound, self.grace = clock, bound, grace
        self.step = STEP if bound is None else max(0.1, min(STEP, bound / 4))
        #: bytes waiting unread in the input at the last look, and when that last changed
        self.queued, self.moved = -1, time.monotonic()

    def run(self) -> None:
        """Wait for the worker's end or its client's; in the second case, end the worker if it does not leave."""
        gone = self._client_gone()
        if gone is None or self._worker_ends_within(self.grace):
            return
        from . import reaper

        found = reaper.process(self.worker)
        in_session = found is not None and found.ppid == self.session  # (its parent then: that pid is the session)
        reaper.end_descendants(reaper.EXIT_GRACE, root=self.worker)  # first: with the worker gone they escape
        self._kill_worker()
        if gone == "silence" and in_session:  # a partition: sshd would hold the session until TCP gives up (~15 min)
            reaper.end_ssh_session_when_alone(self.bound or 0.0, session=self.session, me=self.worker)

    def _client_gone(self) -> str | None:
        """Sleep until the worker exits (None) or its client is gone: ``"hangup"`` or ``"silence"``."""
        poller = select.poll()
        poller.register(self.fd, select.POLLRDHUP)  # POLLHUP, POLLERR come unasked; never POLLIN: data is the worker's
        if self.pidfd >= 0:
            poller.register(self.pidfd, select.POLLIN)
        timeout = None if self.bound is None and self.pidfd >= 0 else self.step * 1000
        self.queued, self.moved = self._unread(), time.monotonic()
        while True:
            for fd, events in poller.poll(timeout):
                if fd == self.pidfd:
                    return None
                if events & select.POLLNVAL:  # not an fd poll can watch: only the silence tells then
                    poller.unregister(fd)
                else:
                    return "hangup"
            if self.pidfd < 0 and not self._worker_alive():
                return None
            if self.bound is not None and self._silent() > self.bound:
                return "silence"

    def _silent(self) -> float:
        """Seconds since the client's last byte: read by the worker, or waiting for it to read."""
        now = time.monotonic()
        queued = self._unread()
        if queued != self.queued:
            self.queued, self.moved = queued, now
        return now - max(self.moved, self.clock[0] if self.clock is not None else 0.0)

    def _unread(self) -> int:
        """Bytes waiting unread in the input (-1: cannot tell)."""
        import fcntl
        import termios

        try:
            return int.from_bytes(fcntl.ioctl(self.fd, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder, signed=True)
        except OSError:
            return -1

    def _worker_alive(self) -> bool:
        """Without a pidfd: the worker's pid is still that process (same start time), not a zombie."""
        from . import reaper

        proc = reaper.process(self.worker)
        return proc is not None and proc.alive and proc.start == self.started

    def _worker_ends_within(self, wait: float) -> bool:
        """Whether the worker has exited, or does within ``wait`` s."""
        if self.pidfd >= 0:
            poller = select.poll()
            poller.register(self.pidfd, select.POLLIN)
            return bool(poller.poll(wait * 1000))
        deadline = time.monotonic() + wait
        while self._worker_alive():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(0.1, left))
        return True

    def _kill_worker(self) -> None:
        """SIGKILL to the worker (through its pidfd, or once its start time is checked), then wait for it to go."""
        from . import reaper

        if self.pidfd >= 0:
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except OSError:  # gone already
                return
        elif not reaper.send(reaper.Proc(self.worker, self.session, self.started, "R", ""), signal.SIGKILL):
            return
        self._worker_ends_within(reaper.KILL_WAIT)


def _start_time(pid: int) -> int:
    """The process's start time (clock ticks since boot, from ``/proc``); 0 when unknown."""
    from . import reaper

    proc = reaper.process(pid)
    return proc.start or 0 if proc is not None else 0


def _dup_above_2(fd: int) -> int:
    """A copy of ``fd`` numbered 3 or more (closed on exec until made inheritable)."""
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)


def _close(fd: int) -> None:
    """Close ``fd``, if it is still open."""
    try:
        os.close(fd)
    except OSError:  # the listing's own fd, closed already
        pass
