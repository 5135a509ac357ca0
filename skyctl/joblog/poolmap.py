"""The API's ``pool.map(fn, items, joblog=..., resume=True)``: a ``LongRun`` whose values go to the caller,
each chunk logged ``ok`` once the caller has taken its values.

Why apart: the API hands values across a thread and a generator, not to a file or
stdout; only this module knows that.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..errors import ExitStatus
from .longrun import LongRun
from .results import Spool


class _Values:
    """A chunk's values as the API holds them: a list (the Spool's text stream goes unused)."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def write_batch(self, batch: Any) -> None:
        from ..many.chunks import Result

        if type(batch) is Result:
            self.values.append(batch.value)
        else:
            self.values.extend(batch)


def map_logged(slots: list[Any], start: Callable[..., Any], items: Iterable[Any], joblog: Path, *, fn: Any,
               chunk: int, ordered: bool, retries: int, resume: bool, resume_failed: bool,
               rebuild: Callable[[BaseException], BaseException] = lambda error: error, **more: Any) -> Iterator[Any]:
    """``pool.map`` with a job log: each chunk's values once it has ended (in order with ``ordered``); a
    chunk is logged ``ok`` when the caller asks for the value after its last one. ``rebuild(error)``: what
    the run's error is raised as (the API's: a remote exception as its own type); ``more``: further
    ``Distributor`` arguments."""
    import queue
    import warnings

    from ..errors import Interrupted

    done_marker = object()
    out: queue.Queue[Any] = queue.Queue(maxsize=2)
    gone = threading.Event()

    def deliver(spool: Spool, entry: dict[str, Any]) -> bool:
        while not gone.is_set():
            try:
                out.put((spool.writer.values, entry), timeout=0.2)
                break
            except queue.Full:
                continue
        return True

    header = {"command": ["pool.map", f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', fn)}"],
              "chunk_size": chunk, "chunk_unit": "items", "format": "python", "keep_order": ordered, "results": None}
    long_run = LongRun(joblog, None, resume=resume, resume_failed=resume_failed, header=header, ordered=ordered,
                       make_writer=lambda text: _Values(), to_stdout=deliver,
                       warn=lambda message: warnings.warn(message, stacklevel=3))
    distributor = long_run.distributor(slots, start, items, lambda batch, host: batch, retries=retries,
                                       warn=lambda message: None, chunk=max(1, chunk), **more)

    def drive() -> None:
        try:
            distributor.run()
            long_run.blocks.drain()
        finally:
            out.put(done_marker)

    threading.Thread(target=drive, name="skyctl-joblog-map", daemon=True).start()
    status: int | None = None
    try:
        while (got := out.get()) is not done_marker:
            values, entry = got
            yield from values
            long_run.log.write(entry)
        status = distributor.exit_status
    except GeneratorExit:  # the caller stopped early: cancel every chunk; what it did not take is not logged ok
        gone.set()
        distributor.abort(Interrupted())
        while out.get() is not done_marker:
            pass
        status = int(ExitStatus.INTERRUPTED)
        raise
    finally:
        long_run.finish(status)
    if distributor.error is not None:
        raise rebuild(distributor.error)
