"""The run's account for machines: ``--report FILE`` (one JSON document) and ``--junit FILE`` (JUnit XML).

A ``RunAccount`` is made when ``run`` or ``pipe`` starts; the command hands it
the live per-host counters (``many.stats.HostStats``, the very numbers the summary
on stderr prints, so the two agree) and ``cli.main`` writes the files once the
process's exit status is known: after success, a failure, Ctrl-C or a timeout
alike. The document's fields are listed in the README ("Reports for CI") and
checked by ``tests/report.schema.json``.

Remote text (error messages, tracebacks) is untrusted: JSON escapes it by
itself; for XML, characters XML 1.0 cannot hold are written as ``\\xNN``.
Nothing here connects, prints values or decides an exit status.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import BadRecord, ExitStatus, RemoteError, SkyctlError, TimedOut, UsageError
from .errors import Interrupted
from .many.stats import Failure, HostStats, Totals, exit_status_of

#: the report's layout version: bumped when a field changes meaning or goes away (new fields may appear)
REPORT_VERSION = 1

#: the word for a host that ended with an exit status (other statuses: ``error``)
STATUS_WORDS = {
    ExitStatus.OK: "ok",
    ExitStatus.REMOTE_RAISED: "failed",
    ExitStatus.CONNECT: "unreachable",
    ExitStatus.REMOTE_ENVIRONMENT: "environment",
    ExitStatus.CONNECTION_LOST: "lost",
    ExitStatus.BAD_RECORD: "bad_record",
    124: "timeout",  # coreutils timeout's status, as --timeout gives it
    ExitStatus.INTERRUPTED: "interrupted",
}

#: tracebacks kept per host for the JUnit text (a --keep-going run may fail thousands of chunks)
MAX_TRACEBACKS = 10


@dataclass
class Tracked:
    """What the command handed over: how it runs (``single``, ``broadcast``, ``distributed``) and
    callables giving the live counters when the account is written."""

    mode: str
    hosts: Callable[[], Iterable[HostStats]]
    totals: Callable[[], Totals] | None = None
    failures: Callable[[], list[Failure]] = field(default=lambda: [])
    #: the run was stopped before every host finished (a failure elsewhere, the reader of stdout gone)
    stopped: Callable[[], bool] = field(default=lambda: False)


class RunAccount:
    """One ``run``/``pipe`` command's account, written to ``--report`` and ``--junit`` at its end."""

    def __init__(self, command: str, argv: list[str], report: str | None, junit: str | None) -> None:
        self.command = command
        self.argv = argv
        self.report_path = report
        self.junit_path = junit
        self.started_at = time.time()
        self.started = time.monotonic()
        self.tracked: Tracked | None = None
        for flag, path in (("--report", report), ("--junit", junit)):
            if path is not None:
                _check_writable(flag, path)

    def track(self, mode: str, hosts: Callable[[], Iterable[HostStats]], **more: Any) -> None:
        self.tracked = Tracked(mode, hosts, **more)

    # -- the JSON document ------------------------------------------------------
    def document(self, status: int, error: BaseException | None) -> dict[str, Any]:
        """The report: the run, its totals, and per host what it did and how it ended."""
        tracked = self.tracked
        stats = list(tracked.hosts()) if tracked is not None else []
        every = list(tracked.failures()) if tracked else []
        failures = [f for f in every if f.chunk is not None and not f.host_failure]
        #: chunk attempts that ran past a time limit (re-run elsewhere, or the run's end)
        timeouts = [f for f in every if isinstance(f.error, TimedOut)]
        hosts = [self._host(stat, status, failures, timeouts) for stat in stats]
        totals = tracked.totals() if tracked is not None and tracked.totals is not None else None
        return {
            "report_version": REPORT_VERSION,
            "skyctl": _version(),
            "command": self.command,
            "argv": self.argv,
            "mode": tracked.mode if tracked is not None else None,
            "started": datetime.fromtimestamp(self.started_at, timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "seconds": round(time.monotonic() - self.started, 3),
            "exit_status": int(status),
            "error": _error(error) if error is not None else _run_error(status, hosts),
            "totals": {
                "hosts": len(hosts),
                "records": totals.records if totals else sum(h["records"] for h in hosts),
                "values": totals.values if totals else sum(h["values"] for h in hosts),
                "chunks": totals.chunks if totals else sum(h["chunks"] for h in hosts),
                "reruns": totals.reruns if totals else sum(h["reruns"] for h in hosts),
                "failed_chunks": totals.failed_chunks if totals else 0,
                "cancelled_chunks": totals.cancelled_chunks if totals else 0,
                "cancelled_records": totals.cancelled_records if totals else 0,
            },
            "hosts": hosts,
        }

    def _host(self, stat: HostStats, status: int, failures: list[Failure],
              timeouts: list[Failure] = []) -> dict[str, Any]:  # noqa: B006 - read only
        own = [f for f in failures if f.host == stat.name]
        error = stat.error if stat.error is not None else own[0].error if own else None
        if error is None:  # a chunk attempt of this host timed out and ran again: the host's status says so
            error = next((f.error for f in timeouts if f.host == stat.name), None)
        word = _status_word(stat, error)
        if word == "interrupted" and status != ExitStatus.INTERRUPTED:
            word = "cancelled"  # its call was stopped by the run (a failure elsewhere, stdout's reader gone), not Ctrl-C
            error = None
        if word == "ok" and status == ExitStatus.INTERRUPTED:
            word = "interrupted"  # Ctrl-C ended the run before this host was done
        elif word == "ok" and self.tracked is not None and self.tracked.stopped():
            word = "cancelled"  # stopped by a failure elsewhere: did not fail itself
        return {
            "name": stat.name,
            "status": word,
            "exit_status": {"cancelled": 0, "interrupted": int(ExitStatus.INTERRUPTED)}.get(word, int(stat.status)),
            "error": _error(error) if error is not None and word not in ("cancelled",) else None,
            "connected": stat.connected,
            "chunks": stat.chunks,
            "records": stat.records,
            "values": stat.values,
            "reruns": stat.reruns,
            "seconds": round(stat.seconds, 3),
            "failed_chunks": [_failed_chunk(f) for f in own],
        }

    # -- writing ------------------------------------------------------------------
    def write(self, status: int, error: BaseException | None, stderr: Any, warn: Callable[[str], None]) -> None:
        """Write the report and the JUnit file; a file that cannot be written is a warning (the run's
        exit status stays what it is)."""
        try:
            document = self.document(status, error)
        except Exception as exc:  # noqa: BLE001 - a broken account must not hide the run's own outcome
            warn(f"could not build the report: {type(exc).__name__}: {exc}")
            return
        if self.report_path is not None:
            text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
            _write(self.report_path, text.encode("utf-8", "backslashreplace"), stderr, warn, "--report")
        if self.junit_path is not None:
            _write(self.junit_path, junit_xml(document, self._tracebacks()), stderr, warn, "--junit")

    def _tracebacks(self) -> dict[str, list[str]]:
        """Per host, the text of its failures for JUnit: remote tracebacks (``[chunk N (stdin lines …)]``
        before each), else the one-line error and its hint."""
        texts: dict[str, list[str]] = {}
        tracked = self.tracked
        if tracked is None:
            return texts
        for stat in tracked.hosts():
            errors: list[tuple[str, BaseException]] = []
            for failure in tracked.failures():
                if failure.host == stat.name and not failure.host_failure and failure.chunk is not None:
                    errors.append((failure.chunk.where, failure.error))
            if stat.error is not None and all(e is not stat.error for _, e in errors):
                errors.insert(0, ("", stat.error))
            lines = [_failure_text(where, err) for where, err in errors[:MAX_TRACEBACKS]]
            if len(errors) > MAX_TRACEBACKS:
                lines.append(f"... and {len(errors) - MAX_TRACEBACKS} more failed chunks (see --report)\n")
            texts[stat.name] = lines
        return texts


def _check_writable(flag: str, path: str) -> None:
    """A file that cannot be written is a usage error before the run, not a lost report after it."""
    if path == "-":
        return
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise UsageError(f"{flag} {path}: is a directory", hint=f"give a file name, e.g. {flag} {target / 'skyctl.out'}")
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: there is no directory '{folder}'", hint=f"create it first: mkdir -p {folder}")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{flag} {path}: cannot write in '{folder}'", hint="choose a directory you can write to")


def _write(path: str, data: bytes, stderr: Any, warn: Callable[[str], None], flag: str) -> None:
    """``data`` to ``path`` (``-``: stderr), whole: a temporary file renamed into place."""
    if path == "-":
        buffer = getattr(stderr, "buffer", None)
        stderr.flush()
        if buffer is not None:
            buffer.write(data)
            buffer.flush()
        else:
            stderr.write(data.decode("utf-8", "replace"))
            stderr.flush()
        return
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except OSError as exc:
        warn(f"{flag} {path}: not written: {exc.strerror or exc}")
        try:
            os.unlink(temporary)
        except OSError:
            pass


def _version() -> str:
    from . import __version__

    return __version__


def _status_word(stat: HostStats, error: BaseException | None) -> str:
    if stat.cancelled:
        return "cancelled"
    if error is None:
        return "ok"
    if isinstance(error, (KeyboardInterrupt, Interrupted)):
        return "interrupted"
    if isinstance(error, BadRecord):
        return "bad_record"
    return STATUS_WORDS.get(exit_status_of(error), "error")


def _error(error: BaseException) -> dict[str, Any]:
    """``{"type", "message"}``: a remote exception's own type name and message; else skyctl's."""
    if isinstance(error, RemoteError):
        return {"type": error.type_name, "message": error.remote_message}
    if isinstance(error, (KeyboardInterrupt, Interrupted)):
        return {"type": "KeyboardInterrupt", "message": "interrupted (Ctrl-C)"}
    if isinstance(error, SkyctlError):
        return {"type": type(error).__name__, "message": error.message}
    return {"type": type(error).__name__, "message": str(error)}


def _run_error(status: int, hosts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The run's error when the command returned a status rather than raising: Ctrl-C, or the first
    host (in the hosts' order) that failed."""
    if status == ExitStatus.OK:
        return None
    if status == ExitStatus.INTERRUPTED:
        return {"type": "KeyboardInterrupt", "message": "interrupted (Ctrl-C)"}
    return next((h["error"] for h in hosts if h["error"] is not None and h["status"] != "interrupted"), None)


def _failed_chunk(failure: Failure) -> dict[str, Any]:
    chunk = failure.chunk
    assert chunk is not None
    return {"chunk": chunk.number + 1, "first_line": chunk.first_line, "last_line": chunk.last_line,
            "error": _error(failure.error)}


def _failure_text(where: str, error: BaseException) -> str:
    head = f"[{where}]\n" if where else ""
    if isinstance(error, RemoteError) and error.traceback_text:
        text = error.traceback_text
    else:
        described = _error(error)
        text = f"{described['type']}: {described['message']}"
        if isinstance(error, SkyctlError) and error.hint:
            text += f"\nhint: {error.hint}"
    return head + text.rstrip("\n") + "\n"


# -- JUnit XML ---------------------------------------------------------------------

#: characters XML 1.0 cannot hold at all (its ``Char`` production), also not as a reference
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(text: str) -> str:
    """``text`` with every character XML 1.0 cannot hold written as ``\\xNN`` / ``\\uNNNN`` (remote text
    is untrusted: an ESC or a NUL in a traceback must not make the whole file unreadable)."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text)


def junit_xml(document: dict[str, Any], tracebacks: dict[str, list[str]]) -> bytes:
    """One ``<testcase>`` per host (classname ``skyctl.<command>``): a failure of the host is a
    ``<failure>`` with its message and traceback text, a host cancelled or interrupted is ``<skipped>``.
    A run that failed with no host to blame (a config error, a bad record, a chunk out of re-runs
    blamed on none, Ctrl-C) gets one more test case, ``(run)``, failing with the run's error."""
    import xml.etree.ElementTree as ET

    command = document["command"]
    classname = f"skyctl.{command}"
    seconds = f"{document['seconds']:.3f}"
    suite = ET.Element("testsuite", {"name": xml_text(" ".join(document["argv"])), "timestamp": document["started"],
                                     "time": seconds})
    properties = ET.SubElement(suite, "properties")
    for name, value in (("exit_status", document["exit_status"]), ("mode", document["mode"] or "")):
        ET.SubElement(properties, "property", {"name": name, "value": str(value)})
    failures = skipped = 0
    for host in document["hosts"]:
        case = ET.SubElement(suite, "testcase", {"classname": classname, "name": xml_text(host["name"]),
                                                 "time": f"{host['seconds']:.3f}"})
        if host["status"] in ("cancelled", "interrupted") and not host["failed_chunks"]:
            skipped += 1
            reason = "cancelled: the run stopped" if host["status"] == "cancelled" else "interrupted (Ctrl-C)"
            ET.SubElement(case, "skipped", {"message": reason})
        elif host["status"] != "ok":
            failures += 1
            error = host["error"] or {"type": host["status"], "message": host["status"]}
            message = f"exit {host['exit_status']}, {host['status']}: {error['type']}: {error['message']}"
            if len(host["failed_chunks"]) > 1:
                message += f" (and {len(host['failed_chunks']) - 1} more failed chunks)"
            failure = ET.SubElement(case, "failure", {"message": xml_text(message), "type": xml_text(error["type"])})
            failure.text = xml_text("".join(tracebacks.get(host["name"], [])) or message)
        out = ET.SubElement(case, "system-out")
        out.text = (f"status {host['status']}, exit {host['exit_status']}, connected {str(host['connected']).lower()}, "
                    f"{host['chunks']} chunks, {host['records']} records in, {host['values']} values out, "
                    f"{host['reruns']} re-runs\n")
    if document["exit_status"] != ExitStatus.OK and not failures:
        case = ET.SubElement(suite, "testcase", {"classname": classname, "name": "(run)", "time": seconds})
        error = document["error"] or {"type": "exit", "message": f"exit status {document['exit_status']}"}
        message = f"exit {document['exit_status']}: {error['type']}: {error['message']}"
        failure = ET.SubElement(case, "failure", {"message": xml_text(message), "type": xml_text(error["type"])})
        failure.text = xml_text(message)
        failures += 1
    tests = len(suite.findall("testcase"))
    counts = {"tests": str(tests), "failures": str(failures), "errors": "0", "skipped": str(skipped)}
    suite.attrib.update(counts)
    root = ET.Element("testsuites", {"name": "skyctl", **counts, "time": seconds})
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
