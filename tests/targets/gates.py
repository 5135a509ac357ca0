"""What the target modules here share: waiting for the marker file a test creates to let a
function go on. Imported by name (``from gates import wait_for``): a file target's folder is first
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
