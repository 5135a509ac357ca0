"""Functions for the long-job tests (``tests/test_joblog.py``): stdlib only, they travel by value.

They are steered by files in ``workdir``, so that a resumed run is the very
same command: ``hold`` holds the number of a record at which the first call
that reaches it writes ``held`` (its pid and host, created exclusively: only
one call ever holds) and waits for ``release``; while ``stall`` exists every
call writes ``stalled-<pid>`` at its first record and waits for ``release``;
``fail`` holds the number of a record that raises while ``fail`` exists.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from gates import wait_for  # a sibling module: this folder is on sys.path for a file target and the tests


def _number(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def steered(records: Iterator[int], workdir: str) -> Iterator[str]:
    """Each record as ``x,x*x`` (lines of different lengths), held or failing where ``workdir`` says."""
    work = Path(workdir)
    hold, fail = _number(work / "hold"), _number(work / "fail")
    first = True
    for x in records:
        if first and (work / "stall").exists():
            (work / f"stalled-{os.getpid()}").write_text(str(x))
            wait_for(work / "release")
        first = False
        if x == hold:
            try:
                fd = os.open(work / "held", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.write(fd, f"{os.getpid()} {os.environ.get('SKYCTL_TEST_HOST', '?')}".encode())
                os.close(fd)
                wait_for(work / "release")
        if x == fail and (work / "fail").exists():
            raise ValueError(f"record {x} fails")
        yield f"{x},{x * x}"


def upper(lines: Iterator[str]) -> Iterator[str]:
    for line in lines:
        yield line.upper()
