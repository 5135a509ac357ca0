"""Targets for tests/test_message_names.py: a worker that is lost mid-call on the host told to lose it."""

import os
import signal


def lose_worker_if_told() -> str:
    """SIGKILL this worker when the profile's env says ``SKYCTL_TEST_LOSE_WORKER=1``; else return at once."""
    if os.environ.get("SKYCTL_TEST_LOSE_WORKER") == "1":
        os.kill(os.getpid(), signal.SIGKILL)
    return "alive"
