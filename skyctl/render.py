"""Values → lines on stdout; remote output, warnings, errors and the status line on stderr.

Pure value-to-line functions, plus the one place that decides whether stderr
gets a live status line and colour (a terminal, no ``CI``, not ``--quiet``;
no colour with ``NO_COLOR``). rich is imported only when a status line is
actually shown.
"""

from __future__ import annotations

import contextlib
import os
import threading
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, TextIO

from .errors import ConnectionLost, SkyctlError
from .remote.flow import LineBatch, Rendered
from .trust import escape_controls
from .remote.values import encode_text, json_line, json_lines, render, text_line, text_lines


# -- values -------------------------------------------------------------------
# The rules live in ``values`` (shipped: the worker renders for the CLI).
FORMATTERS: dict[str, Callable[[Any], str]] = {"text": text_line, "json": json_line}


class ValueWriter:
    """Writes values to stdout, one per line, flushed once per arriving batch.

    Batches the worker rendered (``flow.Rendered``) and one-line text batches
    (``LineBatch``) are written as the bytes they are. On a terminal, control
    characters in them are shown escaped (``trust.escape_controls``): remote
    text cannot drive the terminal.

    Args:
        stream: stdout.
        output: "text" or "json" (for values not already rendered).
        guard: a context manager factory wrapped around each write (keeps a
            status line on the same terminal from interleaving with values).
    """

    def __init__(self, stream: TextIO, output: str = "text", guard: Callable[[], Any] | None = None) -> None:
        self._stream = stream
        self._line = FORMATTERS[output]
        self._lines = text_lines if output == "text" else json_lines
        self._guard = guard or contextlib.nullcontext
        self.written = 0
        self._escape = _isatty(stream)
        #: where bytes that are already UTF-8 go as they are (a UTF-8 stream not on a terminal)
        self._bytes_out = None if self._escape else _utf8_buffer(stream)

    @property
    def takes_lines(self) -> bool:
        """Whether ``write_batch`` takes a ``LineBatch`` (see ``flow.Inbox.batches``) and prints it unchanged."""
        return self._bytes_out is not None

    def write_batch(self, values: Sequence[Any] | LineBatch | Rendered) -> None:
        if type(values) is Rendered:
            self._write_bytes(values.text, len(values))
            return
        if type(values) is LineBatch:
            if self._bytes_out is None:
                values = values.items()
            else:
                self._write_bytes(values.text + b"\n", len(values))
                return
        lines = self._lines(values)
        if lines:
            self._write_text("\n".join(lines) + "\n")
            self.written += len(lines)

    def write_one(self, value: Any) -> None:
        self.write_batch(value if type(value) is Rendered else (value,))

    def _write_bytes(self, data: bytes, count: int) -> None:
        if self._bytes_out is not None:
            with self._guard():
                self._bytes_out.write(data)
                self._bytes_out.flush()
        elif data:
            self._write_text(data.decode("utf-8", "backslashreplace"))
        self.written += count

    def _write_text(self, text: str) -> None:
        if self._escape:
            text = escape_controls(text)
        with self._guard():
            try:
                self._stream.write(text)
            except UnicodeEncodeError:  # a stream that is not UTF-8: escape what it cannot hold
                encoding = getattr(self._stream, "encoding", None) or "ascii"
                self._stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
            self._stream.flush()


def tagged(batch: Rendered | Sequence[Any], host: str, output: str) -> Rendered:
    """A rendered batch with each line tagged by its host: ``HOST<TAB>line``
    (text), or ``{"host": HOST, "value": line}`` (json).

    What a remote rendered cannot claim another host's tag: in json, every
    line must be exactly one JSON value (``check_json_lines``; else
    ``ConnectionLost`` naming ``host``, before anything of the batch is
    written); in text, every line a value spans gets the tag, after a lone
    ``\\r`` too (where universal-newline readers start a line).
    """
    if type(batch) is not Rendered:  # values the client decoded itself (an ``L`` batch): rendered here
        batch = Rendered(render(list(batch), output), len(batch))
    text = batch.text
    if output == "json":
        lines = check_json_lines(text, len(batch), host)
        head = b'{"host": ' + encode_text(json_line(host)) + b', "value": '
        return Rendered(b"".join(head + line + b"}\n" for line in lines), len(batch))
    lines = text.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    head = encode_text(host) + b"\t"
    if b"\r" in text:
        after_cr = b"\r" + head
        lines = [_lone_cr().sub(lambda _: after_cr, line) for line in lines]
    return Rendered(b"".join(head + line + b"\n" for line in lines), len(batch))


def check_json_lines(text: bytes, count: int, host: str) -> list[bytes]:
    """The lines of a rendered ``--output json`` batch, each checked to be exactly one JSON value
    (nothing before or after it), ``count`` of them; else ``ConnectionLost`` naming ``host``.

    The worker renders each value with ``json.dumps`` on one line; a line made
    to hold more (``666, "host": "other-box"``) would, spliced into
    ``{"host": H, "value": LINE}``, credit its value to another host. A batch
    of scalars (numbers, strings, true/false/null) is checked by one regular
    expression over the whole batch, the strict JSON grammar for them (~0.1 µs
    a line); a line with an array or object goes through the json module's C
    scanner, the same parser ``json.loads`` uses (~1–5 µs a line).
    """
    lines = text.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    if len(lines) != count:
        raise _protocol_error(host, f"sent {len(lines)} lines for {count} JSON values")
    if _json_scalar_lines().fullmatch(text) is not None:
        return lines
    scan = _json_scanner()
    for line in lines:
        decoded = line.decode("utf-8", "surrogateescape")  # bad UTF-8 can only sit inside a string
        try:
            end = scan(decoded, 0)[1]
        except (StopIteration, ValueError, RecursionError):
            end = -1
        if end != len(decoded) or "\r" in decoded:  # (JSON whitespace, but never in what the worker renders)
            raise _protocol_error(host, f"sent an output line that is not one JSON value: {_quoted(line)}")
    return lines


def _protocol_error(host: str, what: str) -> ConnectionLost:
    return ConnectionLost(f"the worker on {host} {what}",
                          hint="its values were tagged with the host they came from until then; "
                               "check that host: its skyctl worker may have been modified")


def _quoted(line: bytes, most: int = 80) -> str:
    text = line.decode("utf-8", "backslashreplace")
    return repr(text) if len(text) <= most else repr(text[:most]) + "…"


_patterns: dict[str, Any] = {}


def _json_scalar_lines() -> Any:
    """Lines of one JSON number, string, true, false or null each, every one ended by "\n" (compiled once)."""
    pattern = _patterns.get("scalars")
    if pattern is None:
        import re

        number = rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
        string = rb'"[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*"'
        pattern = _patterns["scalars"] = re.compile(rb"(?:(?:" + number + rb"|" + string + rb"|true|false|null)\n)*")
    return pattern


def _json_scanner() -> Any:
    """The json module's C scanner: one JSON value from a position; NaN and Infinity refused (not JSON)."""
    scanner = _patterns.get("scanner")
    if scanner is None:
        import json
        import json.scanner

        def refuse(name: str) -> Any:
            raise ValueError(f"{name} is not JSON")

        scanner = _patterns["scanner"] = json.scanner.make_scanner(json.JSONDecoder(parse_constant=refuse))
    return scanner


def _lone_cr() -> Any:
    """A ``\\r`` not ending its line (compiled once)."""
    pattern = _patterns.get("cr")
    if pattern is None:
        import re

        pattern = _patterns["cr"] = re.compile(rb"\r(?!$)")
    return pattern


def summary_line(name: str, outcome: str, parts: Sequence[str]) -> str:
    """One host's line in the summary a many-host call ends with: ``box-1: ok, 5 values, 0.31 s``."""
    return f"{name}: " + ", ".join([outcome, *parts])


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _utf8_buffer(stream: TextIO) -> Any:
    """The binary buffer under a UTF-8 text stream (None for any other stream)."""
    import codecs

    buffer = getattr(stream, "buffer", None)
    try:
        utf8 = codecs.lookup(stream.encoding).name == "utf-8"
    except (AttributeError, LookupError, TypeError):
        return None
    return buffer if utf8 and buffer is not None and hasattr(buffer, "write") else None


# -- the terminal -------------------------------------------------------------
@dataclass
class Env:
    """The streams and environment a command runs with (tests override any of it)."""

    stdin: Any = field(default_factory=lambda: sys.stdin)
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    stderr_isatty: bool | None = None

    @property
    def stderr_is_terminal(self) -> bool:
        if self.stderr_isatty is not None:
            return self.stderr_isatty
        try:
            return self.stderr.isatty()
        except (AttributeError, ValueError):
            return False

    @property
    def live_status(self) -> bool:
        """A status line only at a terminal, never in CI."""
        return self.stderr_is_terminal and not self.environ.get("CI")

    @property
    def colour(self) -> bool:
        return self.live_status and not self.environ.get("NO_COLOR")


def error_lines(err: SkyctlError, colour: bool = False) -> str:
    """The one-line error (plus a hint line) for a failure."""
    red, dim, reset = ("\x1b[31;1m", "\x1b[2m", "\x1b[0m") if colour else ("", "", "")
    # a message may quote what a remote sent: its control characters are escaped, never sent to the terminal
    text = f"{red}error:{reset} {escape_controls(err.message)}\n"
    if err.hint:
        text += f"{dim}hint:{reset} {escape_controls(err.hint)}\n"
    return text


#: the longest line of remote output shown whole: a longer one (a stream
#: without line breaks) is cut here, with ``LINE_CUT`` after it, and goes on on
#: a line of its own; what is kept in memory per fd is never more than this
MAX_LOG_LINE = 64 << 10
LINE_CUT = b" [skyctl: line cut at 64 KiB]\n"


class Lines:
    """Remote output bytes → whole lines, per fd, in time linear in the bytes.

    ``feed`` returns what may be written now: every line ended by ``\n`` or
    ``\r`` (a progress bar), and a line that reached ``MAX_LOG_LINE`` without
    one, cut with ``LINE_CUT``. The unfinished end is kept as a list of pieces
    (never copied per frame: joining it each time cost quadratic time)."""

    def __init__(self) -> None:
        self._pieces: dict[int, list[bytes]] = {}
        self._sizes: dict[int, int] = {}

    def feed(self, fd: int, data: bytes) -> bytes:
        cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        pieces = self._pieces.setdefault(fd, [])
        out = b""
        if cut:
            pieces.append(data[:cut])
            out = b"".join(pieces)
            pieces.clear()
            self._sizes[fd] = 0
            data = data[cut:]
        while data:
            room = MAX_LOG_LINE - self._sizes.get(fd, 0)
            if len(data) < room:
                pieces.append(data)
                self._sizes[fd] = self._sizes.get(fd, 0) + len(data)
                break
            pieces.append(data[:room])
            out += b"".join(pieces) + LINE_CUT
            pieces.clear()
            self._sizes[fd] = 0
            data = data[room:]
        return out

    def rest(self) -> dict[int, bytes]:
        """The unfinished line of each fd (taken: the next ``feed`` starts afresh)."""
        rest = {fd: b"".join(pieces) for fd, pieces in sorted(self._pieces.items()) if pieces}
        self._pieces.clear()
        self._sizes.clear()
        return rest


class Stderr:
    """Everything that is not a value: remote output, warnings, errors, the status line,
    and (``progress``: ``--progress``, seconds) a plain progress line wherever no status line is shown."""

    def __init__(self, env: Env, quiet: bool = False, progress: float | None = None) -> None:
        self.env = env
        self._status: StatusLine | None = StatusLine(env) if env.live_status and not quiet else None
        self._progress_every = progress
        self._ticker: ProgressLines | None = None
        #: per remote fd, the end of its output after the last line break
        self._partial = Lines()
        #: several hosts' threads write here: whole lines, one at a time
        self._lock = threading.RLock()
        self._flushers: list[Callable[[], None]] = []

    def log(self, fd: int, data: bytes) -> None:
        """Bytes the remote function wrote to its stdout/stderr, forwarded live, line by line.

        A line (ended by \n, or \r for progress bars) is written whole, so the
        remote's stdout and stderr never interleave inside a line.
        """
        lines = self._partial.feed(fd, data)
        if lines:
            with self._lock:  # whole lines, also beside a progress line from its own thread
                self._write_log(lines)

    def log_for(self, host: str) -> Callable[[int, bytes], None]:
        """``log`` for one host of several: each line it prints prefixed ``[HOST] ``."""
        prefix = f"[{host}] ".encode()
        partial = Lines()

        def log(fd: int, data: bytes) -> None:
            text = partial.feed(fd, data)
            if text:
                lines = text.splitlines(keepends=True)
                with self._lock:
                    self._write_log(b"".join(prefix + line for line in lines))

        def flush() -> None:
            for rest in partial.rest().values():
                with self._lock:
                    self._write_log(prefix + rest + b"\n")

        self._flushers.append(flush)
        return log

    def remote_text_for(self, host: str, text: str) -> None:
        """Remote text (a traceback) from one host of several, each line under ``[HOST] ``."""
        lines = text.splitlines(keepends=True)
        self.remote_text("".join(f"[{host}] {line}" for line in lines) + ("" if text.endswith("\n") or not text else "\n"))

    def remote_text(self, text: str) -> None:
        """Text that came from the remote (a traceback): control characters escaped on a terminal."""
        self.write(escape_controls(text) if self.env.stderr_is_terminal else text)

    def _write_log(self, data: bytes) -> None:
        if self.env.stderr_is_terminal:  # remote output cannot drive the terminal
            data = escape_controls(data.decode("utf-8", "replace")).encode()
        if self._status is not None:
            self._status.print_bytes(data)
            return
        stream = self.env.stderr
        buffer = getattr(stream, "buffer", None)
        if buffer is not None:
            stream.flush()
            buffer.write(data)
            buffer.flush()
        else:
            stream.write(data.decode(errors="replace"))
            stream.flush()

    def warn(self, message: str) -> None:
        self.write(f"warning: {message}\n")

    def write(self, text: str) -> None:
        with self._lock:
            if self._status is not None:
                self._status.print_text(text)
            else:
                self.env.stderr.write(text)
                self.env.stderr.flush()

    def phase(self, phase: str) -> None:
        if self._status is not None:
            self._status.set_phase(phase)

    def watch(self, counters: Callable[[], tuple[int, int]], detail: Callable[[], str] | None = None, *,
              records: bool = False, chunks: Callable[[], int] | None = None,
              fraction: Callable[[], float | None] | None = None) -> None:
        """Show items in/out and the rate from ``counters()`` in the status line,
        then ``detail()`` (per-host progress for a group); with ``fraction()`` (the
        share of the input done, when its total is known) the percent and ETA too.

        Without a status line, ``--progress`` prints the same as a plain line every
        N seconds (``records``: the items in are stdin records; ``chunks()``: chunks done)."""
        if self._status is not None:
            self._status.counters = counters
            self._status.detail = detail
            self._status.fraction = fraction
        elif self._progress_every is not None and self._ticker is None:
            self._ticker = ProgressLines(self.write, self._progress_every, counters,
                                         records=records, chunks=chunks, fraction=fraction)

    def stop(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.stop()
        for flush in self._flushers:
            flush()
        self._flushers = []
        for rest in self._partial.rest().values():  # a last line without a line break
            self._write_log(rest + b"\n")
        if self._status is not None:
            self._status.stop()
            self._status = None

    def guard_for(self, stdout: Any) -> Callable[[], Any] | None:
        """A guard for stdout writes when stdout is the status line's terminal too."""
        try:
            shared = stdout.isatty()
        except (AttributeError, ValueError):
            shared = False
        status = self._status
        if status is None or not shared:
            return None
        return status.cleared


class StatusLine:
    """A live line on a terminal's stderr: phase, items in and out, rate."""

    def __init__(self, env: Env) -> None:
        from rich.console import Console
        from rich.live import Live

        self._console = Console(file=env.stderr, no_color=not env.colour, highlight=False)
        self.phase = "starting"
        self.counters: Callable[[], tuple[int, int]] | None = None
        self.detail: Callable[[], str] | None = None
        #: the share of the input done (0..1) when its total is known: percent and ETA
        self.fraction: Callable[[], float | None] | None = None
        self._started = time.monotonic()
        self._pending = b""
        self._live = Live(self, console=self._console, refresh_per_second=8, transient=True, redirect_stdout=False, redirect_stderr=False)
        self._live.start()

    def __rich__(self) -> Any:
        from rich.spinner import Spinner

        text = self.phase
        elapsed = max(time.monotonic() - self._started, 1e-6)
        if self.counters is not None:
            items_in, items_out = self.counters()
            parts = [f"{items_in} in"] if items_in else []
            parts.append(f"{items_out} out")
            parts.append(f"{(items_in + items_out) / elapsed:,.0f}/s")
            text += " · " + " · ".join(parts)
        done = self.fraction() if self.fraction is not None else None
        if done is not None:
            text += " · " + " · ".join(_percent_and_eta(done, elapsed))
        if self.detail is not None:
            text += " · " + self.detail()
        return Spinner("dots", text=text, style="cyan")

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        if phase == "running":
            self._started = time.monotonic()

    @contextlib.contextmanager
    def cleared(self) -> Any:
        """Erase the status line while something else writes to the terminal."""
        with self._live._lock:  # the same lock rich's refresh thread takes
            self._console.file.write("\r\x1b[2K")
            self._console.file.flush()
            yield
        self._live.refresh()

    def print_bytes(self, data: bytes) -> None:
        data = self._pending + data
        head, sep, self._pending = data.rpartition(b"\n")
        if sep:
            self.print_text(head.decode(errors="replace") + "\n")

    def print_text(self, text: str) -> None:
        self._console.print(text, end="", markup=False, highlight=False, soft_wrap=True)

    def stop(self) -> None:
        if self._pending:
            self.print_text(self._pending.decode(errors="replace") + "\n")
            self._pending = b""
        self._live.stop()


# -- progress in a log (--progress) ---------------------------------------------
#: ``--progress`` alone: seconds between progress lines
DEFAULT_PROGRESS_SECONDS = 30.0


def duration_text(seconds: float) -> str:
    """``7s``, ``3m05s``, ``2h03m``: short, for a progress line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _percent_and_eta(done: float, elapsed: float) -> list[str]:
    """``["40%", "ETA 5s"]`` from the share done so far; no ETA before anything is done."""
    done = min(max(done, 0.0), 1.0)
    parts = [f"{done * 100:.0f}%" if done < 0.995 or done == 1.0 else "99%"]
    if done > 0:
        parts.append(f"ETA {duration_text(elapsed * (1 - done) / done)}")
    return parts


def progress_line(elapsed: float, items_in: int, items_out: int, *, records: bool = False,
                  chunks: int | None = None, done: float | None = None) -> str:
    """One ``--progress`` line: ``progress: 120 records in, 240 values out, 40 records/s,
    3 chunks done, 40%, ETA 5s, 3s elapsed`` (the parts that apply)."""
    elapsed = max(elapsed, 1e-6)
    parts = [f"{items_in} records in"] if records else []
    parts.append(f"{items_out} values out")
    rate = (items_in if records else items_out) / elapsed
    parts.append(f"{rate:.0f} {'records' if records else 'values'}/s" if rate >= 10 else
                 f"{rate:.1f} {'records' if records else 'values'}/s")
    if chunks is not None:
        parts.append(f"{chunks} chunks done")
    if done is not None:
        parts.extend(_percent_and_eta(done, elapsed))
    parts.append(f"{duration_text(elapsed)} elapsed")
    return "progress: " + ", ".join(parts)


class ProgressLines:
    """A thread that writes a ``progress_line`` every ``every`` seconds, until ``stop()``.

    For logs (a CI job, ``2> run.log``): a long call is never silent there."""

    def __init__(self, write: Callable[[str], None], every: float, counters: Callable[[], tuple[int, int]], *,
                 records: bool = False, chunks: Callable[[], int] | None = None,
                 fraction: Callable[[], float | None] | None = None) -> None:
        self._write = write
        self._every = every
        self._counters = counters
        self._records = records
        self._chunks = chunks
        self._fraction = fraction
        self._started = time.monotonic()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()

    def line(self) -> str:
        items_in, items_out = self._counters()
        return progress_line(time.monotonic() - self._started, items_in, items_out, records=self._records,
                             chunks=self._chunks() if self._chunks is not None else None,
                             done=self._fraction() if self._fraction is not None else None)

    def _run(self) -> None:
        while not self._stopped.wait(self._every):
            try:
                text = self.line()
            except Exception:  # noqa: BLE001 - a counter read mid-change: skip this tick
                continue
            if not self._stopped.is_set():
                self._write(text + "\n")

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)


def file_fraction(stream: Any) -> Callable[[], float | None] | None:
    """For a regular-file stdin: the share of it read so far (its offset of its size);
    None for a pipe, a terminal, or an empty file (the total is not known)."""
    import stat

    try:
        fd = stream.fileno()
        info = os.fstat(fd)
        start = os.lseek(fd, 0, os.SEEK_CUR)
    except (AttributeError, OSError, ValueError):
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_size <= start:
        return None
    size = info.st_size - start

    def fraction() -> float | None:
        try:
            return min(max(os.lseek(fd, 0, os.SEEK_CUR) - start, 0) / size, 1.0)
        except OSError:
            return None

    return fraction
