"""Long jobs: the job log (``--joblog``), the resume plan (``--resume``), the
results file (``--results``) and the stdin cutter that makes chunks a pure
function of the input (README, "Long jobs"; docs/architecture.md).

Why a package: each job below is one module, importing only those above it
in this list (no circle); the distributed pipe (``many.Distributor``) knows
none of them, it calls ``LongRun`` as its observer and follows the
``many.Cut`` marks of its source.

- ``log``: the job log file, its lock, and what a line holds.
- ``cutter``: ``CutStream``, ``chunked_source``, ``chunked_items``: chunks
  of N stdin lines (or items), hashed as read, checked against the log.
- ``resume``: ``plan_resume``: what the log says is done, where FILE is cut.
- ``results``: ``Spool``, ``Blocks``: a chunk's values held until it ends
  ``ok``, then committed as one block (fsync'd) before its log line.
- ``longrun``: ``LongRun``, wiring them for one run.
- ``calllog``: ``CallLog``, ``run --joblog``.
- ``poolmap``: ``map_logged``, ``pool.map(joblog=..., resume=True)``.

Threads: ``skyctl-joblog-commit`` (one per run: ``Blocks``' group commits)
and ``skyctl-joblog-map`` (``map_logged``: drives the Distributor).
"""

from __future__ import annotations

from .calllog import CallLog
from .cutter import ChunkInput, CutStream, chunked_items, chunked_source
from .log import FAILED_STATUSES, STATUSES, VERSION, JobLog, JobLogError
from .longrun import LongRun
from .poolmap import map_logged
from .resume import ResumePlan, plan_resume
from .results import COMMIT_INTERVAL, PAUSE_ENV, SPOOL_MEMORY, Blocks, Spool, open_results

__all__ = [
    "COMMIT_INTERVAL", "FAILED_STATUSES", "PAUSE_ENV", "SPOOL_MEMORY", "STATUSES", "VERSION",
    "Blocks", "CallLog", "ChunkInput", "CutStream", "JobLog", "JobLogError", "LongRun", "ResumePlan", "Spool",
    "chunked_items", "chunked_source", "map_logged", "open_results", "plan_resume",
]
