"""The reader of stdout going away (``skyctl run f | head -1``): noticed at once, then a quiet end."""

from __future__ import annotations

import os
import sys
from typing import Any, Callable


def when_stdout_reader_leaves(stdout: Any, callback: Callable[[], Any]) -> None:
    """Call ``callback`` as soon as the reader of a stdout pipe goes away.

    So ``skyctl run slow:gen | head -1`` ends when head does, not when the
    next value happens to be written.
    """
    import select
    import stat
    import threading

    try:
        fd = stdout.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return
    except (AttributeError, OSError, ValueError):
        return

    def watch() -> None:
        poller = select.poll()
        poller.register(fd, 0)  # POLLERR/POLLHUP are always reported
        while True:
            for _, events in poller.poll():
                if events & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                    callback()
                    return

    threading.Thread(target=watch, name="skyctl-stdout-watch", daemon=True).start()


def silence_stdout() -> None:
    """Point fd 1 at /dev/null: its reader left, so the final flush must not fail with EPIPE."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
