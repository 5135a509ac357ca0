"""The client errors a worker's answers stand for: a RAISE (``remote_failure``, its
traceback given the user's source lines back), and a worker that broke the protocol
(``protocol_error``). Apart from the session so that both it and ``CallStream`` use them."""

from __future__ import annotations

import linecache
import os
import re

from .errors import ChunkLost, ConnectError, ConnectionLost, RemoteEnvironmentError, RemoteError, SkyctlError
from .remote import wire
from .trust import Decoder, shipped_files


def protocol_error(label: str, what: str) -> ConnectionLost:
    """The error for a worker that broke the protocol: one line naming the host and what was wrong."""
    return ConnectionLost(f"the worker on {label} broke skyctl's protocol: {what}",
                          hint="values printed so far are as it sent them; is skyctl's cache on the host damaged, "
                               "or the host compromised?")



_FILE_LINE = re.compile(r'^(\s*)File "([^"]+)", line (\d+), in .*$')


def with_source_lines(text: str, files: frozenset[str] | None = None) -> str:
    """Add the source line under each traceback frame that lacks one, from local files.

    The remote usually lacks the user's source (functions travel as bytecode),
    but the client has it. Only files the client shipped (``files``, default
    ``trust.shipped_files()``) are read: a path the remote names could be any
    file of the client's (a private key).
    """
    if files is None:
        files = shipped_files()
    lines = text.splitlines()
    out: list[str] = []
    for i, line in enumerate(lines):
        out.append(line)
        m = _FILE_LINE.match(line)
        if not m:
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if nxt.startswith(m.group(1) + "  ") and not _FILE_LINE.match(nxt):
            continue
        if m.group(2) not in files and os.path.abspath(m.group(2)) not in files:
            continue
        source = linecache.getline(m.group(2), int(m.group(3))).strip()
        if source:
            out.append(f"{m.group(1)}  {source}")
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def remote_failure(payload: bytes, label: str, decoder: Decoder | None = None) -> SkyctlError:
    """The exception a RAISE frame stands for, with the remote traceback:
    rebuilt when ``decoder`` (the API) allows its type, never for the CLI."""
    try:
        info, pickled = wire.unpack_raise(payload)
    except wire.ProtocolError as exc:  # checked by the reader already: only a caller of its own gets here
        return protocol_error(label, str(exc))
    failure = info.get("failure")  # the Ray driver's own failures (``raydriver.Failure``)
    if failure in ("environment", "connect", "lost", "driver"):
        message, hint = f"{label}: {info.get('message', '')}", info.get("hint") or None
        if failure == "environment":
            return RemoteEnvironmentError(message, hint=hint)
        if failure == "connect":
            return ConnectError(message, hint=hint)
        if failure == "lost":
            lost = ChunkLost(message, hint=hint or "values printed so far are complete")
            lost.reason = str(info.get("message", ""))
            return lost
        return ConnectionLost(message, hint=hint or "values printed so far are complete")
    text = with_source_lines(info.get("traceback", ""))
    missing = info.get("module_not_found")
    if missing:
        err: SkyctlError = RemoteEnvironmentError(
            f"module '{missing}' is not importable on {label}",
            hint="add it to 'pip:' in the host's profile, or install it there",
        )
        err.details = text if info.get("where") == "call" else ""
        return err
    if info.get("where") == "load":
        err = RemoteEnvironmentError(f"the function could not be loaded on {label}: {info.get('type')}: {info.get('message')}")
        err.details = text
        return err
    remote = RemoteError(info.get("type", "Exception"), info.get("message", ""), text)
    try:
        rebuilt = decoder.loads(pickled) if pickled and decoder is not None else None
    except Exception:  # refused, or not rebuildable here: RemoteError carries type, message and traceback
        rebuilt = None
    # Only an ``Exception`` is raised again as itself: a remote SystemExit,
    # KeyboardInterrupt or GeneratorExit would end (or silently stop) the
    # client's script, past its ``except Exception``; it stays a RemoteError.
    remote.exception = rebuilt if isinstance(rebuilt, Exception) else None
    return remote
