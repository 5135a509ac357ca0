"""The resume planner: what a job log says is done, where the results file is cut, and whether the
settings that decide the chunks are the logged ones.

Why apart: it is a pure function of the log's entries (no file, no thread), the one
place ``--resume`` and ``--resume-failed`` are decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .log import FAILED_STATUSES, JobLogError


@dataclass
class ResumePlan:
    """What a job log says: chunks done (number → entry), where the results file ends, the first run's header."""

    header: dict[str, Any] | None
    done: dict[int, dict[str, Any]]
    results_end: int


def plan_resume(entries: list[dict[str, Any]], *, rerun_failed: bool) -> ResumePlan:
    """Chunks logged ``ok`` are done; so are ``failed``/``timeout`` ones unless ``rerun_failed``."""
    header = next((e for e in entries if "joblog" in e), None)
    last: dict[int, dict[str, Any]] = {}
    ok: dict[int, dict[str, Any]] = {}
    end = 0
    for entry in entries:
        if "chunk" not in entry or "status" not in entry or not entry.get("sha256"):
            continue  # a run's header or end; or an attempt cut short before its input was all read
        number = int(entry["chunk"]) - 1
        last[number] = entry
        if entry["status"] == "ok":
            ok[number] = entry
            if "offset" in entry:
                end = max(end, int(entry["offset"]) + int(entry["length"]))
    done = dict(ok)
    if not rerun_failed:
        for number, entry in last.items():
            if entry["status"] in FAILED_STATUSES and number not in done:
                done[number] = entry
    return ResumePlan(header, done, end)


#: settings that decide the chunks (and the results' order): a resume must use the logged ones
_SETTINGS = {"chunk_size": "--chunk", "format": "--format", "keep_order": "--keep-order", "results": "--results"}


def check_same_settings(logged: dict[str, Any], now: dict[str, Any]) -> None:
    for key, flag in _SETTINGS.items():
        before, after = logged.get(key), now.get(key)
        if key == "results":
            before, after = before is not None, after is not None
        if before != after:
            if isinstance(before, bool):
                said = f"the logged run was {'with' if before else 'without'} {flag}"
                hint = f"resume {'with' if before else 'without'} {flag}, as the logged run"
            else:
                said = f"the logged run had {flag} {before}, this one {after}"
                hint = f"resume with {flag} {before}"
            raise JobLogError(f"cannot resume: {said}", hint=hint + ", or start over without --resume")
