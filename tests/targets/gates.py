"""What the target modules here share: waiting for the marker file a test creates to let a
function go on, or for the next chunk's call to wait queued on this worker. Imported by name (``from gates import wait_for``): a file target's folder is first
on ``sys.path``, and pytest's ``pythonpath`` has it too; it travels by value with the targets."""

from __future__ import annotations

import time
from pathlib import Path


def wait_for(path: Path, timeout: float = 120.0) -> None:
    """Return once ``path`` exists; ``TimeoutError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


def next_call_has_records(patience: float) -> bool:
    """On the worker, from inside a call: whether the call queued behind this one (the next chunk's,
    pipelining) has records waiting there; False after ``patience`` seconds without."""
    import sys

    worker = sys.modules["skyctl.remote.worker"]._worker
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        if any(c.state == "queued" and c.inbox._queue.qsize() for c in list(worker.open_calls.values())):
            return True
        time.sleep(0.01)
    return False
