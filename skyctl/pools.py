"""The Python API for many hosts: ``skyctl.pool(...)``, ``call >> pool``, ``call @ pool``, ``pool.map``.

A ``Pool`` holds one ``api.Host`` per worker (hosts × workers); the scheduling
is ``skyctl.many``'s (broadcast, and the chunked, re-run-safe distribution).
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .api import Host, RemoteIterator, log_to_stderr, start_call
from .errors import RemoteError, RemoteTraceback, SkyctlError
from .errors import GroupError, Interrupted
from .many.broadcast import broadcast
from .many.chunks import Result, Slot, slots_for
from .many.distributor import Distributor
from .many.stats import HostStats
from .session import Hooks

_DONE = object()

#: where ``pool.map`` reports a re-run chunk or a stalled one (WARNING), naming the host and the chunk
log = logging.getLogger("skyctl")


class Pool:
    """Several hosts (a group, a list of names, or ``"a,b"``), each with ``workers`` worker processes.

    Used as a context manager it keeps every worker for the calls inside the block.

    Args:
        names: a group name, a host name, ``"a,b"``, or a list of names.
        config: path of a ``skyward.yaml``; None → the usual lookup.
        workers: worker processes per host for ``map`` and ``>>`` (default: the group's ``workers:``).
        timeout, idle_timeout: each call's time limits (per host of a broadcast, per chunk attempt
            of ``map``), as ``skyctl.host(timeout=)``; a call past one raises ``skyctl.TimedOut``
            (``map``: the chunk runs again under ``retries``).
    """

    def __init__(self, names: str | Iterable[str] | None = None, config: str | Path | None = None,
                 workers: int | None = None, *, hooks: Hooks | None = None, timeout: float | str | None = None,
                 idle_timeout: float | str | None = None) -> None:
        self._limits = dict(timeout=timeout, idle_timeout=idle_timeout)
        self._names = names if names is None or isinstance(names, str) else ",".join(names)
        self._config_path = config
        self._workers = workers
        self._hooks = hooks
        self._target: Any = None
        self._slots: list[Slot] = []
        self._busy: dict[int, int] = {}
        self._lock = threading.Lock()
        self._keep = False
        #: per host, what the last ``map`` or ``call @ pool`` did (the CLI's summary counts;
        #: live while a ``map`` runs); empty before the first
        self.stats: dict[str, HostStats] = {}

    @property
    def target(self) -> Any:
        """The resolved ``config.Target`` (reads the config on first use)."""
        if self._target is None:
            from .config import load_config

            self._target = load_config(self._config_path).resolve(self._names)
        return self._target

    @property
    def hosts(self) -> list[str]:
        """The host names, in group order."""
        return [p.name for p in self.target.profiles]

    @property
    def workers(self) -> int:
        return self._workers or self.target.workers

    def __repr__(self) -> str:
        return f"<Pool {self._names or '(default)'}>"

    def __enter__(self) -> Pool:
        self._keep = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every worker held. Safe to call twice."""
        slots, self._slots = self._slots, []
        for slot in slots:
            slot.host.close()

    def _host(self, name: str) -> Host:
        hooks = self._hooks or Hooks(log=_prefixed_log(name))
        return Host(name, self._config_path, hooks=hooks, **self._limits)

    def _all_slots(self) -> list[Slot]:
        if not self._slots:
            self._slots = [Slot(self._host(p.name), p.name, i) for p in self.target.profiles
                           for i in range(slots_for(p, self._workers, self.target.workers))]
        return self._slots

    # -- call >> pool: one call on the least busy worker ------------------------
    def run(self, call: Any) -> Any:
        slots = self._all_slots()
        with self._lock:
            slot = min(slots, key=lambda s: self._busy.get(id(s), 0))
            busy = self._busy.get(id(slot), 0)
            self._busy[id(slot)] = busy + 1
        host = slot.host if busy == 0 else self._host(slot.name)  # every worker busy: one more
        host.keep_worker = self._keep and busy == 0

        def done() -> None:
            with self._lock:
                self._busy[id(slot)] -= 1
            if not host.keep_worker:
                host.close()

        try:
            stream = host.start(call.function, call.args, call.kwargs)
        except BaseException:
            done()
            raise
        if inspect.isgeneratorfunction(inspect.unwrap(call.function)):
            return RemoteIterator(stream, on_end=done)
        with RemoteIterator(stream, on_end=done) as results:
            for _ in results:
                pass
        return stream.result

    # -- call @ pool: the call on every host ------------------------------------
    def broadcast(self, call: Any) -> Any:
        """A plain function: its results in group order (``GroupError`` if any
        host failed); a generator: ``(host, value)`` pairs as they arrive."""
        hosts = [self._host(name) for name in self.hosts]
        start = lambda host: host.start(call.function, call.args, call.kwargs)  # noqa: E731
        if inspect.isgeneratorfunction(inspect.unwrap(call.function)):
            iterator = _BroadcastIterator(hosts, start)
            self.stats = iterator._stats
            return iterator
        results: dict[str, Any] = {}

        def emit(name: str, batch: Any) -> None:
            if type(batch) is Result:
                results[name] = batch.value

        stats = self.stats = {}
        broadcast(hosts, start, emit, stats=stats)
        outcome = {name: (_rebuilt(s.error) if s.error is not None else results.get(name)) for name, s in stats.items()}
        failed = [name for name, s in stats.items() if s.error is not None]
        if failed:
            raise GroupError(f"the call failed on {len(failed)} of {len(stats)} hosts: {', '.join(failed)}", outcome,
                             hint="GroupError.results has every host's value or exception")
        return [outcome[name] for name in stats]

    # -- pool.map: an iterable through fn's Iterator[T] parameter, in chunks -----
    def map(self, fn: Callable[..., Any], iterable: Iterable[Any], *, chunk: int | str = "auto", ordered: bool = False,
            retries: int = 3, joblog: str | Path | None = None, resume: bool = False, resume_failed: bool = False,
            timeout: float | str | None = None, idle_timeout: float | str | None = None, **kwargs: Any) -> Iterator[Any]:
        """The values of ``fn`` over ``iterable``, fed to its ``Iterator[T]``
        parameter a chunk at a time, each chunk one call on a free worker
        (re-run elsewhere if its host dies; every value given once).
        ``chunk``: ``"auto"`` (sized per host to about half a second of work,
        see ``skyctl.chunking``) or a number of records (with ``joblog``, a
        number; ``"auto"`` there means 1000, the log's chunks being fixed).

        A re-run (and a chunk that stalls the end of the run) is logged as a
        WARNING on the ``skyctl`` logger, naming the host and the chunk;
        ``pool.stats`` has the per-host counts (live, then final).


        ``joblog``: a job log as ``pipe --joblog`` writes (a chunk's values are
        given once it has ended, and it is logged ``ok`` once you took them);
        ``resume``/``resume_failed``: as ``pipe --resume``/``--resume-failed``,
        the chunks the log has as done are checked (sha256 of the items'
        pickles) and skipped. ``timeout``/``idle_timeout``: each chunk attempt's limits (a chunk
        that times out runs again, at most ``retries`` times; then ``skyctl.TimedOut``)."""
        from .chunking import JOBLOG_CHUNK, joblog_chunk
        from .coerce import stream_parameters

        fn = getattr(fn, "__skyctl_function__", fn)
        params = list(stream_parameters(fn))
        if len(params) != 1:
            raise SkyctlError(f"{getattr(fn, '__name__', fn)}() needs exactly one Iterator[T] parameter for map(), "
                              f"has {len(params) or 'none'}")
        name = params[0]
        slots = [Slot(self._host(p.name), p.name, i) for p in self.target.profiles
                 for i in range(slots_for(p, self._workers, self.target.workers))]
        out: queue.Queue[Any] = queue.Queue(maxsize=8)

        def emit(chunk: Any, host: str, batch: Any) -> None:
            out.put([batch.value] if type(batch) is Result else batch)

        def start(slot: Slot, feed: Any, skip: int) -> Any:
            return start_call(slot.host, fn, (), {**kwargs, name: feed}, stream=name, skip=skip, timeout=timeout,
                              idle_timeout=idle_timeout, queue=True)

        if joblog is not None:
            from .joblog import map_logged

            try:  # the log's chunks are fixed item ranges: the default ``auto`` means JOBLOG_CHUNK there
                size = JOBLOG_CHUNK if chunk == "auto" else joblog_chunk(chunk)
            except ValueError as exc:
                raise SkyctlError(f"pool.map(joblog=...): {exc}", hint="pass chunk=N, a number of items") from None
            yield from map_logged(slots, start, iterable, Path(joblog), fn=fn, chunk=size, ordered=ordered,
                                  retries=retries, resume=resume or resume_failed, resume_failed=resume_failed,
                                  rebuild=_rebuilt)
            return
        if resume or resume_failed:
            raise SkyctlError("pool.map(resume=True) needs joblog=FILE", hint="pass the job log of the run to resume")
        it = iter(iterable)
        source = iter(lambda: list(islice(it, 64)), [])
        distributor = Distributor(slots, start, source, emit, chunk=chunk, retries=retries, ordered=ordered,
                                  warn=log.warning)
        self.stats = distributor.stats

        def drive() -> None:
            try:
                distributor.run()
            finally:
                out.put(_DONE)

        threading.Thread(target=drive, name="skyctl-pool-map", daemon=True).start()
        try:
            while (batch := out.get()) is not _DONE:
                yield from batch
        except GeneratorExit:  # the caller stopped early: cancel every chunk (their finally runs)
            distributor.abort(Interrupted())
            while out.get() is not _DONE:
                pass
            raise
        if distributor.error is not None:
            raise _rebuilt(distributor.error)


class _BroadcastIterator:
    """``(host, value)`` pairs of a generator broadcast, as they arrive; ``GroupError`` at the end if a host failed."""

    def __init__(self, hosts: list[Host], start: Callable[[Host], Any]) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=64)
        self._stop = threading.Event()
        self._stats: dict[str, Any] = {}

        def emit(name: str, batch: Any) -> None:
            for value in ([batch.value] if type(batch) is Result else batch):
                self._queue.put((name, value))

        def drive() -> None:
            try:
                broadcast(hosts, start, emit, stats=self._stats, stop=self._stop)
            finally:
                self._queue.put(_DONE)

        threading.Thread(target=drive, name="skyctl-pool-broadcast", daemon=True).start()
        self._done = False

    def __iter__(self) -> _BroadcastIterator:
        return self

    def __next__(self) -> tuple[str, Any]:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if item is _DONE:
            self._done = True
            failed = {name: s for name, s in self._stats.items() if s.error is not None}
            if failed:
                outcome = {name: _rebuilt(s.error) if s.error is not None else None for name, s in self._stats.items()}
                raise GroupError(f"the call failed on {len(failed)} of {len(self._stats)} hosts: {', '.join(failed)}",
                                 outcome)
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop every host's generator (their ``finally`` runs)."""
        self._stop.set()
        while not self._done:
            if self._queue.get() is _DONE:
                self._done = True

    def __enter__(self) -> _BroadcastIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rebuilt(error: BaseException) -> BaseException:
    """A remote exception as its own type when it was rebuilt (as ``call >> host`` raises it)."""
    if isinstance(error, RemoteError) and error.exception is not None:
        error.exception.__cause__ = RemoteTraceback(error.traceback_text)
        return error.exception
    return error


def _prefixed_log(name: str) -> Callable[[int, bytes], None]:
    """What one host prints, to stderr a whole line at a time, each under ``[HOST] ``."""
    prefix = f"[{name}] ".encode()
    partial: dict[int, bytes] = {}

    def log(fd: int, data: bytes) -> None:
        data = partial.pop(fd, b"") + data
        cut = data.rfind(b"\n") + 1
        if cut < len(data):
            partial[fd] = data[cut:]
        if cut:
            log_to_stderr(fd, b"".join(prefix + line for line in data[:cut].splitlines(keepends=True)))

    return log


def pool(names: str | Iterable[str] | None = None, config: str | Path | None = None, workers: int | None = None, *,
         timeout: float | str | None = None, idle_timeout: float | str | None = None) -> Pool:
    """A pool of hosts: a group name, ``"a,b"``, or a list of host names; ``timeout``/``idle_timeout``
    as for ``Pool``."""
    return Pool(names, config, workers, timeout=timeout, idle_timeout=idle_timeout)


__all__ = ["GroupError", "Pool", "pool"]
