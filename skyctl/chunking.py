"""How many records each chunk of a distributed pipe gets (``--chunk``).

A sizer is asked for a chunk's size when a worker takes the chunk, so the
size can depend on that worker's host; it is told each chunk's records and
seconds once the chunk has run. The ``Distributor`` (``skyctl/many/distributor.py``) does
the cutting; a sizer only does arithmetic, so it is tested without hosts:

- ``FixedChunks(n)``: ``--chunk N``, every chunk ``n`` records.
- ``AutoChunks()``: ``--chunk auto`` (the default). Each host starts with
  small chunks (a slow function is measured before it holds many records),
  then each chunk is sized to about ``target`` seconds of work from the
  host's last finished chunk (longer where a chunk's own cost is high: at
  least ``per_latency`` times the seconds its last chunk took to send a first
  value back, up to ``longest``), growing at most ``growth``× a step, and never
  past ``largest`` records or ``largest_bytes`` of them. Once the input is
  known to end (stdin at EOF), no chunk takes more than its share of what is
  left (``remaining / (2 × live workers)``, but at least ``tail`` seconds of
  work), so that no worker finishes long after the others.
- ``RecordedChunks(sizes, then)``: the sizes a run recorded, chunk by chunk
  (a resume follows the same boundaries), then ``then`` for the chunks after.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence

#: what ``--chunk`` and ``pool.map(chunk=)`` take by default
DEFAULT = "auto"

#: records (stdin lines, ``pool.map`` items) per chunk with a job log when no number is given: the log
#: names each chunk by a fixed range that a resume must cut again, so ``auto`` cannot size them
JOBLOG_CHUNK = 1000


class ChunkSizer(Protocol):
    """Decides chunk sizes; called under the distributor's lock, from any thread."""

    def size(self, host: str, number: int, *, live: int = 1, remaining: int | None = None,
             record_bytes: float | None = None) -> int:
        """Records for chunk ``number``, about to be cut for a worker of ``host``.

        ``live``: workers still running; ``remaining``: records left to cut once the
        input is known to end (None while more may come); ``record_bytes``: the
        input's bytes per record so far, when known (caps a chunk's memory)."""
        ...

    def finished(self, host: str, records: int, seconds: float, latency: float = 0.0) -> None:
        """A chunk of ``records`` ran to its end on ``host`` in ``seconds`` (its first run), its first
        value back ``latency`` seconds after its call started."""
        ...


@dataclass
class FixedChunks:
    """``--chunk N``: every chunk the same size, whoever runs it and however long it takes."""

    records: int

    def __post_init__(self) -> None:
        self.records = max(1, int(self.records))

    def size(self, host: str, number: int, *, live: int = 1, remaining: int | None = None,
             record_bytes: float | None = None) -> int:
        return self.records

    def finished(self, host: str, records: int, seconds: float, latency: float = 0.0) -> None:
        pass


@dataclass
class _HostRate:
    """What a host's finished chunks showed: its records per second, and its largest chunk."""

    rate: float
    largest: int
    #: seconds from its last chunk's call to the chunk's first value
    latency: float = 0.0


@dataclass
class AutoChunks:
    """``--chunk auto``: per host, chunks of about ``target`` seconds (see the module docstring).

    Args:
        target: seconds of work a chunk aims at once its host's rate is known.
        per_latency: a chunk also aims at this many times its host's latency (the seconds from a
            chunk's call to its first value: the round trips and set-up every chunk pays), so that
            what a chunk costs stays about 1/``per_latency`` of its time on a slow link or a busy
            machine; 0: ``target`` alone.
        longest: the most seconds ``per_latency`` makes a chunk aim at.
        first: records in each host's chunks until one of them has finished.
        growth: a chunk is at most this many times its host's largest finished one. The first
            chunks' times are mostly the call's own cost, so their rate undersells a fast host.
        largest: records a chunk never exceeds (the records it holds are kept until it is done).
        largest_bytes: memory a chunk's records may take (``record_bytes`` each) before it is full.
        tail: at the end of the input, a chunk still gets at least this many seconds of work
            (each chunk costs a round trip; splitting the tail finer buys nothing).
    """

    target: float = 0.5
    first: int = 100
    growth: float = 8.0
    largest: int = 250_000
    largest_bytes: int = 32 * 1024 * 1024
    tail: float = 0.0625
    per_latency: float = 20.0
    longest: float = 4.0
    _hosts: dict[str, _HostRate] = field(default_factory=dict, repr=False)

    def size(self, host: str, number: int, *, live: int = 1, remaining: int | None = None,
             record_bytes: float | None = None) -> int:
        cap = self.largest
        if record_bytes is not None:
            cap = min(cap, max(1, int(self.largest_bytes / max(record_bytes, 1.0))))
        known = self._hosts.get(host)
        if known is None:
            size = min(self.first, cap)
            floor = 1  # not measured yet: nothing says how small a chunk is too small
        else:
            aim = max(self.target, min(self.longest, self.per_latency * known.latency))
            size = max(1, min(int(known.rate * aim), int(known.largest * self.growth), cap))
            floor = max(1, min(int(known.rate * self.tail), cap))
        if remaining is not None and live > 1:  # the input ends: no more than a share of what is left
            share = math.ceil(remaining / (2 * max(1, live)))
            size = min(size, max(share, floor))
        return max(1, size)

    def finished(self, host: str, records: int, seconds: float, latency: float = 0.0) -> None:
        if records <= 0:
            return
        rate = records / max(seconds, 1e-4)
        known = self._hosts.get(host)
        largest = max(records, known.largest) if known is not None else records
        self._hosts[host] = _HostRate(rate, largest, max(0.0, latency))


@dataclass
class RecordedChunks:
    """The chunk sizes of an earlier run, in order (a resume cuts the same chunks); ``then`` after them."""

    sizes: Sequence[int]
    then: ChunkSizer = field(default_factory=AutoChunks)

    def size(self, host: str, number: int, *, live: int = 1, remaining: int | None = None,
             record_bytes: float | None = None) -> int:
        if number < len(self.sizes):
            return max(1, int(self.sizes[number]))
        return self.then.size(host, number, live=live, remaining=remaining, record_bytes=record_bytes)

    def finished(self, host: str, records: int, seconds: float, latency: float = 0.0) -> None:
        self.then.finished(host, records, seconds, latency)


def sizer_for(chunk: int | str | ChunkSizer, environ: Mapping[str, str] | None = None) -> ChunkSizer:
    """The sizer ``--chunk`` / ``pool.map(chunk=)`` asks for: ``"auto"``, a record count, or a sizer.

    ``auto``'s seconds per chunk are ``SKYCTL_CHUNK_SECONDS`` when set (``environ``: default ``os.environ``):
    then exactly those, not more for a high latency."""
    if isinstance(chunk, str):
        text = chunk.strip().lower()
        if text == "auto":
            env = os.environ if environ is None else environ
            if env.get("SKYCTL_CHUNK_SECONDS", "").strip():
                return AutoChunks(target=target_seconds(env), per_latency=0.0)
            return AutoChunks()
        try:
            chunk = int(text)
        except ValueError:
            raise ValueError(f"--chunk takes 'auto' or a number of records, not {chunk!r}") from None
    if isinstance(chunk, bool):
        raise ValueError(f"chunk takes 'auto' or a number of records, not {chunk!r}")
    if isinstance(chunk, int):
        if chunk < 1:
            raise ValueError(f"a chunk holds at least 1 record, not {chunk}")
        return FixedChunks(chunk)
    return chunk


def joblog_chunk(chunk: int | str | None) -> int:
    """The fixed chunk size of a run with a job log: ``chunk`` as a number, ``JOBLOG_CHUNK`` for None
    (no ``--chunk``). ``auto`` is refused (ValueError): the log's chunks are fixed ranges, and a run
    that asked for adaptive sizes should learn that it does not get them."""
    if chunk is None:
        return JOBLOG_CHUNK
    if isinstance(chunk, str) and chunk.strip().lower() == "auto":
        raise ValueError("--chunk auto cannot be used with --joblog: the job log's chunks are fixed line ranges")
    sizer = sizer_for(chunk)
    if not isinstance(sizer, FixedChunks):
        raise ValueError(f"a job log's chunks take a number of records, not {chunk!r}")
    return sizer.records


def target_seconds(environ: Mapping[str, str]) -> float:
    """``SKYCTL_CHUNK_SECONDS``: the seconds of work ``auto`` aims at per chunk (default 0.5)."""
    text = environ.get("SKYCTL_CHUNK_SECONDS", "").strip()
    if not text:
        return AutoChunks.target
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or math.isinf(seconds):
        raise ValueError(f"SKYCTL_CHUNK_SECONDS takes a number of seconds above 0, not {text!r}")
    return seconds


def pipelining(environ: Mapping[str, str] | None = None) -> bool:
    """Whether each slot starts the next chunk's call on its worker while the current one runs
    (``Distributor(pipeline=)``); ``SKYCTL_PIPELINE=0`` turns it off (one call at a time per worker)."""
    text = (os.environ if environ is None else environ).get("SKYCTL_PIPELINE", "").strip().lower()
    return text not in ("0", "no", "off", "false")
